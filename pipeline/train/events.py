"""Listeners for a training's progress: a callback per finished epoch and one when the run ends.

The library knows nothing of who listens (a Dagster Pipes child forwards the events to the
orchestrator, see ``assets/pipes_child.py``). Only the main process (rank 0) of a distributed run
notifies, so a listener hears each epoch once.

>>> heard = []
>>> with listening(on_epoch=heard.append):
...     notify_epoch({"epoch": 1, "val_auroc": 0.5})
>>> heard
[{'epoch': 1, 'val_auroc': 0.5}]
>>> notify_epoch({"epoch": 2})  # nobody listens any more
>>> len(heard)
1
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.train.trainer import TrainResult

log = logging.getLogger(__name__)

EpochListener = Callable[[dict[str, Any]], None]
FinishListener = Callable[["TrainResult"], None]


@dataclass(frozen=True)
class _Listener:
    on_epoch: EpochListener | None
    on_finish: FinishListener | None


_listeners: list[_Listener] = []


@contextmanager
def listening(on_epoch: EpochListener | None = None, on_finish: FinishListener | None = None) -> Iterator[None]:
    """Call ``on_epoch(record)`` after each epoch (the history record: ``epoch`` (1-based), ``train_loss``,
    ``val_loss``, ``val_auroc``, ``lr``, ``images_per_s``, ``head_only``) and ``on_finish(result)`` (a
    :class:`~pipeline.train.TrainResult`) when a training call returns, for the duration of the block."""
    listener = _Listener(on_epoch, on_finish)
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def notify_epoch(record: dict[str, Any]) -> None:
    """Tell every listener that an epoch finished (a listener's failure is logged, never fatal)."""
    for listener in list(_listeners):
        if listener.on_epoch is not None:
            _safely(listener.on_epoch, record)


def notify_finish(result: TrainResult) -> None:
    """Tell every listener that a training call returned."""
    for listener in list(_listeners):
        if listener.on_finish is not None:
            _safely(listener.on_finish, result)


def _safely(callback: Callable[[Any], None], value: Any) -> None:
    try:
        callback(value)
    except Exception as error:  # noqa: BLE001 - a listener must never stop a training
        log.warning("a training listener failed: %s", type(error).__name__)
