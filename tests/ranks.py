"""Gloo ranks as child processes, for the DDP tests: a free port, then ``world`` copies of a worker script."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker: Path, world: int, data: Path, out_dir: Path, *extra: str,
                drop_env: tuple[str, ...] = ("KAMIM_FAST_BACKEND",), timeout: float = 300) -> list:
    """Runs ``worker rank world port data out_dir/out{rank}.pt *extra`` for every rank (the checkout on
    PYTHONPATH, ``drop_env`` unset), asserts each exits 0 (its output in the message) and returns what each saved."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in drop_env:
        env.pop(name, None)
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), str(world), str(port), str(data),
                               str(out_dir / f"out{r}.pt"), *extra], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    return [torch.load(out_dir / f"out{r}.pt") for r in range(world)]


def finish_rank() -> None:
    """A worker's last step, after it saved what it returns: wait for every rank, take the process group down, and
    exit without the interpreter's finalization. Gloo's threads can abort that teardown ("terminate called without
    an active exception", seen once in a fresh-clone CI run of the bank's DDP test, after its results were saved):
    a failure of the process's shutdown, not of anything the tests check."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
