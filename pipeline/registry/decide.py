"""Registering the current evaluation as a challenger and deciding on it with the gate.

The decision is kept in ``W/registry/decisions/<version>.json`` (passed, reason, figures) so that
the promotion step and the UI show the same reason; a rejection is also written to the history.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pipeline.evaluate.classes import positive_class
from pipeline.layout import Workdir
from pipeline.registry.gate import GateDecision, gate_challenger
from pipeline.registry.store import Registry, RegistryEntry
from pipeline.storage import atomic_write_bytes


def decide_challenger(
    workdir: Path,
    report: Path | None = None,
    delta: float = 0.02,
    n_resamples: int = 2000,
    seed: int = 0,
    require_beats_baseline: bool = True,
) -> tuple[RegistryEntry, GateDecision]:
    """Register the work folder's evaluation and apply the gate against the current champion.

    The gate reads the version's ``metrics.json`` for its pixel-baseline block; with
    ``require_beats_baseline`` False a model that does not beat its baseline is not refused for it."""
    registry, wd = Registry(workdir), Workdir(workdir)
    entry = registry.register(report)
    version = wd.version(entry.version)
    sanity = json.loads(version.sanity.read_text()) if version.sanity.exists() else {}
    champion = registry.champion()
    champion_oof = None
    if champion is not None:
        champion_oof = pd.read_parquet(wd.version(champion).oof_predictions)
    positive = positive_class(entry.record["classes"])
    metrics = json.loads(version.evaluation_file(wd.metrics.name).read_text())
    decision = gate_challenger(
        pd.read_parquet(version.oof_predictions),
        champion_oof,
        sanity,
        positive,
        delta,
        n_resamples,
        seed,
        baseline=metrics.get("baseline"),
        require_beats_baseline=require_beats_baseline,
    )
    if champion == entry.version:
        decision = GateDecision(True, "already the champion", decision.figures)
    record = {
        **asdict(decision),
        "version": entry.version,
        "champion": champion,
        "delta": delta,
        "require_beats_baseline": require_beats_baseline,
    }
    atomic_write_bytes(wd.decision(entry.version), json.dumps(record, indent=2).encode())
    if not decision.passed and registry.entry(entry.version).status != "rejected":
        registry.reject(entry.version, decision.reason)
    return registry.entry(entry.version), decision


def promote_if_accepted(workdir: Path, version: str) -> RegistryEntry:
    """Promote ``version`` when its recorded gate decision passed; otherwise leave the champion alone."""
    registry = Registry(workdir)
    record = json.loads(Workdir(workdir).decision(version).read_text())
    if not record["passed"]:
        return registry.entry(version)
    return registry.promote(version, f"gate passed: {record['reason']}")
