"""Where a training step trains: in its own process, in a child process, or in a Kubernetes pod.

The resource ``launcher`` (:class:`TrainingLauncher`) serves ``trained_model`` and ``fold_models``.
Its ``mode``:

* ``subprocess`` (the default): the step starts ``python -m assets.pipes_child ... train ...`` (the
  ``scanlens train`` command line) with ``dagster.PipesSubprocessClient``, under torchrun
  (``python -m torch.distributed.run --standalone``) when ``nproc_per_node`` > 1. The child streams
  its log, each epoch and its results back through Dagster Pipes (:mod:`assets.pipes_child`);
* ``k8s``: the same command in a pod of the same image (``dagster_k8s.PipesK8sClient``), with the
  training pod spec of :func:`assets.deployment.training_pod_spec`;
* ``in_process``: the step calls the library itself (one process only: ``nproc_per_node`` must be 1).

A child that fails fails the step with its last error line (the command line's one-line error
``scanlens: ...``, which the child appends to an error file; in a pod, to its termination message); a
child killed before it could say anything fails it with the signal and the last line it wrote. A user
error (exit code 2) is final; anything else may be retried (a retry policy, or a re-execution), and
the retry continues from the model's ``checkpoint.pt``: the child always runs with ``--resume``, and a
fold always resumes.
"""

# No `from __future__ import annotations` here: Dagster reads resource field types from the annotations.

import copy
import os
import re
import signal
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError  # what PipesSubprocessClient raises on a failed child
from pydantic import Field

from assets.reporting import fold_row, training_metadata
from pipeline.errors import UserInputError
from pipeline.settings import dims_of
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.cli import to_argv
from pipeline.settings.distributed import DistributedSettings
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.train import TrainConfig
from pipeline.train.launch import threads_per_process, torchrun_options

LaunchMode = Literal["in_process", "subprocess", "k8s"]
CHILD_MODULE = "assets.pipes_child"
#: Where a container's termination message goes (Kubernetes' default ``terminationMessagePath``).
TERMINATION_LOG = "/dev/termination-log"
USER_ERROR_EXIT = 2
#: How the command line's one-line error starts.
ERROR_PREFIX = "scanlens: "


@dataclass(frozen=True)
class TrainingRequest:
    """One training as a step asks for it: the work folder, the model kind and the settings groups."""

    workdir: Path
    kind: str  # "2d" or "3d"
    pre: PreprocessSettings
    cfg: TrainConfig
    aug: AugmentConfig
    dist: DistributedSettings
    lock_timeout_s: float

    def argv(self, fold: int | None = None) -> list[str]:
        """The ``scanlens`` command line of this training (of fold ``fold``'s model when given)."""
        target = ["--resume"] if fold is None else [f"--fold={fold}"]
        return [
            f"--lock-timeout={self.lock_timeout_s!r}",
            "train",
            f"--workdir={self.workdir.resolve()}",
            f"--dims={self.kind}",
            *to_argv(self.pre, self.cfg, self.aug, self.dist),
            *target,
        ]


def child_command(python: str, request: TrainingRequest, child_argv: list[str]) -> list[str]:
    """``python -m assets.pipes_child <child_argv>``, under torchrun when the request asks for several processes."""
    n = request.dist.nproc_per_node
    launcher = ["-m", "torch.distributed.run", *torchrun_options(n)] if n > 1 else []
    return [python, *launcher, "-m", CHILD_MODULE, *child_argv]


def _thread_env(request: TrainingRequest) -> dict[str, str]:
    """Under torchrun, the processes share this machine's cores (torchrun's default is one thread each)."""
    n = request.dist.nproc_per_node
    if n == 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(threads_per_process(n))}


def dagster_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata in the Pipes wire format (:mod:`assets.reporting`) as Dagster metadata values."""
    kinds = {"md": dg.MetadataValue.md, "json": dg.MetadataValue.json, "path": dg.MetadataValue.path}
    return {
        name: kinds[entry["type"]](entry["raw_value"]) if entry["type"] in kinds else entry["raw_value"]
        for name, entry in metadata.items()
    }


def child_failure(status: str, last: str | None, exit_code: int | None) -> dg.Failure:
    """The step's failure for a training process that ended with ``status`` (``exited with code 1``...)
    after writing ``last`` as its last stderr line: its one-line error (``scanlens: ...``) when it
    failed by itself, else whatever it wrote last (a killed process has no time for an error line)."""
    if last is None:
        said = " before writing anything"
    elif last.startswith(ERROR_PREFIX):
        said = f": {last}"
    else:
        said = f" (its last line: {last})"
    return dg.Failure(
        description=f"the training process {status}{said}",
        metadata={"last_line": last or "", "exit_code": exit_code if exit_code is not None else "unknown"},
        allow_retries=exit_code != USER_ERROR_EXIT,
    )


def exit_status(exit_code: int) -> str:
    """``exited with code 2``, or ``was killed by SIGKILL`` for a negative (signal) exit code."""
    if exit_code < 0:
        try:
            return f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"was killed by signal {-exit_code}"
    return f"exited with code {exit_code}"


def last_line(path: Path) -> str | None:
    """The last complete non-empty line of ``path`` (the child appends; a line it was killed while
    writing is left out), None when there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    complete = text if text.endswith("\n") else text.rpartition("\n")[0]
    lines = [line.strip() for line in complete.splitlines() if line.strip()]
    return lines[-1] if lines else None


