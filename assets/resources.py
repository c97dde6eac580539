"""Resources: where the work folder is, which secret pseudonymises, where the demo data lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from pipeline.locking import set_lock_timeout

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Where the demo study folder and its labels are made (``$SCANLENS_DEMO_ROOT`` or ``<repo>/demo_work``).
DEMO_ROOT = Path(os.environ.get("SCANLENS_DEMO_ROOT", str(PROJECT_ROOT / "demo_work")))


class ScanLensProject(dg.ConfigurableResource):
    """The work folder ``W`` and the bundled demo data.

    Defaults: ``$SCANLENS_WORKDIR`` or ``<demo root>/workdir``; demo archives in ``<repo>/data/demo``.
    """

    workdir: str = os.environ.get("SCANLENS_WORKDIR", str(DEMO_ROOT / "workdir"))
    demo_data: str = str(PROJECT_ROOT / "data" / "demo")
    demo_root: str = str(DEMO_ROOT)
    lock_timeout_s: float = Field(
        default=14400.0, description="seconds a step waits for a work folder another run is writing (runs that "
        "write one work folder take turns: a backfill of fold_models trains one fold after another), then fails")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        set_lock_timeout(self.lock_timeout_s)

    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir)

    @property
    def demo_source(self) -> Path:
        return Path(self.demo_root) / "source"

    @property
    def demo_labels(self) -> Path:
        return Path(self.demo_root) / "labels.csv"


class PseudonymSecret(dg.ConfigurableResource):
    """The pseudonymisation key. Unset means ``$SCANLENS_SECRET``, else a random key kept in ``W/.scanlens``."""

    secret: Optional[str] = None


def secret_resource() -> PseudonymSecret:
    """Take the key from ``$SCANLENS_SECRET`` through ``EnvVar`` so that the UI never displays it."""
    if os.environ.get("SCANLENS_SECRET"):
        return PseudonymSecret(secret=dg.EnvVar("SCANLENS_SECRET"))
    return PseudonymSecret()
