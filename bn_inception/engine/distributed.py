"""Process-group set-up for torchrun and SLURM (one process per GPU, or gloo processes on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from timm.utils.distributed import init_distributed_device_so, is_distributed_env

from bn_inception.engine.precision import resolve_device


@dataclass(frozen=True)
class DistInfo:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun or SLURM describes in the environment (or run alone): timm's
    ``init_distributed_device_so`` reads their variables and picks NCCL on CUDA, gloo on CPU."""
    device = resolve_device(device).type
    if is_distributed_env() and "SLURM_PROCID" in os.environ and "MASTER_ADDR" not in os.environ:
        # Under SLURM (one task per GPU: the submitit launcher, or a plain `srun` in a job script) nobody
        # sets MASTER_ADDR/PORT for env:// init (torchrun does); submitit's helper derives them from SLURM's
        # node list and job id, the same on every task. It asks for SUBMITIT_EXECUTOR=slurm, which only
        # submitit's own sbatch file sets: in a plain srun task SLURM's variables are all it reads.
        from submitit.helpers import TorchDistributedEnvironment

        os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    info = init_distributed_device_so(device=device)
    return DistInfo(torch.device(info["device"]), rank=info["global_rank"], world_size=info["world_size"])


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (identity when running alone)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every process (identity when running alone)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj
