"""The jobs that carry a profile: their run config is valid, and `make demo` passes it (`dagster job
execute` gives a partitioned job an empty run config)."""

from __future__ import annotations

import json
import re

import dagster as dg
import pytest

from assets.definitions import JOB_PROFILE_ASSETS, defs, main
from tests.conftest import REPO


@pytest.mark.parametrize("job", list(JOB_PROFILE_ASSETS))
def test_each_profile_gives_a_valid_run_config(job: str, capsys: pytest.CaptureFixture[str]) -> None:
    job_def = defs.resolve_job_def(job)
    for profile in ("demo", "default"):
        assert main([job, profile]) == 0
        resolved = dg.validate_run_config(job_def, json.loads(capsys.readouterr().out))
        model = "trained_model" if job == "scanlens_demo" else "fold_models"
        epochs = resolved["ops"][model]["config"]["epochs"]
        assert epochs == (8 if profile == "demo" else 30)


def test_make_demo_passes_the_demo_profile_to_every_job() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    written = dict(re.findall(r"python -m assets\.definitions (\S+) demo(?: --no-baseline-gate)? > (\S+)", recipe))
    assert set(written) == set(JOB_PROFILE_ASSETS)
    executes = [line for line in recipe.splitlines() if "dagster job execute" in line]
    assert len(executes) == 2  # scanlens_demo for 3d, train_and_evaluate over the fold range
    for line in executes:
        job = re.search(r"-j (\S+)", line)
        assert job is not None and f"-c {written[job.group(1)]}" in line


def test_an_unknown_job_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope", "demo"]) == 2
    assert "usage" in capsys.readouterr().err


def test_only_make_demo_switches_the_baseline_rule_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train_and_evaluate", "demo", "--no-baseline-gate"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ops"]["model_version"] == {"config": {"require_beats_baseline": False}}
    assert main(["scanlens_demo", "demo", "--no-baseline-gate"]) == 2  # no gate in that job
    assert main(["train_and_evaluate", "demo", "--other"]) == 2
    capsys.readouterr()
    # launches from the UI, the schedule and the sensors keep the rule
    job_config = defs.resolve_job_def("train_and_evaluate").get_run_config_for_partition_key("fold_0")
    assert "fold_models" in job_config["ops"] and "model_version" not in job_config["ops"]
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert recipe.count("--no-baseline-gate") == 1 and "train_and_evaluate demo --no-baseline-gate" in recipe
