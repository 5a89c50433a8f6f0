"""Distributed training on ``torch.distributed`` (run under ``torchrun``).

``torchrun --nproc_per_node N tools/{train,search,retrain}.py …`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``; :func:`init` then starts a process group (NCCL on CUDA, gloo on CPU), each process
gets its share of the data (:meth:`dan.data.Data.shard`), the model runs under
``DistributedDataParallel``, evaluation counts are summed over ranks, and only rank 0 logs and
writes checkpoints and ``arch.json``. Checkpoints hold no trace of the world size, so a run resumes
with a different number of processes. In DAN search every rank draws the same Gumbel noise
(same seeds) and the architecture gradients are averaged over ranks, so the logits — and the
``arch.json`` — are the same on every rank (checked at the end of a search).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device_name: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes (a no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device_name or "auto") in ("auto", "cuda")
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local)


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params) -> None:
    """Average ``.grad`` over ranks (parameters outside DistributedDataParallel)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def gather(obj) -> list:
    """``obj`` (picklable) from every rank, in rank order (a one-element list alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    objs = [None] * dist.get_world_size()
    dist.all_gather_object(objs, obj)
    return objs


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when running distributed, else the model."""
    if not (dist.is_available() and dist.is_initialized()):
        return model
    for p in model.parameters():
        if 1 in p.shape and p.dim() > 1:
            p.register_post_accumulate_grad_hook(_strided_like_param)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _strided_like_param(p: torch.Tensor) -> None:
    """Give ``p.grad`` the strides of ``p`` where the two differ only on size-1 dims (the same memory:
    a channels-last 1x1 kernel and its gradient, the one contiguous, the other not, as an adjoint
    layer's slice or a plain conv leaves it). DDP's buckets copy the parameter's strides and its
    reducer, which runs after this hook, compares them with the gradient's literally: every
    distributed run printed "Grad strides do not match bucket view strides" (three lines per rank)
    at its first step."""
    g = p.grad
    if g is not None and g.stride() != p.stride() and all(
            a == b or n == 1 for a, b, n in zip(g.stride(), p.stride(), p.shape)):
        p.grad = g.as_strided(p.shape, p.stride(), g.storage_offset())
