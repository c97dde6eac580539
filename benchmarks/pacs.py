"""Benchmark: receiving over DICOM with ``scanlens listen``, and the time from a study's arrival to its
SR being queryable in the PACS.

Everything runs on loopback against real Orthanc servers (Debian ``orthanc`` + ``orthanc-dicomweb``,
started by :mod:`tests.orthanc` on free ports, with temporary storage):

1. **Receive throughput.** A source Orthanc holds sts002's 48-slice CT (``../shared``; without it, a
   synthetic 48-slice CT of the same size). It C-STOREs the series, through its REST
   ``/modalities/<name>/store`` (synchronous), alternately to ``scanlens listen`` (a subprocess, as
   deployed) and to a second Orthanc (the baseline: Orthanc's own C-STORE receive). Median of
   ``--repeats`` sends each, interleaved; the ratio is listener instances/s over Orthanc's.
2. **Arrival to SR.** ``--studies`` BreastMNIST studies (one image each) arrive one at a time at the
   listener; for each, the time from the end of its C-STORE to its SR being found by QIDO-RS in the PACS
   (``/studies/<uid>/instances?Modality=SR``), with a warm scorer (champion loaded once, as in the
   long-running scoring process) that scores the study as soon as it is complete (the inbox quiet time,
   ``stable_seconds``, comes on top in production) and sends its SR and SC back by C-STORE. The split
   into scoring phases and the send is printed.

Set-up (not timed): a 2D champion made as cheaply as possible (``benchmarks/scoring.py``'s recipe).

Usage: python benchmarks/pacs.py [--repeats 5] [--studies 5] [--input-size 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scoring import NPZ, SECRET, build_champion  # noqa: E402

from pipeline.deid import Pseudonymizer  # noqa: E402
from pipeline.demo import prepare_demo_inbox  # noqa: E402
from pipeline.pacs.send import send_objects  # noqa: E402
from pipeline.scoring import warm_scorer  # noqa: E402
from pipeline.settings.pacs import PacsSendSettings  # noqa: E402
from tests.dicom_factory import write_series, z_positions  # noqa: E402
from tests.orthanc import BINARY, DICOMWEB_PLUGIN, Orthanc, free_port, start_listener  # noqa: E402

CT = ROOT.parent / "shared" / "data" / "dicom" / "sts002" / "CT"
log = logging.getLogger("bench.pacs")


def ct_files(root: Path) -> tuple[list[Path], str]:
    """The 48 CT image instances of sts002 (its RTSTRUCT left out: not an image), or a synthetic stand-in."""
    if CT.is_dir():
        import pydicom

        files = [p for p in sorted(CT.rglob("*.dcm")) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT"]
        return files, "sts002 CT (48 slices, 143x161, implicit VR)"
    return write_series(root / "ct", z_positions(48), rows=161, cols=143), "synthetic CT (48 slices, 161x143)"


def our_listener(inbox: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    return start_listener(inbox, port, log_file, "--min-free-mb", "64", env=dict(os.environ, SCANLENS_SECRET=SECRET))


def timed_store(source: Orthanc, modality: str, resources: list[str]) -> float:
    start = time.perf_counter()
    source.store_to(modality, resources)
    return time.perf_counter() - start


def receive_throughput(root: Path, repeats: int) -> None:
    files, what = ct_files(root)
    source = Orthanc(root / "source").start()
    sink = Orthanc(root / "sink", aet="SINK").start()
    port = free_port()
    listener = our_listener(root / "inbox_ct", port, root / "listener_ct.log")
    try:
        study = source.upload(files)
        source.add_modality("scanlens", "SCANLENS", port)
        source.add_modality("orthanc", "SINK", sink.dicom_port)
        timed_store(source, "scanlens", study), timed_store(source, "orthanc", study)  # warm-up
        ours, theirs = [], []
        for _ in range(repeats):
            shutil.rmtree(
                root / "inbox_ct" / next(p.name for p in (root / "inbox_ct").iterdir() if p.name.startswith("stu_"))
            )
            ours.append(timed_store(source, "scanlens", study))
            for sid in sink.study_ids():
                requests.delete(f"{sink.url}/studies/{sid}", timeout=10).raise_for_status()
            theirs.append(timed_store(source, "orthanc", study))
        n = len(files)
        received = len(list((root / "inbox_ct").rglob("*.dcm")))
    finally:
        listener.terminate()
        listener.wait(timeout=60)
        source.stop()
        sink.stop()
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"receive: {what}, sent by Orthanc's C-STORE SCU (REST /modalities/<name>/store), median of {repeats}")
    print(
        f"  scanlens listen : {a:6.3f} s  {n / a:7.1f} instances/s  (runs {min(ours):.3f}-{max(ours):.3f} s; "
        f"{received} files in the inbox)"
    )
    print(f"  Orthanc (base)  : {b:6.3f} s  {n / b:7.1f} instances/s  (runs {min(theirs):.3f}-{max(theirs):.3f} s)")
    print(f"  ratio listener / Orthanc: {b / a:.2f}x; listener exit code {listener.returncode}")


def wait_for_sr(pacs: Orthanc, study_uid: str, timeout: float = 120.0) -> float:
    """Poll QIDO-RS until the study has an SR; the time (perf_counter) it was first seen."""
    deadline = time.monotonic() + timeout
    url = f"{pacs.dicomweb_url}/studies/{study_uid}/instances"
    while time.monotonic() < deadline:
        response = requests.get(url, params={"Modality": "SR"}, timeout=10)
        if response.status_code == 200 and response.content and response.json():
            return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError("the SR did not appear")


def arrival_to_sr(root: Path, n_studies: int, size: int) -> None:
    import pydicom

    workdir, version = build_champion(root / "champion", size, 3, 12)
    pacs = Orthanc(root / "pacs").start()
    port = free_port()
    inbox = root / "inbox"
    listener = our_listener(inbox, port, root / "listener.log")
    names = Pseudonymizer(SECRET.encode())
    scorer = warm_scorer(workdir)  # the long-running scorer: champion loaded once
    send = PacsSendSettings(send_to=pacs.node, send_backoff_s=0.0)
    rows = []
    try:
        modality = root / "modality"
        studies = prepare_demo_inbox(NPZ, modality, -(-n_studies // 3), seed=31)[:n_studies]  # per split
        pacs.add_modality("scanlens", "SCANLENS", port)
        for folder in studies:
            files = sorted(folder.rglob("*.dcm"))
            uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
            resources = pacs.upload(files)
            pacs.store_to("scanlens", resources)
            arrived = time.perf_counter()  # the last instance is stored (the C-STORE was acknowledged)
            study = inbox / names.study(uid)
            clock = time.perf_counter()
            done = scorer.score_study(study, names.inbox(study.name), root / "outbox", SECRET)
            scored = time.perf_counter() - clock
            clock = time.perf_counter()
            report = send_objects(root / "outbox", done.dicom_outputs, send)
            sent = time.perf_counter() - clock
            seen = wait_for_sr(pacs, uid)
            assert report.sent and not report.failed
            rows.append({"total": seen - arrived, "scoring": scored, "send": sent, **done.seconds})
    finally:
        listener.terminate()
        listener.wait(timeout=60)
        pacs.stop()
    print(
        f"\narrival -> SR queryable (QIDO-RS), {n_studies} studies one at a time, champion {version} "
        f"(3 fold models, {size} px), warm scorer; quiet time (stable_seconds) not included"
    )
    keys = ["total", "scoring", *[k for k in rows[0] if k not in ("total", "scoring", "send")], "send"]
    width = max(len(k) for k in keys) + 2
    print("  " + f"{'(s)':>8}" + "".join(f"{k:>{width}}" for k in keys))
    for label, fn in (("median", statistics.median), ("max", max)):
        print("  " + f"{label:>8}" + "".join(f"{fn([r[k] for r in rows]):{width}.3f}" for k in keys))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="sends of the CT to each receiver (default 5)")
    parser.add_argument("--studies", type=int, default=5, help="studies for the arrival-to-SR latency (default 5)")
    parser.add_argument("--input-size", type=int, default=64, help="champion input edge, pixels (default 64)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if not (Path(BINARY).exists() and DICOMWEB_PLUGIN.exists()):
        print("benchmarks/pacs.py: needs Debian's orthanc and orthanc-dicomweb (make system-deps)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="scanlens-pacs-bench-"))
    try:
        receive_throughput(root, args.repeats)
        arrival_to_sr(root, args.studies, args.input_size)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
