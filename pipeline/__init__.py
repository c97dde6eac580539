"""ScanLens domain library: ingest, preprocessing, training, evaluation and reporting.

This package never imports Dagster; the Dagster definitions in ``assets/`` are thin
wrappers around the functions here, and the CLI (``python -m pipeline``) calls the
same functions with the same config objects.
"""

from __future__ import annotations

__version__ = "0.1.0"
