"""Process-parallel maps: trusted work (:func:`parallel_map`) and untrusted bytes (:func:`isolated_map`).

:func:`isolated_map` is what reads files from outside: every task runs in a worker process (pebble's
``ProcessPool``) under a wall-clock limit and an address-space limit, so that whatever a decoder does
(raise anything, a Rust panic, ``MemoryError``, a segfault, a hang, a runaway allocation) costs one
task, never the run. A dead or killed worker is replaced and the map goes on.

Tasks are sent in chunks (one round trip per chunk keeps the overhead of isolation small); a chunk
whose worker dies is re-run one task at a time, so that the failure is pinned on the task that
caused it and the other tasks of the chunk still get their results.

Starting and stopping a pool costs more than probing a small study's files (about 0.1 s each on two
cores, twice per ingest). A long-running process that ingests one small study after another (the
scorer) keeps a :class:`WorkerPool` and passes it to :func:`isolated_map`: the same isolation, with
workers started once (and replaced when one dies or has run ``max_tasks`` chunks).
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import multiprocessing
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from pebble import ProcessExpired, ProcessFuture, ProcessPool
from tqdm import tqdm

from pipeline.errors import UserInputError
from pipeline.logsafety import install as install_log_redaction

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: Seconds a worker gets beyond its tasks' own limits before pebble kills it (a backstop: each task
#: is normally ended by its own SIGALRM first).
BACKSTOP_SECONDS = 5.0


def _one_thread_per_worker() -> None:
    """Worker initialiser: the workers share the cores, so each keeps one torch thread (when torch is
    loaded). The parent process's thread count is left alone: inline work runs at full width."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def parallel_map(fn: Callable[[T], R], items: list[T], workers: int, desc: str, chunksize: int = 1) -> list[R]:
    """Map ``fn`` over ``items`` in worker processes (fork), in order; inline when there is little work.

    For trusted inputs only (ScanLens's own volumes): an exception or a crash ends the map. Bytes
    from outside go through :func:`isolated_map`. A progress bar (counts only, never item names) is
    shown on an interactive terminal.
    """
    progress = partial(tqdm, total=len(items), desc=desc, unit="item", disable=None, leave=False)
    if workers <= 1 or len(items) < 4:
        return list(progress(map(fn, items)))
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(items)), mp_context=context, initializer=_one_thread_per_worker
    ) as pool:
        return list(progress(pool.map(fn, items, chunksize=chunksize)))


@dataclass(frozen=True)
class WorkerLimits:
    """Limits of one isolated task.

    Attributes:
        timeout_s: wall-clock seconds one task may run; past it the worker is killed and replaced.
        memory_mb: MiB of address space a worker may map beyond what it started with (``RLIMIT_AS``);
            an allocation past it fails with ``MemoryError`` (or, in C code, ends the worker).
    """

    timeout_s: float = 60.0
    memory_mb: int = 6144

    def __post_init__(self) -> None:
        if not self.timeout_s > 0 or self.memory_mb < 64:
            raise UserInputError("worker limits: the task timeout must be > 0 s and the worker memory at least 64 MB")


@dataclass(frozen=True)
class TaskFailure:
    """Why an isolated task gave no result. ``kind`` is ``error``, ``memory``, ``crash`` or ``timeout``;
    ``detail`` names an exception type or a signal, never a message (messages may quote header values)."""

    kind: str
    detail: str


@dataclass(frozen=True)
class Timed(Generic[R]):
    """A task's result (or what ``on_failure`` made of its failure) and the seconds it took."""

    value: R
    seconds: float


def _limit_worker(memory_mb: int) -> None:
    """Worker initialiser: die with the parent, default SIGALRM (ends the process), cap the address space."""
    _one_thread_per_worker()
    install_log_redaction()
    faulthandler.disable()  # a decoder crash is an expected event, reported as a quarantine row: no dump on stderr
    try:  # PR_SET_PDEATHSIG = 1: a worker never outlives a parent killed with SIGKILL
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    current = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    current = int(line.split()[1]) * 1024
    except OSError:
        pass
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = current + memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _run_chunk(fn: Callable[[T], R], chunk: list[T], timeout_s: float) -> list[tuple[R | TaskFailure, float]]:
    """Worker side: run each task under its own SIGALRM timer; turn anything it raises into a failure."""
    out: list[tuple[R | TaskFailure, float]] = []
    for item in chunk:
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            value: R | TaskFailure = fn(item)
        except KeyboardInterrupt:
            raise
        except MemoryError:
            value = TaskFailure("memory", "MemoryError")
        except BaseException as exc:  # noqa: BLE001 (a Rust PanicException derives from BaseException)
            value = TaskFailure("error", type(exc).__name__)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.append((value, time.perf_counter() - start))
    return out


