"""Kubernetes without a cluster: the executor choice, and the pod specs that dagster-k8s itself builds.

Every step of ``train_and_evaluate`` is launched through ``k8s_job_executor``'s own step handler with
the Kubernetes API mocked; the Job it would create is serialised as the API server would receive it
and parsed back into ``kubernetes.client`` models. The run carries the container context that the
Helm chart gives the code location's runs (from ``deploy/k8s/values.yaml``), so the secret, the
volume and the image come from where a cluster would take them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._config import process_config
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s import k8s_job_executor
from dagster_k8s.job import (
    USER_DEFINED_K8S_CONFIG_KEY,
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.pipes import build_pod_body

from assets import deployment
from assets.deployment import (
    DATA_CLAIM,
    DATA_MOUNT,
    DATA_VOLUME,
    EXECUTOR_ENV,
    GPU_POOL,
    GPU_RESOURCE,
    GPUS_PER_STEP_ENV,
    IMAGE_ENV,
    SECRET_KEY,
    SECRET_NAME,
    SHM_MOUNT,
    WORKDIR,
    WORKDIR_ENV,
)
from assets.resources import ScanLensProject, demo_root
from pipeline.deid import SECRET_ENV, load_secret
from pipeline.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "deploy" / "k8s" / "values.yaml"
RELEASE, NAMESPACE = "scanlens", "scanlens"
API = kubernetes.client.ApiClient()


# --- the executor and the environment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, dg.in_process_executor), ("multiprocess", dg.multiprocess_executor), ("k8s", k8s_job_executor)],
)
def test_executor_is_chosen_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: dg.ExecutorDefinition
) -> None:
    if value is None:
        monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    else:
        monkeypatch.setenv(EXECUTOR_ENV, value)
    assert deployment.job_executor() is expected
    assert deployment.default_executor() is (k8s_job_executor if value == "k8s" else None)


@pytest.mark.parametrize(
    ("variable", "value"), [(EXECUTOR_ENV, "kubernetes"), (GPUS_PER_STEP_ENV, "0"), (GPUS_PER_STEP_ENV, "two")]
)
def test_bad_settings_are_user_errors(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserInputError, match=variable):
        deployment.job_executor() if variable == EXECUTOR_ENV else deployment.gpus_per_step()


def test_image_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    with pytest.raises(UserInputError, match=IMAGE_ENV):
        deployment.image_name()
    monkeypatch.setenv(IMAGE_ENV, "registry.example.com/scanlens:1")
    assert deployment.image_name() == "registry.example.com/scanlens:1"


def test_pod_environment_is_what_the_code_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every plain variable of :func:`pod_env` moves the folder the resources read; the secret's
    variable is the one ``pipeline.deid`` reads, and it is only ever a reference to a Secret."""
    env = {e["name"]: e for e in deployment.pod_env()}
    for name, entry in env.items():
        if name != SECRET_ENV:
            monkeypatch.setenv(name, entry["value"])
    assert ScanLensProject().workdir_path == Path(env[WORKDIR_ENV]["value"]) == Path(WORKDIR)
    assert demo_root() == Path(env[deployment.DEMO_ROOT_ENV]["value"])
    from pipeline.models.weights import hub_checkpoint_dir

    assert hub_checkpoint_dir().is_relative_to(env[deployment.TORCH_HOME_ENV]["value"])
    assert env[SECRET_ENV] == {
        "name": SECRET_ENV,
        "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}},
    }
    monkeypatch.setenv(SECRET_ENV, "from-the-secret")
    assert load_secret(None, tmp_path / "secret.key") == b"from-the-secret"
    for path in (WORKDIR, env[deployment.DEMO_ROOT_ENV]["value"], env[deployment.TORCH_HOME_ENV]["value"]):
        assert Path(path).is_relative_to(DATA_MOUNT), f"{path} is not on the shared volume"


def test_tag_key_is_the_one_dagster_k8s_reads() -> None:
    assert deployment.K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY


# --- pod specs rendered by dagster-k8s --------------------------------------------------------------


def _wire(model: Any, kind: str) -> Any:
    """``model`` as the API server would receive it (camelCase JSON), parsed back into a ``kind`` model."""
    wire = json.loads(json.dumps(API.sanitize_for_serialization(model)))
    return API._ApiClient__deserialize(wire, kind)  # type: ignore[attr-defined]


def _gpus(container: kubernetes.client.V1Container) -> str | None:
    resources = container.resources
    requested = {**(resources.requests or {}), **(resources.limits or {})} if resources else {}
    return requested.get(GPU_RESOURCE)


