"""Process-parallel map with a progress bar, shared by ingest and preprocessing."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Callable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def _one_thread_per_worker() -> None:
    """Worker initialiser: the workers share the cores, so each keeps one torch thread (when torch is
    loaded). The parent process's thread count is left alone: inline work runs at full width."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def parallel_map(fn: Callable[[T], R], items: list[T], workers: int, desc: str, chunksize: int = 1) -> list[R]:
    """Map ``fn`` over ``items`` in worker processes (fork), in order; inline when there is little work.

    A progress bar (counts only, never item names) is shown on an interactive terminal.
    """
    progress = partial(tqdm, total=len(items), desc=desc, unit="item", disable=None, leave=False)
    if workers <= 1 or len(items) < 4:
        return list(progress(map(fn, items)))
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context,
                             initializer=_one_thread_per_worker) as pool:
        return list(progress(pool.map(fn, items, chunksize=chunksize)))
