"""A warm WorkerPool: isolated_map runs in the same workers call after call, with the same isolation."""

from __future__ import annotations

import os
import signal

import pytest

from pipeline.parallel import TaskFailure, WorkerLimits, WorkerPool, isolated_map


def _task(kind: str) -> str:
    if kind == "raise":
        raise ValueError("a message that may quote a header value")
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "allocate":
        return str(len(bytearray(2 * 1024**3)))  # past a 512 MiB limit: MemoryError in the worker
    return f"ok:{kind}"


def _pid(_: object) -> int:
    return os.getpid()


def _on_failure(kind: str, failure: TaskFailure) -> str:
    return f"{failure.kind}:{kind}"


def test_a_warm_pool_keeps_its_workers_and_isolates_every_task() -> None:
    limits = WorkerLimits(timeout_s=5, memory_mb=512)
    with WorkerPool(1, limits) as pool:
        first = isolated_map(_pid, [0], 1, "pid", limits, lambda k, f: -1, pool=pool)[0].value
        started = pool.pool()
        kinds = ["a", "raise", "segfault", "b", "allocate", "c"]
        out = isolated_map(_task, kinds, 1, "test", limits, _on_failure, chunksize=2, pool=pool)
        assert [t.value for t in out] == ["ok:a", "error:raise", "crash:segfault", "ok:b", "memory:allocate", "ok:c"]
        assert pool.pool() is started  # the pool outlived a crashed worker
        after = isolated_map(_pid, [0], 1, "pid", limits, lambda k, f: -1, pool=pool)[0].value
        assert after not in (-1, os.getpid()) and after != first  # the crashed worker was replaced
        assert isolated_map(_pid, [0], 1, "pid", limits, lambda k, f: -1, pool=pool)[0].value == after  # then kept
        with pytest.raises(ValueError, match="limits"):
            isolated_map(_task, ["a"], 1, "test", WorkerLimits(timeout_s=1), _on_failure, pool=pool)
    assert pool._pool is None  # closed at the end of the block; the next use would start it again
