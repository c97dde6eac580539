"""A scorer kept warm across studies: the champion, the isolated ingest workers, the scores table's index.

Studies arrive one at a time (a DICOM listener, the inbox sensor, ``scanlens score`` over an inbox).
Scoring each on its own would load the champion, start and stop two pools of isolated ingest
workers and re-read the scores table every time: fixed costs that dwarf a one-scan study. A
:class:`Scorer` pays them once per process:

- the champion's fold models, loaded on the scorer's device and run once on a zero input (the first
  forward of a process sets up its kernels); the registry's champion pointer (one small JSON file) is
  read before every study, and a newly promoted version is loaded in its place;
- the isolated ingest workers (:class:`pipeline.parallel.WorkerPool`, the ingest's default limits):
  untrusted files are still read only in them, but they are started once, not twice per study;
- the scores table (:class:`pipeline.scoring.table.ScoresTable`), which remembers the parts it has
  read, so checking what a study needs reads only the rows added since;
- the preprocessing transforms, which :mod:`pipeline.preprocess.transforms` memoises per parameters.

:func:`warm_scorer` returns the process's scorer for a work folder and device (the CLI's loop over an
inbox, the Dagster ``scan_scores`` asset, a long-running listener). Results are those of
:func:`pipeline.scoring.study.score_study` on a cold process, to the bit.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from pipeline.parallel import WorkerPool
from pipeline.registry import Registry
from pipeline.scoring.score import Champion, load_champion
from pipeline.scoring.study import StudyScoring, score_study
from pipeline.scoring.table import ScoresTable
from pipeline.settings.ingest import IngestSettings

log = logging.getLogger(__name__)

#: Scorers a process keeps (work folder x device); the least recently used one beyond this is closed.
MAX_WARM = 4


def warm_up(champion: Champion) -> Champion:
    """Run every fold model once on a zero input of the champion's shape (batch 1), so that the first
    study does not pay the process's first forward."""
    pre = champion.models[0].preprocess
    with torch.inference_mode():
        for loaded in champion.models:
            x = torch.zeros(1, pre.in_channels, *pre.input_size, device=loaded.device.device)
            with loaded.device.autocast():
                loaded.model(x.contiguous(memory_format=loaded.device.memory_format(pre.dims)))
    return champion


class Scorer:
    """Scores studies of one work folder with its champion, keeping what can be kept between them.

    ``workers``: isolated ingest workers (default: the number of cores). Calls take the work folder's
    lock as :func:`score_study` does, so a scorer may be shared by threads; :meth:`close` stops its
    workers (the interpreter's exit does too).
    """

    def __init__(self, workdir: Path, device: str = "auto", workers: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.device = device
        self.workers = workers
        self.table = ScoresTable(self.workdir)
        self.pool = WorkerPool(workers or os.cpu_count() or 1, IngestSettings().worker_limits)
        self._champion: Champion | None = None
        self._guard = threading.RLock()

    @property
    def champion(self) -> Champion:
        """The registry's champion, loaded once and warmed up; a newly promoted version replaces it.

        Raises a :class:`pipeline.errors.UserInputError` when there is no champion.
        """
        with self._guard:
            current = Registry(self.workdir).champion()
            if self._champion is None or current != self._champion.version:
                self._champion = warm_up(load_champion(self.workdir, self.device))
                log.info("scorer: champion %s loaded on %s", self._champion.version, self.device)
            return self._champion

    def score_study(
        self,
        folder: Path,
        key: str,
        outbox: Path | None = None,
        secret: str | None = None,
        overlays: bool = True,
    ) -> StudyScoring:
        """:func:`pipeline.scoring.study.score_study` with the warm champion, workers and table."""
        with self._guard:
            return score_study(
                self.workdir,
                folder,
                key,
                outbox,
                secret,
                self.champion,
                overlays,
                self.workers,
                pool=self.pool,
                table=self.table,
            )

    def close(self) -> None:
        """Stop the isolated ingest workers (started again if the scorer is used afterwards)."""
        self.pool.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_warm: OrderedDict[tuple[Path, str], Scorer] = OrderedDict()
_warm_guard = threading.Lock()


def warm_scorer(workdir: Path, device: str = "auto") -> Scorer:
    """This process's :class:`Scorer` for ``workdir`` on ``device``: made on first use, then reused
    (it reloads the champion itself when another version is promoted). Checks the champion now, so
    that a work folder without one fails here with a one-line error."""
    key = (Path(workdir).resolve(), device)
    with _warm_guard:
        scorer = _warm.pop(key, None) or Scorer(key[0], device)
        _warm[key] = scorer
        while len(_warm) > MAX_WARM:
            _, old = _warm.popitem(last=False)
            old.close()
    _ = scorer.champion  # loads the champion, or checks that it is still the registry's
    return scorer
