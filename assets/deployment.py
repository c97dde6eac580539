"""How ScanLens runs on Kubernetes: the executor of the training jobs, each step's pod resources
(the ``dagster-k8s/config`` op tags), and the training pod of a GPU step.

One ReadWriteMany claim (:data:`DATA_CLAIM`) is mounted at :data:`DATA_MOUNT` in every pod: the work
folder (:data:`WORKDIR`), the demo root and the torch hub cache live on it, at the same path
everywhere. The pseudonymisation key comes from a Kubernetes Secret (:data:`SECRET_NAME`,
key :data:`SECRET_KEY`) as ``$SCANLENS_SECRET``, never from a manifest or the image.

Read when the code location loads (they shape the job definitions, so the code server, run pods and
step pods must see the same values: set them in the user deployment's ``env``):
``$SCANLENS_EXECUTOR`` (``in_process``, the default, ``multiprocess`` or ``k8s``) and
``$SCANLENS_GPUS_PER_STEP`` (default 1). Read when used: ``$SCANLENS_IMAGE`` (the user-code image,
for pods that a step launches itself). ``deploy/k8s/values.yaml`` sets all of them; see ``docs/deploy.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dagster as dg

from pipeline.deid import SECRET_ENV
from pipeline.errors import UserInputError

EXECUTOR_ENV = "SCANLENS_EXECUTOR"
GPUS_PER_STEP_ENV = "SCANLENS_GPUS_PER_STEP"
IMAGE_ENV = "SCANLENS_IMAGE"
#: What :class:`assets.resources.ScanLensProject` reads for the work folder and the demo root.
WORKDIR_ENV = "SCANLENS_WORKDIR"
DEMO_ROOT_ENV = "SCANLENS_DEMO_ROOT"
#: Where ``pipeline.models.weights`` looks for the ImageNet ResNet-50 files (``$TORCH_HOME/hub/checkpoints``).
TORCH_HOME_ENV = "TORCH_HOME"

IN_PROCESS, MULTIPROCESS, K8S = "in_process", "multiprocess", "k8s"
EXECUTORS = (IN_PROCESS, MULTIPROCESS, K8S)

#: The concurrency pool of the steps that train (``pool=`` on ``trained_model`` and ``fold_models``); its
#: limit (``concurrency.pools`` in the instance) is the number of GPUs divided by the GPUs per step.
GPU_POOL = "gpu"
#: The extended resource that NVIDIA's device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
#: The op tag that dagster-k8s reads (``dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY``; not imported so
#: that loading the code location does not import the Kubernetes client unless it runs there).
K8S_CONFIG_TAG = "dagster-k8s/config"

DATA_VOLUME = "scanlens-data"
DATA_CLAIM = "scanlens-data"
DATA_MOUNT = "/scanlens"
WORKDIR = "/scanlens/work"
DEMO_ROOT = "/scanlens/demo"
TORCH_HOME = "/scanlens/torch"
SECRET_NAME = "scanlens-secret"
SECRET_KEY = "pseudonym-key"
#: Shared memory of a training pod: DataLoader workers and NCCL between GPUs of one pod use /dev/shm,
#: which container runtimes cap at 64 MiB.
SHM_VOLUME = "dshm"
SHM_MOUNT = "/dev/shm"


@dataclass(frozen=True)
class StepResources:
    """CPU (cores) and memory (GiB) that a step's container requests. Memory is also its limit (a step
    that outgrows it is OOM-killed, not its neighbours); CPU has no limit (no throttling)."""

    cpu: int
    memory_gib: int

    def times(self, n: int) -> StepResources:
        return StepResources(cpu=self.cpu * n, memory_gib=self.memory_gib * n)

    def requirements(self) -> dict[str, dict[str, str]]:
        """Kubernetes ``ResourceRequirements`` (quantities as strings)."""
        memory = f"{self.memory_gib}Gi"
        return {"requests": {"cpu": str(self.cpu), "memory": memory}, "limits": {"memory": memory}}


INGEST = StepResources(cpu=4, memory_gib=8)  # one isolated reader process per core
PREPROCESS = StepResources(cpu=4, memory_gib=8)
EVALUATE = StepResources(cpu=2, memory_gib=4)  # folds, pooled statistics and bootstrap
#: A training pod's CPU and memory per GPU: DataLoader workers and the host side of one training process.
TRAINING_PER_GPU = StepResources(cpu=4, memory_gib=16)


def executor_name() -> str:
    """``$SCANLENS_EXECUTOR``, validated; ``in_process`` when unset."""
    name = os.environ.get(EXECUTOR_ENV, "").strip() or IN_PROCESS
    if name not in EXECUTORS:
        raise UserInputError(f"${EXECUTOR_ENV} must be one of {', '.join(EXECUTORS)}, not {name!r}")
    return name


def job_executor() -> dg.ExecutorDefinition:
    """The executor of the jobs that train (``scanlens_demo``, ``train_and_evaluate``): one process
    (the default), one process per step, or one Kubernetes Job per step (``k8s_job_executor``, which
    gives each step the pod its ``dagster-k8s/config`` tag asks for)."""
    name = executor_name()
    if name == K8S:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return dg.multiprocess_executor if name == MULTIPROCESS else dg.in_process_executor


def default_executor() -> dg.ExecutorDefinition | None:
    """The executor of asset launches outside a job (materialise from the UI, backfills): the
    Kubernetes one under ``k8s``, so that a backfill of ``fold_models`` gets GPU pods; else Dagster's
    default."""
    return job_executor() if executor_name() == K8S else None


def gpus_per_step() -> int:
    """``$SCANLENS_GPUS_PER_STEP``: GPUs of one training pod (default 1). Training uses all of them
    (one worker process per GPU), so it must agree with the training's ``nproc_per_node``."""
    raw = os.environ.get(GPUS_PER_STEP_ENV, "").strip() or "1"
    try:
        gpus = int(raw)
    except ValueError:
        raise UserInputError(f"${GPUS_PER_STEP_ENV} must be a whole number of GPUs, not {raw!r}") from None
    if gpus < 1:
        raise UserInputError(f"${GPUS_PER_STEP_ENV} must be at least 1, not {gpus}")
    return gpus