def termination_message(k8s_error: str) -> str | None:
    """The last line of the container's termination message quoted in a ``dagster_k8s`` pod failure
    (``Container "x" failed with message: "<message>". Last N log lines: ...``), None when it has none."""
    found = re.search(r'failed with message: "(.*?)"\. Last \d+ log lines', k8s_error, re.DOTALL)
    lines = [line.strip() for line in found.group(1).splitlines() if line.strip()] if found else []
    return lines[-1] if lines and lines[-1] != "None" else None


class TrainingLauncher(dg.ConfigurableResource):
    """Where ``trained_model`` and ``fold_models`` train: ``subprocess`` (default), ``k8s`` or ``in_process``."""

    mode: LaunchMode = Field(
        default="subprocess",
        description="subprocess: a child process per training (Dagster Pipes; torchrun when nproc_per_node > 1); "
        "k8s: a pod per training from the same image (PipesK8sClient); in_process: in the step's process "
        "(one process only)",
    )
    namespace: str = Field(default="", description="k8s: namespace of the training pods; empty: the current one")
    image: str = Field(default="", description="k8s: image of the training pods; empty: $SCANLENS_IMAGE at run time")
    gpus_per_pod: int = Field(
        default=0, description="k8s: GPUs of a training pod; 0: one per training process (nproc_per_node)"
    )

    def train_model(self, context: dg.AssetExecutionContext, request: TrainingRequest) -> dg.MaterializeResult:
        """Train (resuming from a checkpoint) the model of ``request``; its materialisation."""
        if self.mode == "in_process":
            from pipeline.train import train

            self._single_process(request)
            pre = request.pre.for_dims(dims_of(request.kind))
            result = train(
                request.workdir, request.cfg, pre, request.aug, resume=True, log=context.log, dist=request.dist
            )
            return dg.MaterializeResult(metadata=dagster_metadata(training_metadata(result)))
        return self._run_child(context, request, request.argv()).get_materialize_result()

    def train_fold(self, context: dg.AssetExecutionContext, request: TrainingRequest, fold: int) -> dict[str, Any]:
        """Train (or resume) fold ``fold``'s model and predict its fold and the test set; its ``folds`` row."""
        if self.mode == "in_process":
            from pipeline.evaluate import train_fold

            self._single_process(request)
            pre = request.pre.for_dims(dims_of(request.kind))
            run = train_fold(request.workdir, fold, request.cfg, pre, request.aug, log=context.log, dist=request.dist)
            return fold_row(run)
        messages = self._run_child(context, request, request.argv(fold)).get_custom_messages()
        rows = [m["fold"] for m in messages if isinstance(m, dict) and "fold" in m]
        if not rows:
            raise dg.Failure(description=f"the training process of fold {fold} reported no result")
        return dict(rows[-1])

    @staticmethod
    def _single_process(request: TrainingRequest) -> None:
        if request.dist.nproc_per_node > 1:
            raise UserInputError(
                f"nproc_per_node {request.dist.nproc_per_node} needs training processes of their own: set the "
                "launcher resource's mode to subprocess (or k8s); in_process trains in the step's one process"
            )

    def _run_child(
        self, context: dg.AssetExecutionContext, request: TrainingRequest, argv: list[str]
    ) -> dg.PipesClientCompletedInvocation:
        if self.mode == "k8s":
            return self._run_pod(context, request, argv)
        with tempfile.NamedTemporaryFile(prefix="scanlens-child-", suffix=".err") as scratch:
            error_file = Path(scratch.name)  # outside the work folder: the child's last stderr line
            command = child_command(sys.executable, request, [f"--error-file={error_file}", *argv])
            context.log.info("training in a child process: " + " ".join(command[1:]))
            try:
                return dg.PipesSubprocessClient().run(context=context, command=command, env=_thread_env(request))
            except DagsterPipesExecutionError as error:
                found = re.search(r"failed with code (-?\d+)", str(error))
                if found is None:
                    raise
                code = int(found.group(1))
                raise child_failure(exit_status(code), last_line(error_file), code) from None

    def pod_request(self, request: TrainingRequest, argv: list[str]) -> dict[str, Any]:
        """The arguments of ``PipesK8sClient.run`` (besides the context) for ``argv``: the image, the command
        (``python`` of the image), the namespace and the training pod spec, whose first container reports
        its last error line as the pod's termination message."""
        from assets.deployment import image_name, training_pod_spec

        gpus = self.gpus_per_pod or request.dist.nproc_per_node
        spec = copy.deepcopy(training_pod_spec(gpus))
        spec["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
        return {
            "image": self.image or image_name(),
            "command": child_command("python", request, [f"--error-file={TERMINATION_LOG}", *argv]),
            "namespace": self.namespace or None,
            "base_pod_spec": spec,
        }

    def _run_pod(
        self, context: dg.AssetExecutionContext, request: TrainingRequest, argv: list[str]
    ) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient
        from dagster_k8s.client import DagsterK8sError

        kwargs = self.pod_request(request, argv)
        context.log.info("training in a pod: " + " ".join(kwargs["command"][1:]))
        try:
            return PipesK8sClient().run(context=context, **kwargs)
        except DagsterK8sError as error:
            raise child_failure("failed in its pod", termination_message(str(error)), None) from None