def test_training_pod_spec_makes_a_pipes_pod() -> None:
    """The fragment as ``PipesK8sClient`` uses it (``base_pod_spec``): GPUs, secret, shared volume, /dev/shm."""
    pod = _wire(
        build_pod_body(
            "train-fold-0",
            "registry.example.com/scanlens:1",
            ["scanlens", "train"],
            {},
            None,
            deployment.training_pod_spec(2),
        ),
        "V1Pod",
    )
    (container,) = pod.spec.containers
    assert container.resources.limits[GPU_RESOURCE] == "2"
    assert container.resources.requests["cpu"] == str(2 * deployment.TRAINING_PER_GPU.cpu)
    secret = next(e for e in container.env if e.name == SECRET_ENV)
    assert secret.value is None and secret.value_from.secret_key_ref.name == SECRET_NAME
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes[mounts[DATA_MOUNT]].persistent_volume_claim.claim_name == DATA_CLAIM
    assert volumes[mounts[SHM_MOUNT]].empty_dir.medium == "Memory"
    assert [t.key for t in pod.spec.tolerations] == [GPU_RESOURCE]
    with pytest.raises(UserInputError):
        deployment.training_pod_spec(0)


def test_gpu_count_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GPUS_PER_STEP_ENV, "4")
    tags = {k: json.dumps(v) for k, v in deployment.gpu_step_tags().items()}
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="scanlens:test"), ["dagster"], "fold-step", get_user_defined_k8s_config(tags)
    )
    (container,) = _wire(job, "V1Job").spec.template.spec.containers
    assert _gpus(container) == "4"
    assert container.resources.requests["memory"] == f"{4 * deployment.TRAINING_PER_GPU.memory_gib}Gi"


@pytest.fixture(scope="module")
def k8s_definitions() -> Iterator[ModuleType]:
    """``assets.definitions`` as a code server with ``SCANLENS_EXECUTOR=k8s`` loads it (then as before)."""
    import assets.definitions

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(EXECUTOR_ENV, "k8s")
        try:
            yield importlib.reload(assets.definitions)
        finally:
            patch.delenv(EXECUTOR_ENV)
            importlib.reload(assets.definitions)


def test_definitions_load_with_the_k8s_job_executor(k8s_definitions: ModuleType) -> None:
    defs = k8s_definitions.defs
    dg.Definitions.validate_loadable(defs)
    for job in ("train_and_evaluate", "scanlens_demo"):
        assert defs.resolve_job_def(job).executor_def is k8s_job_executor
    assert defs.resolve_implicit_global_asset_job_def().executor_def is k8s_job_executor  # backfills, UI launches
    assert defs.resolve_job_def("score_new_scans").executor_def is dg.in_process_executor  # CPU, in the run pod


def _values_deployment() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())["dagster-user-deployments"]["deployments"][0]


def _chart_container_context(dep: dict[str, Any]) -> dict[str, Any]:
    """What the chart (template ``dagsterUserDeployments.k8sContainerContext``) hands the code server,
    which puts it on every run it launches (``includeConfigInLaunchedRuns``)."""
    return {
        "k8s": {
            "image_pull_policy": dep["image"]["pullPolicy"],
            "env_config_maps": [f"{RELEASE}-dagster-user-deployments-{dep['name']}-user-env"],
            "volume_mounts": dep["volumeMounts"],
            "volumes": dep["volumes"],
            "resources": dep["resources"],
            "namespace": NAMESPACE,
            "service_account_name": f"{RELEASE}-dagster-user-deployments-user-deployments",
            "env": dep["env"],
            "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
        }
    }


