"""The launch policy every Triton launcher shares: device and stream, grid size, configs, compile signatures.

- ``launch`` runs a kernel under its tensors' device (``on_device``), so a batch on ``cuda:1`` runs on
  ``cuda:1`` and on that device's current stream (Triton launches on the *current* device and stream),
  with keyword arguments only.
- ``persistent_programs`` sizes a persistent grid from the compiled kernel: the blocks that can be
  resident on one SM (``resident_blocks``: registers, shared memory and warps against the SM's limits)
  times the SM count, so no program waits for a second wave.
- The configs are frozen dataclasses (``FastConfig``, ``LossConfig``); the shipped instances live
  beside their kernels.
- ``compile_source`` builds a compile signature from the kernel's own parameter list
  (``JITFunction.arg_names`` and its constexpr flags) and the values a launcher passes, generic or with
  the specialisations Triton makes at run time (16-byte aligned pointers, ints divisible by 16, ints
  equal to 1 as constants), so each kernel signature is written once, at its def.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping

import torch

# Fewer programs than tiles under the interpreter, so CI exercises the persistent loop.
INTERPRETER_PROGRAMS = 3


# --- device and stream ------------------------------------------------------------------------------

@contextlib.contextmanager
def on_device(tensor: torch.Tensor) -> Iterator[None]:
    """Make ``tensor``'s CUDA device current (and with it that device's current stream) for a launch."""
    if tensor.device.type == "cuda":
        with torch.cuda.device(tensor.device):
            yield
    else:
        yield


# Builds with INT64_STRIDES hold row and column offsets in register pairs: where a config caps the registers
# (``maxnreg``), the cap rises by this much (FAST on gray, sm_90a generic build: 8 bytes spilled at 96).
INT64_EXTRA_REGISTERS = 16


def register_cap(maxnreg: int | None, args: Mapping[str, object]) -> int | None:
    """A config's ``maxnreg`` for a launch with ``args`` (raised for INT64_STRIDES builds)."""
    return maxnreg + INT64_EXTRA_REGISTERS if maxnreg and args.get("INT64_STRIDES") else maxnreg


def _options(num_warps: int, maxnreg: int | None, args: Mapping[str, object]) -> dict:
    """Compile options of every launch: FMA contraction off (bit-exact un-normalisation), and ``.maxnreg``
    where a config sets it (see ``FastConfig.maxnreg``; ``register_cap``)."""
    maxnreg = register_cap(maxnreg, args)
    return dict(num_warps=num_warps, enable_fp_fusion=False, **({"maxnreg": maxnreg} if maxnreg else {}))


def launch(kernel, grid: tuple[int, ...], like: torch.Tensor, num_warps: int, args: Mapping[str, object],
           maxnreg: int | None = None):
    """``kernel[grid](**args)`` on ``like``'s device with ``_options``."""
    with on_device(like):
        return kernel[grid](**args, **_options(num_warps, maxnreg, args))


# --- occupancy --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SMProperties:
    """What limits the blocks resident on one SM (CUDA occupancy calculator's rules, sm_80 and later)."""

    multi_processor_count: int
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    shared_per_sm: int = 228 * 1024
    shared_reserved_per_block: int = 1024  # the runtime's per-block reservation (sm_80+)
    reg_alloc_unit: int = 256  # registers are allocated per warp in units of 256
    warp_alloc_granularity: int = 4

    @classmethod
    def of(cls, device: torch.device) -> SMProperties:
        p = torch.cuda.get_device_properties(device)
        return cls(
            multi_processor_count=p.multi_processor_count,
            regs_per_sm=getattr(p, "regs_per_multiprocessor", 65536),
            max_threads_per_sm=getattr(p, "max_threads_per_multi_processor", 2048),
            max_blocks_per_sm=MAX_BLOCKS_PER_SM.get((p.major, p.minor), 16),
            shared_per_sm=getattr(p, "shared_memory_per_multiprocessor", 100 * 1024),
        )


# Not in cudaDeviceProp: CUDA C++ Programming Guide, "Compute capabilities" table. Unknown: 16 (the smallest).
MAX_BLOCKS_PER_SM = {(8, 0): 32, (8, 6): 16, (8, 7): 16, (8, 9): 24, (9, 0): 32, (10, 0): 32, (12, 0): 32}

# Datasheet figures (CUDA Programming Guide tables and NVIDIA's architecture whitepapers), for tests and the model.
H100_SXM = SMProperties(132, shared_per_sm=228 * 1024)
A100 = SMProperties(108, shared_per_sm=164 * 1024)
L4 = SMProperties(58, max_threads_per_sm=1536, max_blocks_per_sm=24, shared_per_sm=100 * 1024)


