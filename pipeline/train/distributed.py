"""The process group of a data-parallel training, as torchrun (``torch.distributed.run``) describes it.

torchrun starts one worker process per GPU (or per CPU share) and tells each its place through the
environment: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``. A process
started without them is a world of one, and nothing here creates a process group for it.

Two groups are used:

* the default group (NCCL on CUDA, gloo on CPU) carries the training's collectives: DDP's gradient
  all-reduce, SyncBatchNorm, the validation gather. Its timeout is ``collective_timeout``: when a
  rank dies or hangs, the others fail within that bound instead of waiting for ever;
* a gloo *coordination* group with a long timeout, used only while the other ranks wait for rank 0's
  serial work (preprocessing, writing the model card, predicting a fold), which can take minutes.

Only rank 0 writes to the work folder; :func:`on_main` runs such work there and hands its result
(or its error) to every rank.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from pipeline.errors import DistributedRunError, ScanLensError, UserInputError
from pipeline.train.device import DeviceSettings, resolve_device

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long the other ranks wait for rank 0's serial work (preprocessing a large catalogue, predicting).
COORDINATION_TIMEOUT = datetime.timedelta(hours=12)
_coordination: dict[str, Any] = {}


@dataclass(frozen=True)
class World:
    """This process's place in the training: ``rank`` of ``world_size`` processes (``local_rank`` on
    this node), the collective ``backend`` (``nccl``, ``gloo``, or None for a single process) and
    the device of every rank (``devices``, in rank order)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    devices: tuple[str, ...] = ("cpu",)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def describe(self) -> dict[str, Any]:
        """What the model card records (per-rank and global batch are added by the trainer)."""
        return {"world_size": self.world_size, "backend": self.backend, "devices": list(self.devices)}


def under_torchrun() -> bool:
    """Whether torchrun (or another launcher using its environment) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main_rank() -> bool:
    """True in a single process and in rank 0 of a distributed run (read from the environment only)."""
    return os.environ.get("RANK", "0") == "0"


def join_world(device_request: str, deterministic: bool, timeout_s: float) -> tuple[World, DeviceSettings]:
    """This process's :class:`World` and device; joins (once) the process group torchrun describes.

    On CUDA each process takes the GPU of its ``LOCAL_RANK`` and the backend is NCCL; on CPU it is gloo.
    With ``deterministic`` on CPU, oneDNN convolutions are switched off: the result then does not depend
    on how the global batch is split over the processes (torchrun with 1 or N processes agree).
    """
    dev = resolve_device(device_request, deterministic)
    if not under_torchrun():
        return World(devices=(str(dev.device),)), dev
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserInputError(
                f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()} "
                "(use --nproc-per-node at most the number of GPUs)"
            )
        torch.cuda.set_device(local_rank)
        dev = replace(dev, device=torch.device("cuda", local_rank))
    backend = "nccl" if dev.device.type == "cuda" else "gloo"
    if deterministic and dev.device.type == "cpu":
        # oneDNN picks its convolution kernels by batch size, so B/N images per process would not compute
        # what B images in one process compute; the native kernels work image by image.
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a module flag typed as a ContextProp
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev.device if dev.device.type == "cuda" else None,
        )
        _coordination["group"] = dist.new_group(backend="gloo", timeout=COORDINATION_TIMEOUT)
        log.debug("rank %d of %d joined the %s process group", rank, world_size, backend)
    devices: list[Any] = [None] * world_size
    dist.all_gather_object(devices, _device_name(dev), group=_coordination["group"])
    return World(rank, world_size, local_rank, backend, tuple(str(d) for d in devices)), dev


def _device_name(dev: DeviceSettings) -> str:
    if dev.device.type == "cuda":
        return f"{dev.device} ({torch.cuda.get_device_name(dev.device)})"
    return "cpu"


def on_main(world: World, work: Callable[[], T]) -> T:
    """Run ``work`` on rank 0 only and return its result on every rank (the other ranks wait).

    An error on rank 0 is raised on every rank: a :class:`~pipeline.errors.UserInputError` keeps its
    class and message (so every rank exits 2), anything else becomes :class:`DistributedRunError`.
    """
    if not world.distributed:
        return work()
    outcome: list[Any] = [None]
    if world.is_main:
        try:
            outcome[0] = ("ok", work())
        except UserInputError as error:
            outcome[0] = ("user", str(error))
            _broadcast(outcome)
            raise
        except Exception as error:
            outcome[0] = ("failed", type(error).__name__)
            _broadcast(outcome)
            raise
    _broadcast(outcome)
    status, value = outcome[0]
    if status == "user":
        raise UserInputError(value)
    if status == "failed":
        raise DistributedRunError(f"rank 0 failed ({value})")
    result: T = value
    return result


def _broadcast(outcome: list[Any]) -> None:
    dist.broadcast_object_list(outcome, src=0, group=_coordination["group"])


def broadcast_decision(world: World, value: T) -> T:
    """Rank 0's ``value`` on every rank, through the training group (bounded by the collective timeout)."""
    if not world.distributed:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    result: T = box[0]
    return result


def gather_objects(world: World, value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (the training group)."""
    if not world.distributed:
        return [value]
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(world: World, values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over every rank (a copy; no gradient)."""
    total = values.detach().clone()
    if world.distributed:
        dist.all_reduce(total)
    return total


def failed_collective(error: BaseException) -> ScanLensError:
    """The one-line error a rank raises when a collective fails: another rank died or hung."""
    return DistributedRunError(
        f"lost contact with the other training processes ({type(error).__name__}): a rank died or hung past "
        "--collective-timeout; the last checkpoint is kept: rerun with --resume"
    )
