"""``--nproc-per-node N``: start N training processes on this machine with torchrun's own module,
:mod:`torch.distributed.run`, each running the same ``scanlens`` command line.

The launching process only waits: it holds no lock and writes nothing. The workers see torchrun's
environment (``RANK``, ``WORLD_SIZE``...) and train together (:mod:`pipeline.train.distributed`).
When one of them fails, torchrun stops the others; this process then exits non-zero with one line
(rank 0's own one-line error is already on stderr when it failed on bad input, and exit code 2 is kept).
"""

from __future__ import annotations

import logging
import os
import sys

from pipeline.errors import UserInputError
from pipeline.settings.distributed import DistributedSettings
from pipeline.train.distributed import under_torchrun

log = logging.getLogger(__name__)

#: Seconds between torchrun's checks on its workers (a dead rank is noticed within this).
MONITOR_INTERVAL_S = 0.5


def needs_launch(settings: DistributedSettings) -> bool:
    """True when this process must start the workers (more than one asked for, not yet under torchrun)."""
    return settings.nproc_per_node > 1 and not under_torchrun()


def check_global_batch(batch_size: int, world_size: int) -> int:
    """The per-process batch of a global ``batch_size`` split over ``world_size`` processes.

    The global batch must divide evenly: an uneven split would weight some images more than others
    and break the equivalence with one process.

    >>> check_global_batch(32, 4)
    8
    >>> check_global_batch(30, 4)
    Traceback (most recent call last):
    ...
    pipeline.errors.UserInputError: --batch-size 30 is the global batch and must divide by the 4 processes (use 28 or 32)
    """
    if batch_size % world_size:
        below, above = batch_size // world_size * world_size, (batch_size // world_size + 1) * world_size
        options = f"{below} or {above}" if below else str(above)
        raise UserInputError(
            f"--batch-size {batch_size} is the global batch and must divide by the {world_size} processes (use {options})"
        )
    return batch_size // world_size


def torchrun_options(nproc_per_node: int) -> list[str]:
    """torchrun's options for ``nproc_per_node`` processes on this machine: no restarts (a rerun with
    ``--resume`` continues instead), a dead worker noticed within :data:`MONITOR_INTERVAL_S`."""
    return [
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        "--max-restarts=0",
        f"--monitor-interval={MONITOR_INTERVAL_S}",
    ]


def threads_per_process(nproc_per_node: int) -> int:
    """This machine's cores shared out over the processes (torchrun's own default is one thread each)."""
    return max(1, (os.cpu_count() or 1) // nproc_per_node)


def launch_workers(argv: list[str], settings: DistributedSettings, batch_size: int) -> int:
    """Run ``argv`` in ``settings.nproc_per_node`` processes through torchrun; the exit code of the run."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    check_global_batch(batch_size, settings.nproc_per_node)
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of torchrun's blanket 1 thread (and its banner)
        os.environ["OMP_NUM_THREADS"] = str(threads_per_process(settings.nproc_per_node))
    for name in list(logging.root.manager.loggerDict):  # torchrun's banners and error dumps: summarised below
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    log.info("starting %d training processes with torchrun", settings.nproc_per_node)
    try:
        run(parse_args([*torchrun_options(settings.nproc_per_node), "--module", "pipeline", *argv]))
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        if rank == 0 and first.exitcode == 2:
            return 2  # rank 0 failed on bad input and said so in one line
        how = f"killed by {first.signal_name()}" if first.exitcode < 0 else f"exit code {first.exitcode}"
        sys.stderr.write(
            f"scanlens: error: training process rank {rank} of {settings.nproc_per_node} failed ({how}); "
            "the others were stopped; the last checkpoint is kept: rerun with --resume\n"
        )
        return 1
    return 0
