"""The listener's service definitions (``deploy/systemd/``, ``deploy/k8s/listener.yaml``) parse, start the
real ``scanlens listen`` command line, and agree with the code (secret, volume, shutdown grace)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from assets.deployment import DATA_CLAIM, DATA_MOUNT, SECRET_KEY, SECRET_NAME
from pipeline.cli import _parser
from pipeline.deid import SECRET_ENV
from pipeline.pacs.listener import ListenerSettings

REPO = Path(__file__).resolve().parents[2]
API = kubernetes.client.ApiClient()


def _listen_args(argv: list[str]) -> Any:
    assert Path(argv[0]).name == "scanlens"
    args = _parser().parse_args(argv[1:])  # argparse exits (SystemExit) on an unknown flag
    assert args.command == "listen"
    return args


def test_the_systemd_unit_runs_the_listener_with_its_environment() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "systemd" / "scanlens-listener.service")
    service = unit["Service"]
    env = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "systemd" / "listener.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert SECRET_ENV in env
    command = service["ExecStart"]
    for name, value in env.items():  # systemd substitutes ${VAR} from the EnvironmentFile
        command = command.replace("${" + name + "}", value)
    assert "${" not in command
    args = _listen_args(shlex.split(command))
    assert args.inbox == Path(env["SCANLENS_INBOX"]) and args.allow == env["SCANLENS_ALLOW"]
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > ListenerSettings().shutdown_grace
    assert env["SCANLENS_INBOX"] in service["ReadWritePaths"]


def test_the_kubernetes_deployment_and_service_parse_and_agree() -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "listener.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in docs}
    deployment = API._ApiClient__deserialize(kinds["Deployment"], "V1Deployment")  # type: ignore[attr-defined]
    service = API._ApiClient__deserialize(kinds["Service"], "V1Service")  # type: ignore[attr-defined]
    pod = deployment.spec.template.spec
    (container,) = pod.containers
    args = _listen_args(container.command)
    assert str(args.inbox).startswith(DATA_MOUNT + "/") and args.host == "0.0.0.0"
    assert pod.termination_grace_period_seconds > ListenerSettings().shutdown_grace
    (mount,) = container.volume_mounts
    (volume,) = pod.volumes
    assert (mount.mount_path, mount.name) == (DATA_MOUNT, volume.name)
    assert volume.persistent_volume_claim.claim_name == DATA_CLAIM
    (secret,) = [e for e in container.env if e.name == SECRET_ENV]
    assert (secret.value_from.secret_key_ref.name, secret.value_from.secret_key_ref.key) == (SECRET_NAME, SECRET_KEY)
    (port,) = container.ports
    assert port.container_port == args.port
    assert deployment.spec.selector.match_labels.items() <= deployment.spec.template.metadata.labels.items()
    assert service.spec.selector == deployment.spec.selector.match_labels
    assert service.spec.ports[0].target_port == port.name
