"""Wall-clock timing shared by every latency number the package reports (PyTorch and ONNX Runtime):
one median loop, and where a network's tensors live; and the kernel's memory counters that the
benchmarks and the fuzz audit read."""

from __future__ import annotations

import os
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


class OtherLoad:
    """How much CPU other processes took while a block ran: ``with OtherLoad() as load: ...``,
    then ``load.cores`` (cores' worth of other processes' CPU time over the block's wall time, on
    the CPUs this process may run on) and ``load.busy`` (they took more than the cores this
    process's threads left free, plus a quarter core: the timings inside were shared with them).

    Why: an end-of-run table timed on an oversubscribed machine read a small network 37x slower
    than the big one (211 ms against 5.74 ms; 1.2 ms alone) and said nothing. Read from Linux's
    ``/proc/stat`` (the CPUs' busy time) less ``/proc/self/stat`` (this process's, every thread);
    elsewhere ``cores`` and ``busy`` are None."""

    def __init__(self, threads: int | None = None):
        self.threads = threads or torch.get_num_threads()
        self.cores = self.busy = None
        try:
            self.cpus = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = []

    def __enter__(self) -> "OtherLoad":
        self._start = _cpu_sample(self.cpus)
        return self

    def __exit__(self, *exc) -> None:
        end = _cpu_sample(self.cpus)
        if self._start is None or end is None or end[0] <= self._start[0]:
            return
        wall, busy, own = (e - s for e, s in zip(end, self._start))
        self.cores = max(0.0, (busy - own) / os.sysconf("SC_CLK_TCK") / wall)
        self.busy = self.cores > max(0, len(self.cpus) - self.threads) + 0.25

    def to_dict(self) -> dict:
        return {"other_processes_cores": None if self.cores is None else round(self.cores, 2),
                "cpus": len(self.cpus), "threads": self.threads, "busy": self.busy}


def _cpu_sample(cpus: list) -> tuple | None:
    """(wall seconds, busy clock ticks of ``cpus``, this process's clock ticks), or None where
    ``/proc`` does not say."""
    try:
        wall = time.monotonic()
        with open("/proc/stat") as f:
            rows = {p[0]: [int(v) for v in p[1:9]] for p in (line.split() for line in f)
                    if p and p[0].startswith("cpu") and p[0] != "cpu"}
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        own = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        busy = sum(sum(r) - r[3] - r[4] for r in (rows[f"cpu{c}"] for c in cpus))
    except (OSError, ValueError, IndexError, KeyError):
        return None
    return wall, busy, own
