"""The model registry (``W/registry/``) and the champion/challenger promotion gate."""

from __future__ import annotations

from pipeline.evaluate.paired import paired_auroc_difference
from pipeline.registry.gate import GateDecision, gate_challenger
from pipeline.registry.store import Registry, RegistryEntry

__all__ = ["GateDecision", "Registry", "RegistryEntry", "gate_challenger", "paired_auroc_difference"]
