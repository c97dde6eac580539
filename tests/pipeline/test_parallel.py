"""parallel_map: workers run one torch thread each; inline work keeps the caller's thread count.
isolated_map: whatever a task does (raise, panic, segfault, hang, allocate), it costs that task only."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from pipeline.parallel import TaskFailure, WorkerLimits, isolated_map, parallel_map


def _threads(_: int) -> int:
    return torch.get_num_threads()


def test_workers_use_one_thread_and_inline_work_leaves_the_callers_count() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert parallel_map(_threads, [0, 1], workers=2, desc="inline") == [2, 2]  # few items: run inline
        assert parallel_map(_threads, [0, 1, 2, 3], workers=2, desc="pool") == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2  # e.g. scoring's inference after preprocessing one study
    finally:
        torch.set_num_threads(before)


# isolated_map: whatever a task does, it costs that task only.


class FakePanic(BaseException):
    """Like pyo3's PanicException: not an Exception."""


def _misbehave(kind: str) -> str:
    if kind == "raise":
        raise ValueError("a message that may quote a header value")
    if kind == "panic":
        raise FakePanic("boom")
    if kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if kind == "hang":
        time.sleep(60)
    if kind == "allocate":
        return str(len(bytearray(2 * 1024**3)))  # past a 512 MiB limit: MemoryError in the worker
    return f"ok:{kind}"


def _on_failure(kind: str, failure: TaskFailure) -> str:
    return f"{failure.kind}:{kind}"


@pytest.mark.parametrize("workers", [1, 2])
def test_every_misbehaviour_becomes_one_failure_and_the_others_get_their_results(workers: int) -> None:
    kinds = ["a", "raise", "b", "panic", "segfault", "c", "hang", "allocate", "d"]
    limits = WorkerLimits(timeout_s=1.5, memory_mb=512)
    start = time.perf_counter()
    out = isolated_map(_misbehave, kinds, workers, "test", limits, _on_failure, chunksize=4)
    assert [t.value for t in out] == [
        "ok:a", "error:raise", "ok:b", "error:panic", "crash:segfault", "ok:c", "timeout:hang", "memory:allocate", "ok:d",
    ]
    assert time.perf_counter() - start < 20  # the hang cost its limit (twice: in its chunk, then alone), not 60 s
    assert all(t.seconds >= 0 for t in out) and out[6].seconds >= 1.0


def test_a_crash_is_named_by_its_signal() -> None:
    out = isolated_map(_misbehave, ["segfault"], 1, "test", WorkerLimits(timeout_s=5), lambda k, f: f.detail)
    assert out[0].value == "worker killed by SIGSEGV"


def test_worker_limits_are_validated() -> None:
    from pipeline.errors import UserInputError

    with pytest.raises(UserInputError):
        WorkerLimits(timeout_s=0)
