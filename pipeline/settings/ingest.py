"""The ``ingest`` settings group: how a source folder is read, checked and de-identified."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from pipeline.errors import UserInputError
from pipeline.io.limits import ReadLimits
from pipeline.parallel import WorkerLimits
from pipeline.settings.fields import SETTINGS, setting


@dataclass(frozen=True, config=SETTINGS)
class IngestSettings:
    """What an ingest run is told, besides which folders it reads and writes (:class:`IngestConfig`).

    Sizes are MiB; times are wall-clock seconds. The size and time limits' values are those of
    :class:`~pipeline.io.limits.ReadLimits` and :class:`~pipeline.parallel.WorkerLimits`.
    """

    keep_demographics: bool = setting(False, "keep PatientSex and PatientAge (PS3.15 Annex E) for subgroup analysis")
    allow_burned_in: bool = setting(False, "ingest images flagged BurnedInAnnotation=YES instead of quarantining them")
    spacing_tolerance: float = setting(
        0.05,
        "relative deviation of slice spacing from the median accepted with a "
        "warning; larger deviations quarantine the series",
    )
    workers: int | None = setting(None, "parallel parser processes (none: one per CPU core)", metavar="N")
    rehash: bool = setting(False, "hash every source file even when its size and mtime match the manifest")
    task_timeout_s: float = setting(
        WorkerLimits.timeout_s,
        "wall-clock seconds one file or scan may take before its "
        "worker is killed and it is quarantined as decoder_timeout",
        flag="--task-timeout",
        metavar="S",
    )
    worker_memory_mb: int = setting(
        WorkerLimits.memory_mb,
        "memory one worker process may add; past it the file is quarantined as too_large",
        metavar="MB",
    )
    max_file_mb: int = setting(
        ReadLimits.max_file_mb, "larger files are quarantined as too_large without being read", metavar="MB"
    )
    max_decoded_mb: int = setting(
        ReadLimits.max_decoded_mb, "memory one image may need once decoded, from its declared size", metavar="MB"
    )
    follow_external_links: bool = setting(
        False,
        "read files through symbolic links that point outside the source "
        "folder (default: quarantine them as outside_source)",
    )

    def __post_init__(self) -> None:
        if self.spacing_tolerance < 0:
            raise UserInputError("spacing tolerance must not be negative")
        if self.workers is not None and self.workers < 1:
            raise UserInputError("workers must be at least 1")
        if self.task_timeout_s <= 0 or min(self.worker_memory_mb, self.max_file_mb, self.max_decoded_mb) < 1:
            raise UserInputError("the task timeout and the memory and size limits must be positive")

    @property
    def limits(self) -> ReadLimits:
        """Size caps checked from declared sizes before a file is read or decoded."""
        return ReadLimits(max_file_mb=self.max_file_mb, max_decoded_mb=self.max_decoded_mb)

    @property
    def worker_limits(self) -> WorkerLimits:
        """Wall-clock and memory limits of each isolated probe or build task."""
        return WorkerLimits(timeout_s=self.task_timeout_s, memory_mb=self.worker_memory_mb)
