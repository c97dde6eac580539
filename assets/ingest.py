"""Group ``ingest``: the demo study folder and the de-identified scan catalogue."""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import IO_RETRY, OWNER, user_errors_are_final
from assets.config import config_class, settings_from
from assets.deployment import INGEST, cpu_step_tags
from assets.resources import PseudonymSecret, ScanLensProject
from pipeline.demo import DemoArchive, prepare_demo_source
from pipeline.ingest import IngestConfig, IngestSettings, ingest
from pipeline.layout import Workdir


class DemoStudiesConfig(dg.Config):
    breast_limit: int | None = Field(default=None, description="BreastMNIST items per split; null keeps all 780")
    adrenal_limit: int | None = Field(default=40, description="AdrenalMNIST3D volumes per split; null keeps all 1,584")
    seed: int = Field(default=0, description="seed for the subset and the synthetic headers")


@dg.asset(
    group_name="ingest",
    owners=[OWNER],
    kinds={"python", "dicom"},
    retry_policy=IO_RETRY,
    op_tags=cpu_step_tags(INGEST),
)
def demo_studies(config: DemoStudiesConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Synthetic DICOM studies made from the bundled MedMNIST archives (BreastMNIST 2D US, AdrenalMNIST3D CT).

    Headers carry synthetic patient names, IDs and dates so that de-identification has work to do.
    Idempotent: unchanged archives and options rewrite nothing.
    """
    archives = [
        DemoArchive(project.demo_archive("breastmnist"), config.breast_limit),
        DemoArchive(project.demo_archive("adrenalmnist3d"), config.adrenal_limit),
    ]
    with user_errors_are_final():
        result = prepare_demo_source(archives, project.demo_source, project.demo_labels, seed=config.seed)
    return dg.MaterializeResult(
        metadata={
            "items": result.n_items,
            "rebuilt": result.rebuilt,
            "source": dg.MetadataValue.path(str(result.folder)),
        }
    )


if TYPE_CHECKING:  # the class is made at import time; to a type checker it is a Dagster config

    class ScanCatalogConfig(dg.Config):
        source: str
        labels: str
else:
    ScanCatalogConfig = config_class(
        "ScanCatalogConfig",
        IngestSettings,
        doc="Which folder is ingested, with which labels, and how.",
        extra={
            "source": (
                str,
                Field(
                    default="",
                    description="folder of DICOM/NIfTI scans, read recursively and never "
                    "modified; empty: the demo studies",
                ),
            ),
            "labels": (
                str,
                Field(
                    default="",
                    description="labels CSV (scan_ref,label[,split,patient_id]); empty: "
                    "the demo labels when the source is the demo studies, else an unlabelled run",
                ),
            ),
        },
    )


def labels_check(catalog: pd.DataFrame, unmatched_lines: list[int]) -> dg.AssetCheckResult:
    """Fail when no usable scan has a label, or when a labelled split holds scans without a label."""
    labelled = int(catalog["label"].notna().sum())
    in_split = catalog[catalog["split"].notna()]
    missing = in_split[in_split["label"].isna()].groupby("split").size().to_dict()
    problems = []
    if labelled == 0:
        problems.append("no usable scan has a label")
    if missing:
        problems.append(
            "scans without a label in split(s) " + ", ".join(f"{k} ({v})" for k, v in sorted(missing.items()))
        )
    if unmatched_lines:
        problems.append(f"{len(unmatched_lines)} labels row(s) match no scan")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"{labelled} labelled scans; every labelled split is complete",
        metadata={
            "labelled_scans": labelled,
            "unlabelled_in_split": int(sum(missing.values())),
            "unmatched_label_rows": len(unmatched_lines),
        },
    )


@dg.asset(
    group_name="ingest",
    owners=[OWNER],
    kinds={"python", "parquet", "nifti"},
    deps=[demo_studies],
    retry_policy=IO_RETRY,
    op_tags=cpu_step_tags(INGEST),
    check_specs=[
        dg.AssetCheckSpec(
            "labelled_scans_present",
            asset="scan_catalog",
            blocking=True,
            description="usable labelled scans exist and labelled splits are complete",
        )
    ],
)
def scan_catalog(config: ScanCatalogConfig, project: ScanLensProject, secret: PseudonymSecret) -> dg.MaterializeResult:
    """De-identified catalogue of usable scans (``W/catalog.parquet``) with one RAS+ NIfTI volume per scan.

    Bad files are quarantined with a reason (``W/quarantine.parquet``); ``W/ingest_manifest.parquet``
    maps every source file to its scan. Re-materialising on unchanged input rewrites nothing.
    """
    workdir = project.workdir_path
    source = Path(config.source) if config.source else project.demo_source
    labels = Path(config.labels) if config.labels else project.demo_labels if not config.source else None
    with user_errors_are_final():
        result = ingest(
            IngestConfig.of(
                settings_from(config, IngestSettings),
                source=source,
                workdir=workdir,
                labels=labels,
                secret=secret.secret,
            )
        )
    catalog = pd.read_parquet(Workdir(workdir).catalog)
    return dg.MaterializeResult(
        metadata={
            "scans": result.n_scans,
            "source_files": result.n_source_files,
            "files_read": result.n_probed,
            "volumes_written": result.n_volumes_written,
            "quarantined_files": sum(result.quarantine_by_reason.values()),
            "quarantined_by_reason": dg.MetadataValue.json(result.quarantine_by_reason),
            "modalities": dg.MetadataValue.json(result.modalities),
            "label_counts": dg.MetadataValue.json(result.label_counts),
            "unmatched_label_rows": len(result.unmatched_label_lines),
            "slowest_file_seconds": round(result.slowest_file_seconds, 3),
            "catalog": dg.MetadataValue.path(str(Workdir(workdir).catalog)),
        },
        check_results=[labels_check(catalog, result.unmatched_label_lines)],
    )
