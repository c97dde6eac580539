"""Benchmark: ingest throughput against a bare single-process pydicom loop over the same files.

Copies the sts002 CT series (48 slices) N times with fresh Study/Series/SOP Instance UIDs, then,
in one run, times (1) ``pydicom.dcmread`` + ``pixel_array`` over every file in one process and
(2) a full ``scanlens ingest`` (hashing, header parsing, de-identification, series assembly,
NIfTI writing, tables) into an empty work folder. Target: ingest time <= 1.25x the bare loop.

Usage: python benchmarks/ingest.py [--copies N] [--workers W]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.ingest import IngestConfig, ingest  # noqa: E402

SERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "sts002" / "CT" / "dicom" / "image"
TARGET = 1.25


def make_copies(root: Path, copies: int) -> list[Path]:
    files = sorted(SERIES.glob("*.dcm"))
    out = []
    for c in range(copies):
        study, series = generate_uid(), generate_uid()
        folder = root / f"copy{c:04d}"
        folder.mkdir(parents=True)
        for f in files:
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(folder / f.name)
            out.append(folder / f.name)
    return out


def bare_loop(files: list[Path]) -> float:
    start = time.perf_counter()
    for f in files:
        ds = pydicom.dcmread(f)
        _ = ds.pixel_array
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=180, help="copies of the 48-slice series (default 180: 8,640 files)")
    parser.add_argument("--workers", type=int, default=None, help="ingest worker processes (default: all cores)")
    args = parser.parse_args()
    if not SERIES.is_dir():
        print(f"sts002 series not found at {SERIES}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="scanlens-bench-"))
    try:
        files = make_copies(tmp / "src", args.copies)
        bare_loop(files[:48])  # warm imports and decoders
        bare = bare_loop(files)
        start = time.perf_counter()
        result = ingest(IngestConfig(source=tmp / "src", workdir=tmp / "w", secret="bench", workers=args.workers))
        full = time.perf_counter() - start
        start = time.perf_counter()
        ingest(IngestConfig(source=tmp / "src", workdir=tmp / "w", secret="bench", workers=args.workers))
        rerun = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(files)
    ratio = full / bare
    print(f"files: {n} slices in {result.n_scans} series; cores: {os.cpu_count()}; workers: {args.workers or os.cpu_count()}")
    print(f"bare dcmread+pixel_array loop (1 process): {bare:7.2f} s  {n / bare:8.1f} slices/s")
    print(f"scanlens ingest (cold work folder):        {full:7.2f} s  {n / full:8.1f} slices/s")
    print(f"scanlens ingest re-run (no changes):       {rerun:7.2f} s  {n / rerun:8.1f} slices/s")
    print(f"ratio ingest/bare: {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
