"""The one ``Definitions`` object of the ScanLens code location (loaded by ``workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from assets.ingest import demo_studies, scan_catalog
from assets.resources import ScanLensProject, secret_resource

all_assets = [demo_studies, scan_catalog]

scanlens_demo = dg.define_asset_job(
    "scanlens_demo",
    selection=dg.AssetSelection.all(),
    description="Every ScanLens asset on the bundled demo data (what `make demo` runs).",
)

defs = dg.Definitions(
    assets=all_assets,
    jobs=[scanlens_demo],
    resources={"project": ScanLensProject(), "secret": secret_resource()},
)
