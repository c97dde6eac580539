"""Dagster definitions for ScanLens: thin assets over the ``pipeline`` library."""