def image_name() -> str:
    """``$SCANLENS_IMAGE``: the user-code image, for pods that a step launches itself."""
    image = os.environ.get(IMAGE_ENV, "").strip()
    if not image:
        raise UserInputError(f"${IMAGE_ENV} is not set: it names the ScanLens image that training pods run")
    return image


def pod_env() -> list[dict[str, Any]]:
    """The environment every ScanLens pod needs: the work folder, the demo root and the torch hub cache
    on the shared volume, and the secret from its Kubernetes Secret (never a literal value)."""
    return [
        {"name": WORKDIR_ENV, "value": WORKDIR},
        {"name": DEMO_ROOT_ENV, "value": DEMO_ROOT},
        {"name": TORCH_HOME_ENV, "value": TORCH_HOME},
        {"name": SECRET_ENV, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}},
    ]


def data_volume() -> dict[str, Any]:
    """The ReadWriteMany claim that holds the work folder (``deploy/k8s/pvc.yaml``)."""
    return {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": DATA_CLAIM}}


def data_volume_mount() -> dict[str, Any]:
    return {"name": DATA_VOLUME, "mountPath": DATA_MOUNT}


def training_pod_spec(gpus: int) -> dict[str, Any]:
    """The pod spec fragment (Kubernetes ``PodSpec`` fields, camelCase) of a pod that trains on ``gpus``
    GPUs: its first container requests the GPUs, CPU and memory in proportion, has :func:`pod_env` and
    the shared volume at :data:`DATA_MOUNT`; the pod tolerates GPU nodes' taint and has a RAM-backed
    ``/dev/shm``. No image and no command: the step's own image and command apply (``dagster-k8s``),
    or the caller sets them (``PipesK8sClient.run(base_pod_spec=...)``)."""
    if gpus < 1:
        raise UserInputError(f"a training pod needs at least one GPU, not {gpus}")
    resources = TRAINING_PER_GPU.times(gpus).requirements()
    resources["limits"][GPU_RESOURCE] = str(gpus)
    return {
        "containers": [
            {
                "resources": resources,
                "env": pod_env(),
                "volumeMounts": [data_volume_mount(), {"name": SHM_VOLUME, "mountPath": SHM_MOUNT}],
            }
        ],
        "volumes": [data_volume(), {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}],
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    }


def gpu_step_tags(gpus: int | None = None) -> dict[str, Any]:
    """Op tags of a step that trains: its pod is :func:`training_pod_spec` with ``gpus`` GPUs
    (default :func:`gpus_per_step`, read when the code location loads)."""
    spec = training_pod_spec(gpus_per_step() if gpus is None else gpus)
    (container,) = spec.pop("containers")
    return {K8S_CONFIG_TAG: {"container_config": container, "pod_spec_config": spec}}


def cpu_step_tags(resources: StepResources) -> dict[str, Any]:
    """Op tags of a step that needs CPU and memory only. Its environment and volume come from the
    user deployment (Helm values), like every pod of the code location."""
    return {K8S_CONFIG_TAG: {"container_config": {"resources": resources.requirements()}}}
