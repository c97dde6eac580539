"""Group ``ingest``: the demo study folder and the de-identified scan catalogue."""

# No `from __future__ import annotations` here: Dagster reads Config/resource types from the annotations.

from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import IO_RETRY, OWNER, user_errors_are_final
from assets.resources import DEMO_ROOT, PseudonymSecret, ScanLensProject
from pipeline.config import IngestConfig
from pipeline.io.limits import ReadLimits
from pipeline.parallel import WorkerLimits
from pipeline.demo import DemoArchive, prepare_demo_source
from pipeline.ingest import ingest

class DemoStudiesConfig(dg.Config):
    breast_limit: Optional[int] = Field(default=None, description="BreastMNIST items per split; null keeps all 780")
    adrenal_limit: Optional[int] = Field(default=40, description="AdrenalMNIST3D volumes per split; null keeps all 1,584")
    seed: int = Field(default=0, description="seed for the subset and the synthetic headers")


@dg.asset(group_name="ingest", owners=[OWNER], kinds={"python", "dicom"}, retry_policy=IO_RETRY)
def demo_studies(config: DemoStudiesConfig, project: ScanLensProject) -> dg.MaterializeResult:
    """Synthetic DICOM studies made from the bundled MedMNIST archives (BreastMNIST 2D US, AdrenalMNIST3D CT).

    Headers carry synthetic patient names, IDs and dates so that de-identification has work to do.
    Idempotent: unchanged archives and options rewrite nothing.
    """
    data = Path(project.demo_data)
    archives = [
        DemoArchive(data / "breastmnist.npz", config.breast_limit),
        DemoArchive(data / "adrenalmnist3d.npz", config.adrenal_limit),
    ]
    with user_errors_are_final():
        result = prepare_demo_source(archives, project.demo_source, project.demo_labels, seed=config.seed)
    return dg.MaterializeResult(
        metadata={"items": result.n_items, "rebuilt": result.rebuilt, "source": dg.MetadataValue.path(str(result.folder))}
    )


class ScanCatalogConfig(dg.Config):
    source: str = Field(
        default=str(DEMO_ROOT / "source"),
        description="folder of DICOM/NIfTI scans, read recursively and never modified (default: the demo studies)",
    )
    labels: str = Field(
        default=str(DEMO_ROOT / "labels.csv"),
        description="labels CSV (scan_ref,label[,split,patient_id]); empty string for an unlabelled run",
    )
    workdir: str = Field(default="", description="work folder W; empty uses the `project` resource's workdir")
    keep_demographics: bool = Field(default=False, description="keep PatientSex/PatientAge for subgroup analysis")
    allow_burned_in: bool = Field(default=False, description="ingest images flagged BurnedInAnnotation=YES")
    spacing_tolerance: float = Field(default=0.05, description="relative slice-spacing deviation accepted with a warning")
    task_timeout_s: float = Field(default=WorkerLimits.timeout_s, description="wall-clock seconds one file or scan may "
                                  "take before its worker is killed and it is quarantined as decoder_timeout")
    worker_memory_mb: int = Field(default=WorkerLimits.memory_mb, description="memory one worker process may add; "
                                  "past it the file is quarantined as too_large")
    max_file_mb: int = Field(default=ReadLimits.max_file_mb, description="larger files are quarantined unread")
    max_decoded_mb: int = Field(default=ReadLimits.max_decoded_mb,
                                description="memory one image may need once decoded, from its declared size")
    follow_external_links: bool = Field(default=False, description="read files through links that point outside source")


def labels_check(catalog: pd.DataFrame, unmatched_lines: list[int]) -> dg.AssetCheckResult:
    """Fail when no usable scan has a label, or when a labelled split holds scans without a label."""
    labelled = int(catalog["label"].notna().sum())
    in_split = catalog[catalog["split"].notna()]
    missing = in_split[in_split["label"].isna()].groupby("split").size().to_dict()
    problems = []
    if labelled == 0:
        problems.append("no usable scan has a label")
    if missing:
        problems.append("scans without a label in split(s) " + ", ".join(f"{k} ({v})" for k, v in sorted(missing.items())))
    if unmatched_lines:
        problems.append(f"{len(unmatched_lines)} labels row(s) match no scan")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"{labelled} labelled scans; every labelled split is complete",
        metadata={"labelled_scans": labelled, "unlabelled_in_split": int(sum(missing.values())),
                  "unmatched_label_rows": len(unmatched_lines)},
    )


@dg.asset(
    group_name="ingest",
    owners=[OWNER],
    kinds={"python", "parquet", "nifti"},
    deps=[demo_studies],
    retry_policy=IO_RETRY,
    check_specs=[dg.AssetCheckSpec("labelled_scans_present", asset="scan_catalog", blocking=True,
                                   description="usable labelled scans exist and labelled splits are complete")],
)
def scan_catalog(config: ScanCatalogConfig, project: ScanLensProject, secret: PseudonymSecret) -> dg.MaterializeResult:
    """De-identified catalogue of usable scans (``W/catalog.parquet``) with one RAS+ NIfTI volume per scan.

    Bad files are quarantined with a reason (``W/quarantine.parquet``); ``W/ingest_manifest.parquet``
    maps every source file to its scan. Re-materialising on unchanged input rewrites nothing.
    """
    workdir = Path(config.workdir) if config.workdir else project.workdir_path
    with user_errors_are_final():
        result = ingest(IngestConfig(
            source=Path(config.source), workdir=workdir, labels=Path(config.labels) if config.labels else None,
            secret=secret.secret, keep_demographics=config.keep_demographics,
            allow_burned_in=config.allow_burned_in, spacing_tolerance=config.spacing_tolerance,
            limits=ReadLimits(max_file_mb=config.max_file_mb, max_decoded_mb=config.max_decoded_mb),
            worker_limits=WorkerLimits(timeout_s=config.task_timeout_s, memory_mb=config.worker_memory_mb),
            follow_external_links=config.follow_external_links,
        ))
    catalog = pd.read_parquet(workdir / "catalog.parquet")
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
            "catalog": dg.MetadataValue.path(str(workdir / "catalog.parquet")),
        },
        check_results=[labels_check(catalog, result.unmatched_label_lines)],
    )