@pytest.fixture(scope="module")
def k8s_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    """An instance with the K8sRunLauncher as the chart configures it, pointed at a cluster that is never called."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "c", "user": {"token": "unused"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c", "namespace": NAMESPACE}}],
            }
        )
    )
    launcher = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {
            "load_incluster_config": False,
            "kubeconfig_file": str(kubeconfig),
            "job_namespace": NAMESPACE,
            "service_account_name": f"{RELEASE}-dagster",
            "instance_config_map": f"{RELEASE}-dagster-instance",
            "postgres_password_secret": "dagster-postgresql-secret",
            "dagster_home": "/opt/dagster/dagster_home",
        },
    }
    with instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield instance


def _render_steps(
    instance: dg.DagsterInstance, job: ReconstructableJob, tags: dict[str, str], run_config: dict[str, Any]
) -> dict[str, kubernetes.client.V1Job]:
    """The Kubernetes Job of every step of one run of ``job``, as ``k8s_job_executor`` would create it."""
    dep = _values_deployment()
    origin = job.get_python_origin()
    origin = origin._replace(
        repository_origin=origin.repository_origin._replace(
            container_context=_chart_container_context(dep),
            container_image=f"{dep['image']['repository']}:{dep['image']['tag']}",  # $DAGSTER_CURRENT_IMAGE
        )
    )
    job_def = job.get_definition()
    run = create_run_for_test(instance, job_name=job_def.name, tags=tags, run_config=run_config, job_code_origin=origin)
    plan = create_execution_plan(job, run_config=run_config, tags=tags, instance_ref=instance.get_ref())
    config = process_config(job_def.executor_def.config_schema.config_type, {})
    assert config.success, config.errors
    with mock.patch("kubernetes.client.BatchV1Api") as batch_api:
        executor = job_def.executor_def.executor_creation_fn(  # type: ignore[misc]
            InitExecutorContext(
                job=job, executor_def=job_def.executor_def, executor_config=config.value, instance=instance
            )
        )
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=job, dagster_run=run, instance=instance, execution_plan=plan, raise_on_error=True),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    for step in plan.steps:
        context = StepHandlerContext(
            instance=instance,
            plan_context=plan_context,
            steps=plan.steps,
            execute_step_args=ExecuteStepArgs(origin, run.run_id, [step.key]),
            dagster_run=run,
        )
        list(executor._step_handler.launch_step(context))  # type: ignore[attr-defined]
    created = batch_api.return_value.create_namespaced_job.call_args_list
    assert {call.kwargs["namespace"] for call in created} == {NAMESPACE}
    jobs = [_wire(call.kwargs["body"], "V1Job") for call in created]
    return {job.metadata.labels["dagster/op"]: job for job in jobs}


def _check_pod(job: kubernetes.client.V1Job, image: str) -> kubernetes.client.V1Container:
    """The secret as a reference, the shared volume at one path, the user-code image; nothing twice."""
    spec = job.spec.template.spec
    (container,) = spec.containers
    assert container.image == image
    names = [e.name for e in container.env]
    assert len(names) == len(set(names)), names
    secret = next(e for e in container.env if e.name == SECRET_ENV)
    assert secret.value is None
    assert (secret.value_from.secret_key_ref.name, secret.value_from.secret_key_ref.key) == (SECRET_NAME, SECRET_KEY)
    assert {e.name: e.value for e in container.env}[WORKDIR_ENV] == WORKDIR
    assert [v.name for v in spec.volumes].count(DATA_VOLUME) == 1
    claim = next(v for v in spec.volumes if v.name == DATA_VOLUME).persistent_volume_claim
    assert claim.claim_name == DATA_CLAIM
    assert [(m.name, m.mount_path) for m in container.volume_mounts if m.name == DATA_VOLUME] == [
        (DATA_VOLUME, DATA_MOUNT)
    ]
    return container


def test_step_pods_of_train_and_evaluate_over_five_folds(
    k8s_definitions: ModuleType, k8s_instance: dg.DagsterInstance, record_property: Any
) -> None:
    """One run over ``fold_0``...``fold_4`` (the schedule's and ``make demo``'s launch), then the five
    one-fold runs of a ``fold_models`` backfill (one run per fold, so folds train in parallel up to
    the ``gpu`` pool's limit). Training steps get the GPUs, no other step gets any."""
    assert len(k8s_definitions.FOLDS.get_partition_keys()) == 5
    dep = _values_deployment()
    image = f"{dep['image']['repository']}:{dep['image']['tag']}"
    gpus = {e["name"]: e.get("value") for e in dep["env"]}[GPUS_PER_STEP_ENV]
    repo = ReconstructableRepository.for_module("assets.definitions", "defs", working_directory=str(REPO))
    defs = k8s_definitions.defs
    pools = {n.name: n.pool for n in defs.resolve_job_def("train_and_evaluate").graph.node_defs}

    one_run = _render_steps(
        k8s_instance,
        repo.get_reconstructable_job("train_and_evaluate"),
        k8s_definitions.FOLD_RANGE_TAGS,
        k8s_definitions.profile_run_config("demo", k8s_definitions.EVALUATION_JOB_ASSETS),
    )
    assert set(one_run) == set(pools)  # every step of the job was rendered
    for op, job in one_run.items():
        container = _check_pod(job, image)
        assert _gpus(container) == (gpus if pools[op] == GPU_POOL else None), op
    assert [op for op, pool in pools.items() if pool == GPU_POOL] == ["fold_models"]

    backfill = repo.get_reconstructable_job(defs.resolve_implicit_global_asset_job_def().name).get_subset(
        asset_selection={dg.AssetKey("fold_models")}
    )
    fold_pods = []
    for fold in k8s_definitions.FOLDS.get_partition_keys():
        (job,) = _render_steps(
            k8s_instance,
            backfill,
            {"dagster/partition": fold},
            k8s_definitions.profile_run_config("demo", ["fold_models"]),
        ).values()
        fold_pods.append(_check_pod(job, image))
    assert [_gpus(c) for c in fold_pods] == [gpus] * 5
    record_property("fold_step_resources", json.dumps(API.sanitize_for_serialization(fold_pods[0].resources)))
