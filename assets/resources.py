"""Resources: where the work folder is, which secret pseudonymises, where the demo data lives.

Every default that comes from the environment is read when a run uses it, never when this module is
imported, so a code location loaded before ``SCANLENS_WORKDIR`` changed still follows it.
"""

# No `from __future__ import annotations` here: Dagster reads resource field types from the annotations.

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.locking import set_lock_timeout

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def demo_root() -> Path:
    """Where the demo study folder, its labels, inbox and work folder are made: ``$SCANLENS_DEMO_ROOT``
    (read now) or ``<repo>/demo_work``."""
    return Path(os.environ.get("SCANLENS_DEMO_ROOT") or PROJECT_ROOT / "demo_work")


class ScanLensProject(dg.ConfigurableResource):
    """The work folder ``W`` and the bundled demo data. Empty fields take their defaults at run time."""

    workdir: str = Field(default="", description="work folder W; empty: $SCANLENS_WORKDIR, else <demo root>/workdir")
    demo_root: str = Field(
        default="", description="where the demo studies are made; empty: $SCANLENS_DEMO_ROOT, else <repo>/demo_work"
    )
    demo_data: str = Field(default=str(PROJECT_ROOT / "data" / "demo"), description="the bundled MedMNIST archives")
    lock_timeout_s: float = Field(
        default=14400.0,
        description="seconds a step waits for a work folder another run is writing (runs that "
        "write one work folder take turns: a backfill of fold_models trains one fold after another), then fails",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        set_lock_timeout(self.lock_timeout_s)

    @property
    def demo_root_path(self) -> Path:
        return Path(self.demo_root) if self.demo_root else demo_root()

    @property
    def workdir_path(self) -> Path:
        if self.workdir:
            return Path(self.workdir)
        return Path(os.environ.get("SCANLENS_WORKDIR") or self.demo_root_path / "workdir")

    def demo_archive(self, name: str) -> Path:
        """One bundled MedMNIST archive, ``<demo_data>/<name>.npz``."""
        return Path(self.demo_data) / f"{name}.npz"

    @property
    def demo_source(self) -> Path:
        return self.demo_root_path / "source"

    @property
    def demo_labels(self) -> Path:
        return self.demo_root_path / "labels.csv"

    @property
    def demo_inbox(self) -> Path:
        return self.demo_root_path / "inbox"

    @property
    def demo_pacs_intake(self) -> Path:
        return self.demo_root_path / "pacs_intake"

    @property
    def demo_outbox(self) -> Path:
        return self.demo_root_path / "outbox"


class PseudonymSecret(dg.ConfigurableResource):
    """The pseudonymisation key. Unset means ``$SCANLENS_SECRET`` (read at run time, so the UI never shows
    it), else a random key kept in ``W/.scanlens/secret.key``."""

    secret: str | None = None
