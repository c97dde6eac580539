"""The ``distributed`` settings group: how many processes train one model, and how they cooperate
(:class:`DistributedSettings`).

None of these settings changes the model id: a run started on two GPUs resumes on one (and the
other way round). ``--batch-size`` stays the *global* batch, split evenly over the processes.
"""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class DistributedSettings:
    """Data-parallel training (the ``distributed`` settings group).

    ``nproc_per_node`` > 1 starts that many worker processes on this machine through
    ``torch.distributed.run`` (torchrun), one per GPU on CUDA (NCCL), or CPU processes (gloo).
    ``sync_bn`` None means "on for 3D, off for 2D". ``collective_timeout`` (seconds) bounds how long
    a process waits for the others in any collective: a rank that dies or hangs stops the rest.
    """

    nproc_per_node: int = setting(1, "worker processes on this machine (torchrun; one per GPU on CUDA)")
    sync_bn: bool | None = setting(
        None, "SyncBatchNorm across processes: BatchNorm statistics of the global batch (default: on for 3D)"
    )
    collective_timeout: float = setting(
        300.0, "seconds a process waits for the others in a collective before the run fails", metavar="SECONDS"
    )

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1:
            raise UserInputError("--nproc-per-node must be at least 1")
        if self.collective_timeout <= 0:
            raise UserInputError("--collective-timeout must be a positive number of seconds")

    def sync_bn_for(self, dims: int) -> bool:
        """Whether BatchNorm is synchronised for a ``dims``-D model (the default: 3D only, where batches are small)."""
        return self.sync_bn if self.sync_bn is not None else dims == 3