class WorkerPool:
    """Isolated workers (:func:`_limit_worker`) kept across :func:`isolated_map` calls; started on first use.

    ``workers`` processes under ``limits``; each is replaced after ``max_tasks`` chunks (so that what a
    decoder leaks stays bounded; 0: never) and whenever one dies. Thread-safe; :meth:`close` (or the ``with``
    block's end) stops the workers, and the interpreter's exit does too.
    """

    def __init__(self, workers: int, limits: WorkerLimits, max_tasks: int = 256) -> None:
        self.workers = max(1, workers)
        self.limits = limits
        self.max_tasks = max_tasks
        self._pool: ProcessPool | None = None
        self._guard = threading.Lock()

    def pool(self) -> ProcessPool:
        """The running pebble pool (started now when there is none)."""
        with self._guard:
            if self._pool is None or not self._pool.active:
                context = multiprocessing.get_context(
                    "fork" if "fork" in multiprocessing.get_all_start_methods() else None
                )
                self._pool = ProcessPool(
                    max_workers=self.workers,
                    max_tasks=self.max_tasks,
                    initializer=_limit_worker,
                    initargs=(self.limits.memory_mb,),
                    context=context,
                )
            return self._pool

    def close(self) -> None:
        with self._guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            pool.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _failure_of(exc: BaseException) -> TaskFailure:
    """What a failed future says about its (single) task."""
    if isinstance(exc, ProcessExpired):
        code = exc.exitcode or 0
        if code == -signal.SIGALRM:
            return TaskFailure("timeout", "killed by its wall-clock limit (SIGALRM)")
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return TaskFailure("crash", f"worker killed by {name}")
        return TaskFailure("crash", f"worker exited with status {code}")
    if isinstance(exc, FutureTimeout):
        return TaskFailure("timeout", "killed by its wall-clock limit")
    return TaskFailure("crash", type(exc).__name__)


def isolated_map(
    fn: Callable[[T], R],
    items: list[T],
    workers: int,
    desc: str,
    limits: WorkerLimits,
    on_failure: Callable[[T, TaskFailure], R],
    chunksize: int = 1,
    pool: WorkerPool | None = None,
) -> list[Timed[R]]:
    """Map ``fn`` over ``items`` in isolated worker processes, in order, with per-task limits.

    ``fn`` must be a top-level function (it is pickled by reference). A task that raises, runs out
    of memory, crashes its worker or runs past ``limits.timeout_s`` yields ``on_failure(item,
    failure)`` (called in this process) instead of a result. Every task runs in a worker, also
    when there is only one: the untrusted bytes never reach this process's decoders. With ``pool``
    (whose limits must be ``limits``) its warm workers run the tasks and stay up afterwards;
    otherwise a pool of up to ``workers`` is started for this call and stopped at its end.
    """
    if not items:
        return []
    if pool is not None and pool.limits != limits:
        raise ValueError("isolated_map: the warm pool's worker limits differ from the ones asked for")
    chunksize = max(1, chunksize)
    chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
    results: list[Timed[R] | None] = [None] * len(items)
    n_workers = max(1, min(workers, len(chunks)))

    def settle(index: int, value: R | TaskFailure, seconds: float) -> None:
        if isinstance(value, TaskFailure):
            value = on_failure(items[index], value)
        results[index] = Timed(value, seconds)

    with (
        nullcontext(pool) if pool is not None else WorkerPool(n_workers, limits, max_tasks=0) as warm,
        tqdm(total=len(items), desc=desc, unit="item", disable=None, leave=False) as bar,
    ):
        workers_pool = warm.pool()

        def submit(chunk: list[T]) -> ProcessFuture:
            return workers_pool.schedule(
                _run_chunk, args=(fn, chunk, limits.timeout_s), timeout=limits.timeout_s * len(chunk) + BACKSTOP_SECONDS
            )

        pending = [(start * chunksize, submit(chunk)) for start, chunk in enumerate(chunks)]
        retry: list[tuple[int, ProcessFuture, float]] = []
        for offset, future in pending:
            try:
                chunk_out = future.result()
            except Exception:  # noqa: BLE001 (a worker died: pin the failure on one task by re-running them alone)
                log.debug(
                    "a worker died in a chunk of %d tasks; re-running them one at a time",
                    len(chunks[offset // chunksize]),
                )
                for index in range(offset, offset + len(chunks[offset // chunksize])):
                    retry.append((index, submit([items[index]]), time.perf_counter()))
                continue
            for k, (value, seconds) in enumerate(chunk_out):
                settle(offset + k, value, seconds)
            bar.update(len(chunk_out))
        for index, future, started in retry:
            try:
                ((value, seconds),) = future.result()
            except Exception as exc:  # noqa: BLE001 (a task that failed alone is recorded as that task's failure)
                value, seconds = _failure_of(exc), time.perf_counter() - started
            settle(index, value, seconds)
            bar.update(1)
    return [r for r in results if r is not None]
