"""Which process of a distributed (DDP) run this is, and the rank-zero discipline of the stages.

With ``trainer.strategy: ddp`` (``configs/trainer/``) Lightning trains on several devices. Its script
launcher starts the other processes when the first one (global rank 0) reaches its first
``Trainer.fit``: it re-executes the same command with ``LOCAL_RANK`` / ``NODE_RANK`` /
``WORLD_SIZE`` set (torchrun and SLURM start every process themselves and set ``RANK`` /
``SLURM_PROCID``). So every rank runs the whole stage: the same data, the same fits (DDP keeps the
weights equal, ``models.pretrain.train_module`` checks it), the same evaluation. The rule:

- only global rank 0 writes: model folders, metrics, MLflow runs and registrations, plots, results
  (``is_global_zero``); the others compute and discard;
- where a rank reads what rank 0 writes inside the same run, it waits on ``barrier()`` first;
- at the end of the entry point, ``finish()`` lines the ranks up once more and rank 0 waits for the
  processes its launcher started (none is left behind); ``abort()`` stops them when rank 0 fails.

Without a process group (one process, the default) every function here is a no-op and
``is_global_zero()`` is true.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

# processes a Lightning launcher started from this one (rank 0 of a script-launched DDP run)
_children: list[subprocess.Popen] = []
_depth = 0  # nesting of ``ranks()`` (the robustness run calls the sequence stages inside its own)


def _initialized() -> bool:
    import sys

    if "torch" not in sys.modules:  # nothing can have formed a process group
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _env_rank_is_zero() -> bool:
    """Before the process group forms: rank 0 unless the launcher marked this process otherwise."""
    env = os.environ
    if "RANK" in env:  # torchrun / torch.distributed.launch: the global rank
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env or "NODE_RANK" in env or "GROUP_RANK" in env:  # Lightning's script launcher
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
        return node == 0 and int(env.get("LOCAL_RANK", "0")) == 0
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:  # srun starting every task
        return int(env["SLURM_PROCID"]) == 0
    return True


def is_global_zero() -> bool:
    """True in the process that writes: global rank 0, or the only process."""
    if _initialized():
        import torch.distributed as dist

        return dist.get_rank() == 0
    return _env_rank_is_zero()


def world_size() -> int:
    if _initialized():
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    if not _initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def remember_children(launcher: Any) -> None:
    """Keep the processes a Lightning launcher started (``trainer.strategy.launcher``), to wait for them."""
    for proc in getattr(launcher, "procs", None) or []:
        if proc not in _children:
            _children.append(proc)


def finish(timeout: float = 300.0) -> None:
    """End of an entry point: every rank reaches here, then rank 0 waits for its launched processes."""
    barrier()
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()
    failed = []
    for proc in list(_children):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("distributed: rank process %d still running %.0f s after the run; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()
        if proc.returncode:
            failed.append(f"{proc.pid} (exit code {proc.returncode})")
        _children.remove(proc)
    if failed:
        raise RuntimeError(f"distributed: rank processes failed: {', '.join(failed)}")


def abort() -> None:
    """Rank 0 failed: stop the processes it launched (they would wait in a collective otherwise)."""
    for proc in list(_children):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _children.remove(proc)


@contextmanager
def ranks() -> Iterator[None]:
    """Around a stage's body: on success ``finish()``, on failure ``abort()``. Only the outermost use
    ends the run; a stage called inside another (the robustness run) ends with a ``barrier()``, so
    no rank goes on to read what rank 0 is still writing."""
    global _depth
    _depth += 1
    try:
        yield
    except BaseException:
        if _depth == 1:
            abort()
        raise
    else:
        if _depth == 1:
            finish()
        else:
            barrier()
    finally:
        _depth -= 1


__all__ = ["abort", "all_gather_object", "barrier", "finish", "is_global_zero", "ranks", "remember_children", "world_size"]
