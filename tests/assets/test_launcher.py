"""The training launcher: trained_model and fold_models train in a Dagster Pipes child process (the
default), in a pod, or in the step's own process; a failed or killed child fails the step with its
last line, and a rerun resumes from the checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest

from assets.evaluation import FOLDS, CVFoldsConfig, cv_folds, fold_models
from assets.launcher import (
    CHILD_MODULE,
    last_line,
    TERMINATION_LOG,
    TrainingLauncher,
    TrainingRequest,
    child_command,
    termination_message,
)
from assets.pipes_child import LineTap
from assets.resources import ScanLensProject
from assets.training import ModelInputConfig, TrainedModelConfig, preprocessed_scans, trained_model
from pipeline.errors import UserInputError
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.distributed import DistributedSettings
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.train import TrainConfig

TINY = {"batch_size": 4, "weights": "", "input_size": 16, "augment": False}


def _resources(workdir: Path, mode: str = "subprocess") -> dict[str, Any]:
    return {"project": ScanLensProject(workdir=str(workdir)), "launcher": TrainingLauncher(mode=mode)}  # type: ignore[arg-type]


def _train(
    workdir: Path, instance: dg.DagsterInstance, mode: str = "subprocess", **config: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [preprocessed_scans, trained_model],
        partition_key="2d",
        instance=instance,
        resources=_resources(workdir, mode),
        run_config=dg.RunConfig(
            ops={
                "preprocessed_scans": ModelInputConfig(input_size=16),
                "trained_model": TrainedModelConfig(**{**TINY, **config}),
            }
        ),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def _logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id) if entry.dagster_event is None]


def _failure(result: dg.ExecuteInProcessResult, node: str) -> dg.Failure | Any:
    (event,) = [e for e in result.all_node_events if e.is_step_failure and e.node_name == node]
    return event.step_failure_data.user_failure_data


@pytest.fixture
def workdir(tiny_workdir: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_workdir, tmp_path / "w")
    return tmp_path / "w"


def test_a_child_error_fails_the_step_with_its_error_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [trained_model],
            partition_key="2d",
            instance=instance,
            resources=_resources(empty),
            run_config=dg.RunConfig(ops={"trained_model": TrainedModelConfig(**TINY)}),
            raise_on_error=False,
        )
        logs = _logs(instance, result)
    assert not result.success
    failure = _failure(result, "trained_model")
    assert failure.description.startswith("the training process exited with code 2: scanlens: error: ")
    assert failure.metadata["exit_code"].value == 2
    assert any(line.startswith("scanlens: error: ") for line in logs)  # also in the step's log


def _training_processes(rank: str | None = None) -> list[psutil.Process]:
    """This test's training children (``python -m assets.pipes_child``, not torchrun itself), of ``rank`` when given."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command, env = child.cmdline(), child.environ()
        except psutil.Error:
            continue
        worker = CHILD_MODULE in command and "torch.distributed.run" not in command
        if worker and (rank is None or env.get("RANK") == rank):
            found.append(child)
    return found


def _kill_after_first_checkpoint(workdir: Path, train: Any, rank: str | None = None) -> dg.ExecuteInProcessResult:
    """Run ``train()`` in a thread and SIGKILL its training process (of ``rank``) once a checkpoint exists."""
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    run = threading.Thread(target=lambda: outcome.update(result=train()))
    run.start()
    deadline = time.monotonic() + 300
    while not list(workdir.glob("models/*/checkpoint.pt")) and run.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    (victim,) = _training_processes(rank)
    assert victim.pid != os.getpid()
    os.kill(victim.pid, signal.SIGKILL)  # after the first epoch's checkpoint, before the third epoch ends
    run.join()
    return outcome["result"]


def _model_id(logs: list[str]) -> str:
    return next(line.split()[1] for line in logs if line.startswith("training resnet50-"))


