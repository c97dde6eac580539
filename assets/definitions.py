"""The one ``Definitions`` object of the ScanLens code location (loaded by ``workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from assets.ingest import demo_studies, scan_catalog
from assets.resources import ScanLensProject, secret_resource
from assets.training import preprocessed_scans, trained_model

all_assets = [demo_studies, scan_catalog, preprocessed_scans, trained_model]

scanlens_demo = dg.define_asset_job(
    "scanlens_demo",
    selection=dg.AssetSelection.all(),
    description="Every ScanLens asset on the bundled demo data (what `make demo` runs, once per model kind).",
    executor_def=dg.in_process_executor,  # one process: the steps are sequential anyway, and start-up is paid once
)

defs = dg.Definitions(
    assets=all_assets,
    jobs=[scanlens_demo],
    resources={"project": ScanLensProject(), "secret": secret_resource()},
)
