"""Ingest as a whole: robustness, idempotency, incremental updates, atomic writes, labels, NIfTI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

import pipeline.ingest.build
import pipeline.ingest.probe
from pipeline.errors import QuarantineReason, UserInputError
from pipeline.ingest import IngestConfig, ingest
from pipeline.storage import atomic_write_bytes
from tests.conftest import DICOM_DATA, requires_shared
from tests.dicom_factory import write_series, z_positions

TABLES = ("catalog.parquet", "quarantine.parquet", "ingest_manifest.parquet")
REASONS = {r.value for r in QuarantineReason}


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file's size, mtime and hash, but the writer lock (each run takes and releases it)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != ".scanlens/lock"
    }


def _two_series(root: Path) -> None:
    write_series(root / "a", z_positions(4), patient_id="P1")
    write_series(root / "b", z_positions(3, step=3.0), patient_id="P2")


@requires_shared
def test_every_test_file_is_catalogued_or_quarantined_and_the_source_is_untouched(tmp_path: Path) -> None:
    source = DICOM_DATA / "pydicom_testfiles"
    before = _snapshot(source)
    result = ingest(IngestConfig(source=source, workdir=tmp_path / "w"))
    assert _snapshot(source) == before
    manifest = pd.read_parquet(tmp_path / "w" / "ingest_manifest.parquet")
    quarantine = pd.read_parquet(tmp_path / "w" / "quarantine.parquet").set_index("source_path")
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    assert sorted(manifest["source_path"]) == sorted(before)  # nothing silently dropped
    catalogued = manifest[manifest["status"] == "catalogued"]
    assert set(catalogued["scan_id"]) == set(catalog["scan_id"]) and result.n_scans == len(catalog) > 10
    assert set(manifest.loc[manifest["status"] == "quarantined", "source_path"]) == set(quarantine.index)
    assert set(quarantine["reason"]) <= REASONS and quarantine["detail"].str.len().min() > 10
    wheel = "from_pydicom_wheel/"
    expected = {
        wheel + "JPEG-lossy.dcm": "undecodable_pixels",
        wheel + "MR_truncated.dcm": "truncated",
        wheel + "no_meta.dcm": "no_file_meta",
        wheel + "ExplVR_BigEndNoMeta.dcm": "no_file_meta",
        wheel + "dicomdirtests/DICOMDIR": "dicomdir_index",
        "from_pydicom_data/OBXXXX1A_rle_2frame.dcm": "unsupported_dimensions",
    }
    for path, reason in expected.items():
        assert quarantine.loc[path, "reason"] == reason, path
    tiny = quarantine[quarantine.index.str.contains("TINY_ALPHA/PT")]
    assert len(tiny) == 50 and set(tiny["reason"]) == {"no_pixel_data"}
    assert {"MR", "CT", "US", "CR", "OT", "NM"} <= set(catalog["modality"])
    assert (catalog["dims"] == 3).sum() >= 2  # CT5N and the 10-frame enhanced MR
    for relpath in catalog["volume_path"]:
        assert nib.aff2axcodes(nib.load(tmp_path / "w" / relpath).affine) == ("R", "A", "S")


def test_rerun_on_unchanged_input_is_a_no_op(tmp_path: Path) -> None:
    _two_series(tmp_path / "src")
    first = ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w"))
    assert first.n_scans == 2 and first.n_volumes_written == 2
    before = _snapshot(tmp_path / "w")
    again = ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w"))
    assert (again.n_probed, again.n_volumes_written, again.tables_written) == (0, 0, [])
    assert _snapshot(tmp_path / "w") == before  # same bytes, same mtimes, no new files


def test_new_changed_and_removed_files_update_only_their_scans(tmp_path: Path) -> None:
    src, w = tmp_path / "src", tmp_path / "w"
    _two_series(src)
    ingest(IngestConfig(source=src, workdir=w))
    catalog = pd.read_parquet(w / "catalog.parquet").set_index("n_source_files")
    volume_a, volume_b = (w / catalog.loc[4, "volume_path"], w / catalog.loc[3, "volume_path"])
    mtime_b = volume_b.stat().st_mtime_ns

    write_series(src / "c", z_positions(2), patient_id="P3")  # a new series
    result = ingest(IngestConfig(source=src, workdir=w))
    assert result.n_scans == 3 and result.n_probed == 2 and result.n_volumes_written == 1
    assert volume_b.stat().st_mtime_ns == mtime_b

    slice_a = min((src / "a").iterdir())  # change one slice's pixels
    ds = pydicom.dcmread(slice_a)
    ds.PixelData = (ds.pixel_array + 7).astype(np.int16).tobytes()
    ds.save_as(slice_a)
    old_hash = pd.read_parquet(w / "catalog.parquet").set_index("scan_id").loc[volume_a.name.split(".")[0], "content_hash"]
    result = ingest(IngestConfig(source=src, workdir=w))
    rows = pd.read_parquet(w / "catalog.parquet").set_index("scan_id")
    assert result.n_volumes_written == 1 and rows.loc[volume_a.name.split(".")[0], "content_hash"] != old_hash
    assert volume_b.stat().st_mtime_ns == mtime_b

    max((src / "b").iterdir()).unlink()  # drop the top slice of series b
    ingest(IngestConfig(source=src, workdir=w))
    catalog = pd.read_parquet(w / "catalog.parquet")
    manifest = pd.read_parquet(w / "ingest_manifest.parquet")
    assert sorted(catalog["n_source_files"]) == [2, 2, 4] and len(manifest) == 8


def test_a_late_slice_joins_its_series(tmp_path: Path) -> None:
    src, w = tmp_path / "src", tmp_path / "w"
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    write_series(src / "first", z_positions(5)[:2], series_uid=uid, study_uid=study)
    result = ingest(IngestConfig(source=src, workdir=w))
    assert result.n_scans == 1
    write_series(src / "late", z_positions(5)[2:], series_uid=uid, study_uid=study, names=["x2", "x3", "x4"])
    ingest(IngestConfig(source=src, workdir=w))
    catalog = pd.read_parquet(w / "catalog.parquet")
    assert len(catalog) == 1 and catalog.loc[0, "n_source_files"] == 5 and list(catalog.loc[0, "shape"]) == [5, 6, 5]
    assert len(list((w / "volumes").iterdir())) == 1  # the 2-slice volume was replaced, not kept beside


def test_parallel_and_serial_ingest_agree(tmp_path: Path) -> None:
    _two_series(tmp_path / "src")
    write_series(tmp_path / "src" / "gap", [[0, 0, z] for z in (0, 2, 6, 8)])
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "serial", workers=1))
    ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "parallel", workers=2))
    for table in TABLES:
        assert (tmp_path / "serial" / table).read_bytes() == (tmp_path / "parallel" / table).read_bytes(), table


def test_a_crash_mid_run_leaves_no_partial_file_and_the_rerun_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_series(tmp_path / "src")
    write_series(tmp_path / "src" / "c", z_positions(3))
    real_write = pipeline.ingest.build.write_volume
    calls = []

    def crash_on_second(path: Path, volume) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(path, volume)

    monkeypatch.setattr(pipeline.ingest.build, "write_volume", crash_on_second)
    with pytest.raises(OSError):
        ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w", workers=1))
    leftovers = [p.name for p in (tmp_path / "w").rglob("*") if ".tmp" in p.name]
    assert leftovers == [] and not (tmp_path / "w" / "catalog.parquet").exists()
    kept = len(list((tmp_path / "w" / "volumes").glob("*.nii")))
    assert kept == 2  # the other scans' volumes were written; the failed one is not there
    monkeypatch.setattr(pipeline.ingest.build, "write_volume", real_write)
    result = ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w", workers=1))
    assert result.n_scans == 3 and result.n_volumes_written == 1  # the volumes written before the failure are reused


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        pipeline.storage.atomic_write(target, lambda tmp: (tmp.write_bytes(b"partial"), (_ for _ in ()).throw(RuntimeError())))
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["table.bin"]


def test_labelled_run_quarantines_unlabelled_scans_and_reports_unknown_rows(tmp_path: Path) -> None:
    src = tmp_path / "src"
    uids = [pydicom.uid.generate_uid() for _ in range(3)]
    for i, uid in enumerate(uids):
        write_series(src / f"s{i}", z_positions(3), series_uid=uid, patient_id=f"P{i}")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"scan_ref,label,split\n{uids[0]},1,train\n{uids[1]},,train\n1.2.3.4.5.6,0,test\n")
    result = ingest(IngestConfig(source=src, workdir=tmp_path / "w", labels=labels))
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    quarantine = pd.read_parquet(tmp_path / "w" / "quarantine.parquet")
    assert len(catalog) == 2 and sorted(catalog["label"].astype("string").fillna("<NA>")) == ["1", "<NA>"]
    assert set(quarantine["reason"]) == {"unlabeled"} and len(quarantine) == 3
    assert result.unmatched_label_lines == [4]


def test_nifti_sources_are_canonicalised_and_4d_is_quarantined(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    lps = np.diag([-2.0, -1.0, 3.0, 1.0])  # stored L->R flipped on both in-plane axes
    nib.save(nib.Nifti1Image(data, lps), src / "lps.nii.gz")
    nib.save(nib.Nifti1Image(data[..., np.newaxis], lps), src / "single_frame_4d.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), src / "timeseries.nii.gz")
    ingest(IngestConfig(source=src, workdir=tmp_path / "w"))
    catalog = pd.read_parquet(tmp_path / "w" / "catalog.parquet")
    quarantine = pd.read_parquet(tmp_path / "w" / "quarantine.parquet")
    assert len(catalog) == 2 and list(quarantine["reason"]) == ["unsupported_dimensions"]
    volume = nib.load(tmp_path / "w" / catalog.loc[0, "volume_path"])
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(np.asarray(volume.dataobj), data[::-1, ::-1, :])
    assert list(catalog.loc[0, "spacing_mm"]) == [2.0, 1.0, 3.0]


@pytest.mark.parametrize("case", ["missing", "empty", "inside"])
def test_bad_source_folders_are_user_errors(tmp_path: Path, case: str) -> None:
    source = tmp_path / "src"
    if case != "missing":
        source.mkdir()
    workdir = source / "w" if case == "inside" else tmp_path / "w"
    if case == "inside":
        write_series(source / "s", z_positions(2))
        workdir = tmp_path
    with pytest.raises(UserInputError):
        ingest(IngestConfig(source=source, workdir=workdir))


def test_links_and_special_files_are_quarantined_with_a_reason_and_never_followed_out_of_src(tmp_path: Path) -> None:
    import os

    src, outside = tmp_path / "src", tmp_path / "outside"
    write_series(src / "a", z_positions(3), patient_id="P1")
    write_series(outside / "b", z_positions(3), patient_id="P2")
    (src / "links").mkdir()
    os.symlink(outside / "b" / "slice_000.dcm", src / "links" / "to_outside.dcm")
    os.symlink(tmp_path / "gone.dcm", src / "links" / "dangling.dcm")
    os.symlink(src / "a", src / "links" / "folder_inside")
    os.symlink(outside / "b", src / "links" / "folder_outside")
    os.symlink(src / "a" / "slice_001.dcm", src / "links" / "copy_inside.dcm")
    os.mkfifo(src / "links" / "pipe")  # reading it would block forever
    result = ingest(IngestConfig(source=src, workdir=tmp_path / "w", workers=1))
    quarantine = pd.read_parquet(tmp_path / "w" / "quarantine.parquet").set_index("source_path")["reason"]
    assert quarantine.to_dict() == {
        "links/to_outside.dcm": "outside_source", "links/dangling.dcm": "broken_link",
        "links/folder_inside": "directory_link", "links/folder_outside": "outside_source",
        "links/copy_inside.dcm": "duplicate_instance",  # read through the link: a second copy of a slice
        "links/pipe": "not_regular_file",
    }
    manifest = pd.read_parquet(tmp_path / "w" / "ingest_manifest.parquet")
    assert len(manifest) == 3 + 6 and set(manifest.loc[manifest["status"] == "quarantined", "source_path"]) == set(quarantine.index)
    assert result.n_scans == 1 and result.n_source_files == 9
    again = ingest(IngestConfig(source=src, workdir=tmp_path / "w", workers=1))
    assert again.tables_written == [] and again.n_probed == 0
    followed = ingest(IngestConfig(source=src, workdir=tmp_path / "w2", follow_external_links=True, workers=1))
    assert followed.n_scans == 2 and followed.quarantine_by_reason["outside_source"] == 1  # the folder link still is


def test_a_file_that_crashes_or_hangs_its_worker_is_quarantined_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import time

    write_series(tmp_path / "src" / "ok", z_positions(3), patient_id="P1")
    write_series(tmp_path / "src" / "bad", z_positions(1), patient_id="P2", names=["crash.dcm"])
    write_series(tmp_path / "src" / "slow", z_positions(1), patient_id="P3", names=["hang.dcm"])
    real_deidentify = pipeline.ingest.probe.deidentify

    def misbehaving_deidentify(header, relpath: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if relpath.endswith("crash.dcm"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if relpath.endswith("hang.dcm"):
            time.sleep(30)
        return real_deidentify(header, relpath, *args, **kwargs)

    monkeypatch.setattr(pipeline.ingest.probe, "deidentify", misbehaving_deidentify)  # the forked workers inherit it
    result = ingest(IngestConfig(source=tmp_path / "src", workdir=tmp_path / "w", task_timeout_s=1.0))
    quarantine = pd.read_parquet(tmp_path / "w" / "quarantine.parquet").set_index("source_path")
    assert quarantine.loc["bad/crash.dcm", "reason"] == "decoder_crash"
    assert "SIGSEGV" in quarantine.loc["bad/crash.dcm", "detail"]
    assert quarantine.loc["slow/hang.dcm", "reason"] == "decoder_timeout"
    assert result.n_scans == 1 and len(quarantine) == 2