@pytest.mark.slow
def test_a_killed_child_fails_the_step_and_a_rerun_resumes_from_its_checkpoint(workdir: Path) -> None:
    with dg.instance_for_test() as instance:
        first = _kill_after_first_checkpoint(workdir, lambda: _train(workdir, instance, epochs=3))
        assert not first.success
        failure = _failure(first, "trained_model")
        assert failure.description.startswith("the training process was killed by SIGKILL (its last line: ")
        model_id = _model_id(_logs(instance, first))

        again = _train(workdir, instance, epochs=3)
        assert again.success
        meta = _metadata(again, "trained_model")
        logs = _logs(instance, again)
    assert any(line.startswith(f"resuming {model_id} after epoch ") for line in logs)
    assert any(line.startswith("epoch 3/3: train loss") for line in logs)  # the child's log, as it happened
    assert meta["model_id"] == model_id and [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    assert meta["model_card"]["dims"] == 2 and meta["epochs_run"] == 3 and meta["model_card"]["model_id"] == model_id
    assert "| 3 |" in meta["learning_curves"] and "data:image/png;base64," in meta["learning_curves"]
    assert Path(meta["model_dir"], "weights.pt").is_file()
    assert any("training in a child process" in line and CHILD_MODULE in line for line in logs)


@pytest.mark.slow
def test_under_torchrun_rank_0_reports_and_a_dead_rank_fails_the_step(workdir: Path) -> None:
    with dg.instance_for_test() as instance:
        first = _kill_after_first_checkpoint(
            workdir, lambda: _train(workdir, instance, epochs=3, nproc_per_node=2), rank="1"
        )
        assert not first.success
        failure = _failure(first, "trained_model").description
        # rank 0 says it lost contact, unless torchrun stops it before it can (then its last line is shown)
        assert failure.startswith("the training process exited with code 1") and (
            "scanlens: error: lost contact" in failure or "its last line: " in failure
        )
        model_id = _model_id(_logs(instance, first))

        again = _train(workdir, instance, epochs=3, nproc_per_node=2)
        assert again.success
        meta = _metadata(again, "trained_model")
        logs = _logs(instance, again)
    assert any(line.startswith(f"resuming {model_id} after epoch ") for line in logs)
    assert meta["model_id"] == model_id and meta["model_card"]["distributed"]["world_size"] == 2
    assert sum(line.startswith("epoch 3/3: ") for line in logs) == 1  # rank 0 alone talks to Dagster
    assert any("torch.distributed.run" in line and "--nproc-per-node=2" in line for line in logs)


@pytest.mark.slow
def test_fold_models_train_one_child_per_fold(workdir: Path) -> None:
    keys = FOLDS.get_partition_keys()[:2]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [cv_folds, fold_models],
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]},
            resources=_resources(workdir),
            run_config=dg.RunConfig(
                ops={"cv_folds": CVFoldsConfig(), "fold_models": TrainedModelConfig(epochs=1, **TINY)}
            ),
        )
        assert result.success
        logs = _logs(instance, result)
    events = result.asset_materializations_for_node("fold_models")
    assert sorted(e.partition for e in events) == keys
    rows = events[0].metadata["folds"].value
    assert [row["fold"] for row in rows] == [0, 1] and all(row["predicted"] for row in rows)
    assert all(row["oof_scans"] > 0 for row in rows) and rows[0]["test_scans"] == rows[1]["test_scans"] > 0
    assert events[0].metadata["model_ids"].value == ", ".join(row["model_id"] for row in rows)
    assert sum("training in a child process" in line for line in logs) == 2
    assert (workdir / "evaluation" / "fold_1" / "predictions.parquet").is_file()


def test_in_process_mode_refuses_several_processes(tmp_path: Path) -> None:
    result = dg.materialize(
        [trained_model],
        partition_key="2d",
        resources=_resources(tmp_path, "in_process"),
        run_config=dg.RunConfig(ops={"trained_model": TrainedModelConfig(nproc_per_node=2, **TINY)}),
        raise_on_error=False,
    )
    assert not result.success
    assert "set the launcher resource's mode to subprocess" in _failure(result, "trained_model").description


