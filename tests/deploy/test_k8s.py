"""``deploy/k8s/``: the Helm values, the volume claim and the Dockerfile agree with the code that reads them.

Names and paths come from :mod:`assets.deployment`, :mod:`assets.resources` and ``pipeline.deid``;
nothing is spelled twice here. What the chart and dagster-k8s make of these values (the step pods)
is tested in ``tests/assets/test_deployment.py``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from assets import deployment
from assets.deployment import (
    DEMO_ROOT_ENV,
    EXECUTOR_ENV,
    GPU_POOL,
    GPUS_PER_STEP_ENV,
    IMAGE_ENV,
    K8S,
    TORCH_HOME_ENV,
    WORKDIR_ENV,
)
from pipeline.deid import SECRET_ENV

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "k8s"


def _values() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "values.yaml").read_text())


def _user_deployment() -> dict[str, Any]:
    (dep,) = _values()["dagster-user-deployments"]["deployments"]
    return dep


def _pin(package: str) -> str:
    """The version constraints.txt pins for ``package``, without a local label (``2.13.0+cpu`` -> ``2.13.0``)."""
    pins = {
        m.group(1)
        for m in re.finditer(rf"^{re.escape(package)}==([^+\s]+)", (REPO / "constraints.txt").read_text(), re.M)
    }
    assert len(pins) == 1, f"constraints.txt pins {package} as {pins}"
    return pins.pop()


def test_code_location_runs_this_repository_module() -> None:
    dep = _user_deployment()
    values = _values()
    assert values["dagster-user-deployments"]["enabled"] is True
    module = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"]
    assert dep["dagsterApiGrpcArgs"] == ["-m", module]
    # env, volumes and resources reach the run and step pods only through this switch
    assert dep["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is True
    assert "postgresqlPassword" not in values["postgresql"]  # given with --set at install time


def test_environment_is_what_the_code_reads() -> None:
    """Every variable of :func:`assets.deployment.pod_env` (work folder, demo root, torch cache, the
    secret as a Secret reference) is set exactly so; the executor is Kubernetes; the image named for
    pods a step launches is the deployment's image."""
    dep = _user_deployment()
    env = {e["name"]: e for e in dep["env"]}
    assert len(env) == len(dep["env"]), "a variable is set twice"
    for expected in deployment.pod_env():
        assert env[expected["name"]] == expected
    assert {WORKDIR_ENV, DEMO_ROOT_ENV, TORCH_HOME_ENV, SECRET_ENV} <= set(env)
    assert "value" not in env[SECRET_ENV]
    assert env[EXECUTOR_ENV]["value"] == K8S
    assert int(env[GPUS_PER_STEP_ENV]["value"]) >= 1
    assert env[IMAGE_ENV]["value"] == f"{dep['image']['repository']}:{dep['image']['tag']}"


def test_shared_volume_is_the_claim_at_one_path() -> None:
    dep = _user_deployment()
    assert dep["volumes"] == [deployment.data_volume()]
    assert dep["volumeMounts"] == [deployment.data_volume_mount()]
    claim = yaml.safe_load((K8S_DIR / "pvc.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == deployment.DATA_CLAIM
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_gpu_pool_limit() -> None:
    """Pools are on, a step waits for its slot before its pod exists, and the default limit is the
    ``gpu`` pool's: it is the only pool of the code location."""
    from assets.definitions import defs

    concurrency = _values()["concurrency"]
    assert concurrency["enabled"] is True
    assert concurrency["pools"]["granularity"] == "op"
    limit = concurrency["pools"]["defaultLimit"]
    assert isinstance(limit, int) and limit >= 1
    pools = {node.pool for node in defs.resolve_implicit_global_asset_job_def().graph.node_defs} - {None}
    assert pools == {GPU_POOL}


def test_dockerfile_pins_torch_as_constraints_do() -> None:
    """python:3.11-slim, torch at the constraints' version, and only its wheel index depends on the variant."""
    text = (K8S_DIR / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert args["TORCH_VERSION"] == _pin("torch")
    assert args["TORCH_VARIANT"] == "cpu"
    runs = [line.removeprefix("RUN ") for line in text.replace("\\\n", " ").splitlines() if line.startswith("RUN ")]
    commands = [" ".join(part.split()) for run in runs for part in run.split("&&")]
    installs = [c for c in commands if c.startswith("pip install")]
    assert len(installs) == 2 and all("-c /tmp/constraints.txt" in i for i in installs), installs
    torch_install, project_install = installs
    assert '"https://download.pytorch.org/whl/${TORCH_VARIANT}"' in torch_install
    assert '"torch==${TORCH_VERSION}+${TORCH_VARIANT}"' in torch_install
    assert "TORCH" not in project_install
    assert "grep -v '^torch==' constraints.txt > /tmp/constraints.txt" in commands  # the pin moves to the ARG


def test_docs_install_the_chart_of_the_pinned_dagster() -> None:
    docs = (REPO / "docs" / "deploy.md").read_text()
    versions = set(re.findall(r"--version (\S+)", docs + (K8S_DIR / "values.yaml").read_text()))
    assert versions == {_pin("dagster")}
    for variable in (EXECUTOR_ENV, GPUS_PER_STEP_ENV, IMAGE_ENV, SECRET_ENV, WORKDIR_ENV):
        assert variable in docs
