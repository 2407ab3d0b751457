"""torch.distributed helpers: `torchrun --nproc_per_node N` (or WORLD_SIZE/RANK env) -> DDP.

gloo on CPU, nccl on CUDA (one GPU per local rank). Without the env it is a 1-process no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    active: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init(device: str = "auto") -> Dist:
    import torch
    from robot_emotion.compute import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return Dist(device=dev)
    import datetime

    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.startswith("cuda"):
        torch.cuda.set_device(local)
        dev = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.startswith("cuda") else "gloo", timeout=datetime.timedelta(hours=4)
        )  # rank 0 may extract for long
    return Dist(rank, world, local, dev, True)
