// A guarded CPU allocator for the tests (tests/guarded.py builds and loads it with ctypes): while installed,
// every CPU tensor PyTorch allocates (at::empty in the C++ kernels, torch.empty in the Triton launchers, the
// references' outputs and scratch) is carved from a larger block whose guard bands, before and after it, hold
// a sentinel. The data ends exactly where the rear band begins, so one element written past the end (or
// before the start) of any allocation changes the band. The data itself is filled with 0xFF bytes (NaN for
// floats, 255 for uint8, -1 for ints), so an output element that a kernel forgets to write shows in a value
// comparison instead of reading as the zeros of fresh pages.
//
// The bands are checked when a block is freed and, for the blocks still alive, on demand
// (guard_check_live); each damaged band is counted and its first damaged byte reported.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

namespace {

constexpr size_t kBand = 256;  // bytes of sentinel on each side
constexpr size_t kAlign = 64;  // c10's alignment of CPU data

struct Block {
  char* base;    // what malloc returned
  char* data;    // what the tensor sees: base + front
  size_t front;  // bytes before data (>= kBand, data aligned)
  size_t n;      // bytes of data
  bool seen;     // its damage is counted already
};

unsigned char sentinel(size_t i) { return static_cast<unsigned char>(0xA5 ^ (i * 0x3B)); }

std::mutex mu;
std::unordered_map<void*, Block*> live;  // by data pointer: the DataPtr's context is its data (raw_allocate
                                          // and oneDNN need a simple DataPtr)
std::atomic<long> damaged{0};
std::atomic<long> allocations{0};
std::string report;  // the first damage seen since the last reset

// Whether a band of a changed; if so, *where is the first changed byte's offset from the data (negative: before it).
bool first_damage(const Block* a, long* where) {
  for (size_t i = 0; i < a->front; ++i)
    if (static_cast<unsigned char>(a->base[i]) != sentinel(i)) {
      *where = static_cast<long>(i) - static_cast<long>(a->front);
      return true;
    }
  const char* rear = a->data + a->n;
  for (size_t i = 0; i < kBand; ++i)
    if (static_cast<unsigned char>(rear[i]) != sentinel(a->front + a->n + i)) {
      *where = static_cast<long>(a->n + i);
      return true;
    }
  return false;
}

void note(Block* a, const char* when) {  // mu held
  long where = 0;
  if (a->seen || !first_damage(a, &where)) return;
  a->seen = true;
  damaged.fetch_add(1);
  if (report.empty()) {
    char line[200];
    std::snprintf(line, sizeof line, "a block of %zu bytes: byte %ld (relative to its start) changed, seen %s", a->n,
                  where, when);
    report = line;
  }
}

void release(void* data) {
  Block* a;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = live.find(data);
    if (it == live.end()) std::abort();  // not ours: cannot happen
    a = it->second;
    note(a, "when freed");
    live.erase(it);
  }
  std::free(a->base);
  delete a;
}

struct GuardedAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    auto* a = new Block;
    a->n = n;
    a->seen = false;
    // data = base + front is 64-byte aligned as base is; the rear band follows the data at once (n need not
    // be a multiple of 64)
    a->front = (kBand + kAlign - 1) / kAlign * kAlign;
    const size_t total = a->front + n + kBand;
    void* base = nullptr;
    if (posix_memalign(&base, kAlign, total) != 0) throw std::bad_alloc();
    a->base = static_cast<char*>(base);
    a->data = a->base + a->front;
    for (size_t i = 0; i < a->front; ++i) a->base[i] = static_cast<char>(sentinel(i));
    std::memset(a->data, 0xFF, n);
    for (size_t i = 0; i < kBand; ++i) a->data[n + i] = static_cast<char>(sentinel(a->front + n + i));
    {
      std::lock_guard<std::mutex> lock(mu);
      live.emplace(a->data, a);
    }
    allocations.fetch_add(1);
    return {a->data, a->data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

GuardedAllocator guarded;

}  // namespace

extern "C" {

// Every CPU allocation from now on is guarded (the blocks allocated before keep their own allocator).
void guard_install() { c10::SetCPUAllocator(&guarded, /*priority=*/0); }

// Back to c10's default CPU allocator; guarded blocks still alive are checked and freed as they die.
void guard_uninstall() { c10::SetCPUAllocator(c10::GetDefaultCPUAllocator(), /*priority=*/0); }

int guard_installed() { return c10::GetCPUAllocator() == &guarded; }

// Checks the bands of every guarded block still alive; returns the number of damaged bands seen so far.
long guard_check_live() {
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [data, a] : live) note(a, "while alive");
  return damaged.load();
}

long guard_damaged() { return damaged.load(); }
long guard_allocations() { return allocations.load(); }

void guard_reset() {
  std::lock_guard<std::mutex> lock(mu);
  damaged.store(0);
  allocations.store(0);
  report.clear();
}

// The first damage seen since the last reset, as text (empty if none).
const char* guard_report() { return report.c_str(); }
}
