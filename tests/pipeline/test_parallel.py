"""parallel_map: workers run one torch thread each; inline work keeps the caller's thread count."""

from __future__ import annotations

import torch

from pipeline.parallel import parallel_map


def _threads(_: int) -> int:
    return torch.get_num_threads()


def test_workers_use_one_thread_and_inline_work_leaves_the_callers_count() -> None:
    torch.set_num_threads(2)
    try:
        assert parallel_map(_threads, [0, 1], workers=2, desc="inline") == [2, 2]  # few items: run inline
        assert parallel_map(_threads, [0, 1, 2, 3], workers=2, desc="pool") == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2  # e.g. scoring's inference after preprocessing one study
    finally:
        torch.set_num_threads(max(1, torch.get_num_threads()))