def _request(nproc: int = 1) -> TrainingRequest:
    return TrainingRequest(
        Path("/data/w"),
        "3d",
        PreprocessSettings(input_size=16),
        TrainConfig(epochs=2, class_weighting=False),
        AugmentConfig(enabled=False),
        DistributedSettings(nproc_per_node=nproc),
        60.0,
    )


def test_the_child_command_line() -> None:
    request = _request()
    assert request.argv() == [
        "--lock-timeout=60.0",
        "train",
        "--workdir=/data/w",
        "--dims=3d",
        "--input-size=16",
        "--epochs=2",
        "--no-class-weighting",
        "--no-augment",
        "--resume",
    ]
    assert request.argv(fold=3)[-1] == "--fold=3" and "--resume" not in request.argv(fold=3)
    assert child_command("py", request, ["x"]) == ["py", "-m", CHILD_MODULE, "x"]
    under_torchrun = child_command("py", _request(4), ["x"])
    assert under_torchrun[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc-per-node=4" in under_torchrun
    assert under_torchrun[-3:] == ["-m", CHILD_MODULE, "x"]


def test_the_k8s_mode_runs_the_same_command_in_a_training_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_k8s.pipes import build_pod_body

    monkeypatch.setenv("SCANLENS_IMAGE", "registry.example/scanlens:1")
    request = _request(2)
    run = TrainingLauncher(mode="k8s", namespace="ml").pod_request(request, request.argv())
    assert run["image"] == "registry.example/scanlens:1" and run["namespace"] == "ml"
    assert run["command"] == child_command("python", request, [f"--error-file={TERMINATION_LOG}", *request.argv()])
    pod = build_pod_body("p", run["image"], run["command"], {}, None, run["base_pod_spec"])  # what PipesK8sClient does
    container = pod.spec.containers[0]
    assert container.command == run["command"] and container.image == "registry.example/scanlens:1"
    assert container.resources.limits["nvidia.com/gpu"] == "2"  # one GPU per training process
    assert container.termination_message_policy == "FallbackToLogsOnError"
    assert (
        TrainingLauncher(mode="k8s", gpus_per_pod=4).pod_request(request, [])["base_pod_spec"]["containers"][0][
            "resources"
        ]["limits"]["nvidia.com/gpu"]
        == "4"
    )
    monkeypatch.delenv("SCANLENS_IMAGE")
    with pytest.raises(UserInputError, match="SCANLENS_IMAGE"):
        TrainingLauncher(mode="k8s").pod_request(request, [])


def test_the_line_tap_passes_everything_on_and_sees_whole_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    seen: list[str] = []
    tap = LineTap(sys.stdout, seen.append)
    tap.write("INFO a: one\nscanlens: err")
    tap.write("or: bad\n\n")
    tap.flush()
    assert capsys.readouterr().out == "INFO a: one\nscanlens: error: bad\n\n"
    assert seen == ["INFO a: one", "scanlens: error: bad"]


def test_a_pod_failure_shows_the_termination_message() -> None:
    text = 'Pod p terminated but some containers exited with errors:\nContainer "c" failed with message: "INFO x\nscanlens: error: no labelled scans". Last 100 log lines: "..."'
    assert termination_message(text) == "scanlens: error: no labelled scans"
    assert termination_message('Container "c" failed with message: "None". Last 100 log lines: "x"') is None
    assert termination_message("Pod p was unexpectedly killed") is None


def test_the_step_shows_the_last_complete_line(tmp_path: Path) -> None:
    """The child appends each stderr line; a line it was killed in the middle of writing is left out."""
    error_file = tmp_path / "child.err"
    error_file.write_text("INFO pipeline.train.trainer: epoch 1/3: ...\nscanlens: error: bad input\nINFO pipel")
    assert last_line(error_file) == "scanlens: error: bad input"
    error_file.write_text("")
    assert last_line(error_file) is None and last_line(tmp_path / "missing.err") is None
