"""Wall-clock timing shared by every latency number the package reports (PyTorch and ONNX Runtime):
one median loop, and where a network's tensors live; and the kernel's memory counters that the
benchmarks and the fuzz audit read."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn


def median_ms(fn, *, warmup: int = 3, repeats: int = 10, min_time: float = 0.5) -> float:
    """Median milliseconds of ``fn()``: ``warmup`` calls, then at least ``repeats`` timed calls and
    at least ``min_time`` seconds (at most 1000 calls)."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) > 1000:
            break
    return 1000.0 * statistics.median(times)


def sync(x: torch.Tensor) -> None:
    """Wait for the device of ``x`` (CUDA runs asynchronously; the CPU does not)."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model with neither)."""
    for p in list(model.parameters()) + list(model.buffers()):
        return p.device
    return torch.device("cpu")


def proc_kb(key: str, path: str = "/proc/self/status") -> int:
    """A ``kB`` field of a Linux ``/proc`` file: ``VmRSS``, ``VmHWM``, ``VmSize`` of this process
    (``/proc/self/status``) or ``MemAvailable`` of the machine (``/proc/meminfo``). OSError where
    there is none (not Linux, or no such field)."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in {path}")