def resident_blocks(n_regs: int, shared_bytes: int, num_warps: int, sm: SMProperties) -> int:
    """Blocks of a kernel that fit on one SM at once: the least of the register, thread, block and
    shared-memory limits. 0 when one block does not fit."""
    regs_per_warp = math.ceil(max(n_regs, 1) * 32 / sm.reg_alloc_unit) * sm.reg_alloc_unit
    warps_by_regs = sm.regs_per_sm // regs_per_warp // sm.warp_alloc_granularity * sm.warp_alloc_granularity
    limits = [warps_by_regs // num_warps, sm.max_threads_per_sm // (32 * num_warps), sm.max_blocks_per_sm]
    limits.append(sm.shared_per_sm // (shared_bytes + sm.shared_reserved_per_block))
    return max(0, min(limits))


# Programs of a persistent grid per (kernel, device, specialisation): warmup() runs Triton's whole binder
# (signature, specialisation, cache lookup), so it runs once per key, not at every launch.
_PROGRAMS: dict[tuple, int] = {}


def specialisation(kernel, args: Mapping[str, object]) -> tuple:
    """What Triton compiles a kernel for, from a launch's arguments: the constexpr values, each tensor's dtype
    and 16-byte alignment, each int's 1-ness, divisibility by 16 and width (i32/i64), each float's and bool's
    type. Two launches with equal keys run the same compiled kernel (a finer key than Triton's is harmless: a
    second warmup; a coarser one would size a grid for the wrong kernel)."""
    key = []
    for name, param in zip(kernel.arg_names, kernel.params):
        value = args[name]
        if param.is_constexpr:
            key.append(value)
        elif hasattr(value, "data_ptr"):  # a pointer, as Triton's binder tells them
            key.append((value.dtype, value.data_ptr() % 16 == 0))
        elif isinstance(value, bool) or not isinstance(value, int):
            key.append(type(value))
        else:
            key.append((value == 1, value % 16 == 0, -(2**31) <= value < 2**31))
    return tuple(key)


def persistent_programs(kernel, like: torch.Tensor, n_tiles: int, num_warps: int, args: Mapping[str, object],
                        maxnreg: int | None = None) -> int:
    """Programs of a persistent grid over ``n_tiles``: as many as are resident at once on the GPU (SMs x the
    compiled kernel's resident blocks, compiled here if need be, cached per kernel, device and
    specialisation), ``INTERPRETER_PROGRAMS`` on the CPU."""
    if like.device.type != "cuda":
        return max(1, min(n_tiles, INTERPRETER_PROGRAMS))
    index = like.device.index if like.device.index is not None else torch.cuda.current_device()
    key = (kernel, index, num_warps, maxnreg, specialisation(kernel, args))
    if key not in _PROGRAMS:
        with on_device(like):
            compiled = kernel.warmup(**args, grid=(1,), **_options(num_warps, maxnreg, args))
            compiled._init_handles()  # loads the cubin: n_regs comes from the driver
            sm = SMProperties.of(like.device)
            blocks = resident_blocks(compiled.n_regs, compiled.metadata.shared, num_warps, sm)
            _PROGRAMS[key] = sm.multi_processor_count * max(blocks, 1)
    return max(1, min(n_tiles, _PROGRAMS[key]))


# --- configs ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FastConfig:
    """FAST kernel blocks: ROWS x BLOCK_W pixels a tile stages (halo included), scored SUB_H rows at a time
    and suppressed NMS_H rows at a time."""

    ROWS: int
    BLOCK_W: int
    SUB_H: int
    num_warps: int = 4
    NMS_H: int | None = None  # rows per step of the NMS pass (default SUB_H)
    # PTX .maxnreg. Without it ptxas (12.8 with Triton 3.6, 12.9 with 3.8) for sm_90a picks a register
    # target from the block size (.reqntid) and spills to meet it: 40-64 registers and 8-100 bytes of
    # spills in these kernels, which need 60-170; with any .maxnreg it allocates what the code needs.
    maxnreg: int | None = None


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Fused loss tiles: BLOCK_W staged columns; rows per step of the FAST stages (SUB_H), of the pass that
    reads pred and target (READ_H) and of the final pass (FINAL_H); about OUT_ROWS output rows per tile."""

    BLOCK_W: int
    SUB_H: int
    READ_H: int
    FINAL_H: int
    OUT_ROWS: int
    num_warps: int = 4
    maxnreg: int | None = None  # as FastConfig.maxnreg


def int64_strides(*extents: tuple[int, int], margin: int = 16) -> bool:
    """The ``INT64_STRIDES`` constexpr of a launch: whether a coordinate (up to a size plus ``margin``: halos,
    FAST's circle rows) times its stride can pass int32, for each (size, stride) of ``extents``. The kernels then
    form those offsets in int64. Only such views pay for it: in every kernel compiled with 64-bit strides the
    row and column offsets take registers in pairs (FAST on gray, sm_90a: 80 -> 92 registers, 6 -> 5 resident
    blocks, and spills in the generic build), and the batch offsets are int64 in every build anyway."""
    return any(abs(stride) * (size + margin) >= 2**31 for size, stride in extents)


def pick(x: torch.Tensor, config, gpu, interpreter):
    """The caller's config, else the shipped one for ``x``'s device (CUDA: ``gpu``; CPU: ``interpreter``)."""
    return config if config is not None else gpu if x.is_cuda else interpreter


# --- compile signatures -----------------------------------------------------------------------------

TRITON_TYPES = {
    torch.uint8: "u8", torch.int8: "i8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1",
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
}


def _scalar_type(value) -> str:
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for {type(value).__name__}")


def compile_source(kernel, args: Mapping[str, object], specialise: bool):
    """(signature, constexprs, attrs) for ``triton.compiler.ASTSource`` from a launcher's arguments.

    ``specialise``: as Triton compiles at run time for aligned tensors: pointers and ints divisible by
    16 marked so (``tt.divisibility``), ints equal to 1 made constants. Else the generic kernel.
    """
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(kernel.arg_names, kernel.params)):
        value = args[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + TRITON_TYPES[value.dtype]
            if specialise:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif specialise and isinstance(value, int) and not isinstance(value, bool) and value == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = _scalar_type(value)
            if specialise and isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    missing = set(args) - set(kernel.arg_names)
    assert not missing, f"{kernel.__name__}: unknown arguments {sorted(missing)}"
    return signature, constexprs, attrs
