"""The Dagster Pipes child of the training steps: ``python -m assets.pipes_child [--error-file=PATH] train ...``.

``trained_model`` and ``fold_models`` start it through ``dagster.PipesSubprocessClient`` or
``dagster_k8s.PipesK8sClient`` (:mod:`assets.launcher`), under torchrun when ``nproc_per_node`` > 1,
so that every training process runs this module. Each runs the ``scanlens`` command line given after
the options (:func:`pipeline.cli.main`); the main one (rank 0, or a process torchrun did not start)
also talks to Dagster through the small ``dagster-pipes`` package (this module never imports
``dagster``):

* the log records of ``pipeline`` and the warnings (``py.warnings``, redacted by
  :mod:`pipeline.logsafety`) go to the step's log as they happen, the trainer's line per epoch included;
* each finished epoch is also reported as a custom message ``{"epoch": record}`` (the history record);
* at the end, a training reports its materialisation, with the metadata of
  :func:`assets.reporting.training_metadata` (learning curves, model card), and a fold (``--fold K``)
  reports ``{"fold": row}`` (:func:`assets.reporting.fold_row_from_files`);
* each line written to stderr (the log, then the command line's one-line error ``scanlens: ...`` when
  it fails) is appended to ``--error-file`` (``/dev/termination-log`` in a pod), so that the
  step can show the last one when this process exits non-zero, or is killed; the error line is also
  logged as an error. The exit code is the command line's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from dagster_pipes import PipesContext, open_dagster_pipes

from assets.reporting import fold_row_from_files, predictions_stamp, training_metadata
from pipeline import cli
from pipeline.logsafety import WARNINGS_LOGGER
from pipeline.logsafety import install as install_log_redaction
from pipeline.train import TrainResult
from pipeline.train.distributed import is_main_rank
from pipeline.train.events import listening

ERROR_FILE_OPTION = "--error-file="
#: How the command line's last stderr line starts when it fails (an error, an internal error, an interrupt).
ERROR_PREFIX = "scanlens: "
#: The loggers whose records the step's log shows.
FORWARDED = ("pipeline", WARNINGS_LOGGER)


class PipesLogHandler(logging.Handler):
    """Sends each log record to the step's log (``PipesContext.log``) with its level."""

    def __init__(self, pipes: PipesContext) -> None:
        super().__init__()
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pipes.log.log(record.levelno, "%s", record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never stop a training
            self.handleError(record)


class LineTap:
    """A text stream in front of ``stream`` (stderr) that passes everything on and calls ``on_line``
    with each complete non-empty line."""

    def __init__(self, stream: TextIO, on_line: Callable[[str], None]) -> None:
        self.stream = stream
        self.on_line = on_line
        self._partial = ""
        self._lock = threading.Lock()  # logging from several threads

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.strip():
                self.on_line(line)
        return written

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding...: the wrapped stream's
        return getattr(self.stream, name)


@contextmanager
def _reporting(pipes: PipesContext, error_file: Path | None, finished: list[TrainResult]) -> Iterator[None]:
    """Forward logs, epochs, results and the error line to ``pipes`` for the duration of the block."""

    def on_line(line: str) -> None:
        if line.startswith(ERROR_PREFIX):
            pipes.log.error("%s", line)
        if error_file is not None:  # the last line so far: what the step shows if this process dies now
            # Appended, never rewritten: a kill in the middle of a rewrite would leave the file empty. Kubernetes
            # keeps the last 4 KiB of /dev/termination-log, so its message ends with the last line too.
            with error_file.open("a") as sink:
                sink.write(line + "\n")

    def on_epoch(record: dict[str, Any]) -> None:
        pipes.report_custom_message({"epoch": record})

    handler = PipesLogHandler(pipes)
    loggers = [logging.getLogger(name) for name in FORWARDED]
    for logger in loggers:
        logger.addHandler(handler)
    stderr = sys.stderr
    sys.stderr = LineTap(stderr, on_line)
    try:
        with listening(on_epoch=on_epoch, on_finish=finished.append):
            yield
    finally:
        sys.stderr = stderr
        for logger in loggers:
            logger.removeHandler(handler)


def _fold_target(argv: list[str]) -> tuple[Path, int] | None:
    """The work folder and the fold of a ``scanlens train --fold K`` command line (None without ``--fold``)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--fold", type=int, default=None)
    known, _ = parser.parse_known_args(argv)
    if known.workdir is None or known.fold is None:
        return None  # the command line reports what is missing
    return known.workdir.resolve(), known.fold


def run(argv: list[str], error_file: Path | None = None) -> int:
    """Run the ``scanlens`` command line ``argv`` as a Pipes child; its exit code."""
    install_log_redaction()
    if not is_main_rank():
        return cli.main(argv)
    target = _fold_target(argv)
    before = predictions_stamp(*target) if target else None
    finished: list[TrainResult] = []
    with open_dagster_pipes() as pipes:
        with _reporting(pipes, error_file, finished):
            code = cli.main(argv)
        if code != 0:
            return code
        if target:
            pipes.report_custom_message({"fold": fold_row_from_files(*target, before)})
        elif finished:
            pipes.report_asset_materialization(metadata=training_metadata(finished[-1]))
    return 0


def main(argv: list[str]) -> int:
    """``[--error-file=PATH] <scanlens command line>``."""
    error_file = None
    if argv and argv[0].startswith(ERROR_FILE_OPTION):
        error_file = Path(argv[0].removeprefix(ERROR_FILE_OPTION))
        argv = argv[1:]
    return run(argv, error_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
