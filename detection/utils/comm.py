"""Process-group helpers: rank/world size, barriers, gathers and loss-dict reduction.

Every helper works without `torch.distributed` being initialised (a single process is rank 0 of
a world of size 1), so the same code runs under `python` and under `torchrun`.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import os
import sys
import traceback
from typing import Any

import torch
import torch.distributed as dist


def is_dist_avail_and_initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without one)."""
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    """Rank of this process in the default group (0 without one)."""
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine (`LOCAL_RANK` set by torchrun, 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Whether this process is rank 0 (it logs and writes checkpoints)."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op for a single process."""
    if get_world_size() > 1:
        dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process launch (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from torchrun's environment variables.

    Args:
        device: the device this process computes on; "cuda" picks NCCL and binds this process to
            GPU `LOCAL_RANK`, anything else picks gloo.
        timeout_s: collective timeout in seconds.

    Returns:
        True when a group was (or already is) initialised, False for a single-process launch.
    """
    if is_dist_avail_and_initialized():
        return True
    if not launched_by_torchrun():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(get_local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    init_process_group(
        backend=backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s)
    )
    return True


def init_process_group(backend: str, init_method: str, **kwargs: Any) -> None:
    """`dist.init_process_group`, after importing `torch.distributed.nn` while no group exists.

    That module's functions take `group=group.WORLD` as a default argument, evaluated at import.
    DistributedDataParallel's constructor imports it; under a live group the defaults would hold
    that group, and gloo's threads, to interpreter shutdown (see `destroy_process_group`).
    Imported first, the defaults are None: the default group at call time.
    """
    importlib.import_module("torch.distributed.nn")
    dist.init_process_group(backend=backend, init_method=init_method, **kwargs)  # noqa: TID251


def destroy_process_group() -> None:
    """`dist.destroy_process_group`, after a garbage collection. The group must end there.

    A finished gloo collective is freed by gloo's worker thread, sometimes after the caller has
    moved on (a barrier's work holds the all-reduces before it); freeing its tensors takes the
    GIL. The group's destructor joins those threads, so it must run without the GIL: pybind
    releases it where the group's own Python object goes, here, but not where a
    DistributedDataParallel's reducer drops the last reference: that thread then waits for the
    GIL its joiner holds, a hang. During interpreter shutdown it is ended instead, mid-unwind:
    SIGABRT, "terminate called without an active exception". DDP wrappers sit in reference
    cycles, freed only by the collector: collected here, while the world still holds the group,
    their reducers' references go first. A DDP model still referenced by the caller would keep
    the group alive past this call: drop it before. Called from a `finally` that an exception
    passes through, the frames of its traceback (and of the exceptions chained to it) hold the
    failed training's locals, the DDP model among them: their locals are cleared first
    (`traceback.clear_frames`; the traceback still prints, without locals to inspect). A no-op
    without a group.
    """
    if not is_dist_avail_and_initialized():
        return
    _clear_propagating_frames()
    gc.collect()
    dist.destroy_process_group()  # noqa: TID251


def _clear_propagating_frames() -> None:
    """Clear the locals of the frames in the traceback of the exception being handled or passing
    through a `finally`, and of those chained to it (frames still running are left alone)."""
    pending, seen = [sys.exc_info()[1]], set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        pending += [exc.__cause__, exc.__context__]


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every rank; returns the list ordered by rank."""
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, data)
    return out


def gather_to_main(data: Any) -> list[Any] | None:
    """Gather a picklable object from every rank onto rank 0 (list by rank); None elsewhere."""
    world_size = get_world_size()
    if world_size == 1:
        return [data]
    out: list[Any] | None = [None] * world_size if is_main_process() else None
    dist.gather_object(data, out, dst=0)
    return out


def reduce_dict(
    input_dict: dict[str, torch.Tensor], average: bool = True
) -> dict[str, torch.Tensor]:
    """Sum (or average) a dict of scalar tensors over all ranks; every rank gets the result.

    Args:
        input_dict: name -> 0-dim tensor; every rank must pass the same keys.
        average: divide the sums by the world size.
    """
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict.keys())
        values = torch.stack([input_dict[k].detach().float().reshape(()) for k in names])
        dist.all_reduce(values)
        if average:
            values /= world_size
        return {k: v for k, v in zip(names, values)}
