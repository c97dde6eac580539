"""Benchmark: batch scoring with the champion, end to end, against a bare batched inference loop.

Set-up (not timed, its duration is printed): a work folder with a promoted 2D champion made as
cheaply as possible (BreastMNIST demo images, random init, 1 epoch per fold, ``--folds`` folds at
``--input-size``; registering needs no explain/report step and promotion skips the gate), and an
inbox of ``--scans`` new DICOM studies (another seed than the training images), one folder each.

Timed, in one process, with the champion loaded once and warmed up (one forward per fold model):
1. ``score_study`` on every inbox folder with overlays (GradCAM + Secondary Capture) and a DICOM SR
   per scan in an outbox; then the same inbox again (idempotent re-run: everything skipped);
2. the same studies without overlays (``W/scoring`` deleted first, so nothing is skipped);
3. all scans in ONE study folder without overlays (median of ``--repeats`` runs, ``W/scoring``
   deleted before each): inference then batches across scans as the bare loop does.
The per-phase split is
``StudyScoring.seconds`` summed over studies. The baseline is a bare loop over the preprocessed
tensors the scoring run cached (stacked in memory, batches of 64 like ``predict_ensemble``):
every fold model under ``torch.inference_mode()`` + softmax, averaged over models; warmed up once,
then timed once before each one-folder run (median of ``--repeats``). Target: model-part ratio =
bare / scoring's ``inference`` seconds on equal batching (one folder vs batches of 64) >= 0.9. The
same ratio for one study per folder compares with a bare loop at batch 1.

Usage: python benchmarks/scoring.py [--scans 60] [--input-size 64] [--folds 3] [--repeats 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.deid import Pseudonymizer  # noqa: E402
from pipeline.demo import DemoArchive, prepare_demo_inbox, prepare_demo_source  # noqa: E402
from pipeline.evaluate import CVSettings, EvaluationSettings, cross_validate  # noqa: E402
from pipeline.ingest import IngestConfig, ingest  # noqa: E402
from pipeline.layout import Workdir  # noqa: E402
from pipeline.preprocess import AugmentConfig, PreprocessConfig, preprocess_catalog  # noqa: E402
from pipeline.registry import Registry  # noqa: E402
from pipeline.scoring import load_champion  # noqa: E402
from pipeline.scoring.score import Champion  # noqa: E402
from pipeline.scoring.study import StudyScoring, score_study  # noqa: E402
from pipeline.train import TrainConfig  # noqa: E402

NPZ = Path(__file__).resolve().parents[1] / "data" / "demo" / "breastmnist.npz"
SECRET = "scoring-bench"
PHASES = ("ingest", "preprocess", "inference", "overlays", "outputs")
BATCH = 64  # predict_ensemble's default batch size
TARGET = 0.9
DEFAULT_THREADS = torch.get_num_threads()  # before anything of the pipeline ran in this process
log = logging.getLogger("bench.scoring")


def build_champion(root: Path, size: int, folds: int, per_split: int) -> tuple[Path, str]:
    """An ingested work folder ``root/w`` whose cheapest possible cross-validation is the champion."""
    source = prepare_demo_source([DemoArchive(NPZ, per_split)], root / "train_source", root / "train_labels.csv", seed=1)
    workdir = root / "w"
    ingest(IngestConfig(source=source.folder, workdir=workdir, labels=source.labels, secret=SECRET))
    cross_validate(workdir, CVSettings(n_folds=folds), TrainConfig(epochs=1, batch_size=8, patience=1),
                   PreprocessConfig(dims=2, input_size=(size, size)), AugmentConfig(enabled=False),
                   EvaluationSettings(n_resamples=200))
    registry = Registry(workdir)
    version = registry.register().version
    registry.promote(version, "scoring benchmark")
    return workdir, version


def make_inbox(root: Path, n_scans: int) -> tuple[Path, Path]:
    """``root/inbox/<MRN>_<ACC>/`` (one folder per study) and ``root/inbox_one/all/<MRN>_<ACC>/``
    (the same files as one study folder)."""
    for name in ("inbox", "inbox_one"):
        shutil.rmtree(root / name, ignore_errors=True)
    inbox, one = root / "inbox", root / "inbox_one" / "all"
    studies = prepare_demo_inbox(NPZ, inbox, math.ceil(n_scans / 3), seed=7)
    for study in studies[n_scans:]:
        shutil.rmtree(study)
    for study in studies[:n_scans]:
        shutil.copytree(study, one / study.name)
    return inbox, one


def score_folders(workdir: Path, folders: list[Path], outbox: Path, champion: Champion,
                  overlays: bool) -> tuple[float, list[StudyScoring]]:
    """Wall seconds and per-study results of scoring ``folders`` one after another. Each pass starts
    with the process's default torch thread count, as a fresh scoring process would."""
    torch.set_num_threads(DEFAULT_THREADS)
    names = Pseudonymizer(SECRET.encode())
    outbox.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = [score_study(workdir, f, names.inbox(f.name), outbox, champion=champion, overlays=overlays) for f in folders]
    return time.perf_counter() - start, done


def phase_seconds(done: list[StudyScoring]) -> dict[str, float]:
    return {p: sum(d.seconds.get(p, 0.0) for d in done) for p in PHASES}


def cached_inputs(workdir: Path, done: list[StudyScoring], champion: Champion) -> tuple[list[str], list[torch.Tensor]]:
    """Scan ids and the preprocessed tensors the scoring run cached in its intake folders."""
    ids, tensors = [], []
    pre = champion.models[0].preprocess
    for study in done:
        intake = Workdir(workdir).intake(study.key)
        catalog = pd.read_parquet(intake.catalog)
        catalog = catalog[catalog["dims"].astype(int) == champion.dims]
        index = preprocess_catalog(intake.root, pre, scans=catalog.assign(label=0)).index  # all cached: no work
        for row in index.itertuples(index=False):
            ids.append(row.scan_id)
            tensors.append(torch.from_numpy(np.load(intake.root / row.cache_path)))
    return ids, tensors


def bare_inference(champion: Champion, batches: list[torch.Tensor]) -> np.ndarray:
    """The scoring math with nothing around it: every fold model, softmax, mean over models."""
    per_model = []
    with torch.inference_mode():
        for m in champion.models:
            out = []
            for x in batches:
                x = x.to(m.device.device, memory_format=m.device.memory_format(champion.dims))
                with m.device.autocast():
                    logits = m.model(x)
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            per_model.append(np.concatenate(out).astype(np.float64))
    return np.mean(per_model, axis=0)


def time_bare(champion: Champion, tensors: list[torch.Tensor], batch: int, repeats: int,
              warm_up: bool = True) -> tuple[float, np.ndarray | None]:
    """Median seconds of ``repeats`` bare passes over ``tensors`` in batches of ``batch`` (after one
    warm-up pass, which also gives the probabilities), with the process default torch threads."""
    batches = [torch.stack(tensors[i:i + batch]) for i in range(0, len(tensors), batch)]
    torch.set_num_threads(DEFAULT_THREADS)
    probabilities = bare_inference(champion, batches) if warm_up else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bare_inference(champion, batches)
        times.append(time.perf_counter() - start)
    return (statistics.median(times) if times else float("nan")), probabilities


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=60, help="new studies (one 2D scan each) in the inbox (default 60)")
    parser.add_argument("--input-size", type=int, default=64, help="champion input edge in pixels (default 64)")
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds = models in the champion (default 3)")
    parser.add_argument("--train-per-split", type=int, default=12, help="training images per split (default 12)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="repeats of the bare loops and of the one-folder pass (default 5)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--workdir", type=Path, default=None,
                        help="build everything here and keep it (default: a temp folder, removed at the end)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    os.environ["SCANLENS_SECRET"] = SECRET
    root = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="scanlens-scoring-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, root)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    clock = time.perf_counter()
    log.info("set-up: champion (%d folds, %d px) in %s", args.folds, args.input_size, root)
    workdir, version = build_champion(root, args.input_size, args.folds, args.train_per_split)
    inbox, one_folder = make_inbox(root, args.scans)
    shutil.rmtree(workdir / "scoring", ignore_errors=True)
    shutil.rmtree(root / "outbox", ignore_errors=True)
    champion = load_champion(workdir, args.device)
    torch.set_num_threads(DEFAULT_THREADS)
    with torch.inference_mode():  # warm-up, as a long-running scorer would be
        for m in champion.models:
            m.model(torch.zeros(1, 1, *champion.models[0].preprocess.input_size, device=m.device.device))
    setup = time.perf_counter() - clock
    folders = sorted(p for p in inbox.iterdir() if p.is_dir())

    log.info("pass 1: %d studies with overlays", len(folders))
    wall_ov, done_ov = score_folders(workdir, folders, root / "outbox" / "overlays", champion, overlays=True)
    n = sum(len(d.scores) for d in done_ov)
    log.info("pass 2: idempotent re-run")
    wall_rerun, done_rerun = score_folders(workdir, folders, root / "outbox" / "overlays", champion, overlays=True)
    skipped = sum(d.n_skipped for d in done_rerun)
    ids, tensors = cached_inputs(workdir, done_ov, champion)
    scored_p = pd.concat([d.scores for d in done_ov]).set_index("scan_id")["probability"]

    log.info("pass 3: %d studies without overlays", len(folders))
    shutil.rmtree(workdir / "scoring")
    wall_plain, done_plain = score_folders(workdir, folders, root / "outbox" / "plain", champion, overlays=False)

    log.info("bare loop at batch 1, then pass 4: one folder x %d, each after a bare loop at batch %d", args.repeats, BATCH)
    _, bare_p = time_bare(champion, tensors, BATCH, 0)  # warm-up and the probabilities to check
    bare_one, _ = time_bare(champion, tensors, 1, args.repeats)
    one_runs, bare_runs = [], []
    for _ in range(args.repeats):  # interleaved, so that a load change on the machine hits both alike
        bare_runs.append(time_bare(champion, tensors, BATCH, 1, warm_up=False)[0])
        shutil.rmtree(workdir / "scoring")
        shutil.rmtree(root / "outbox" / "one", ignore_errors=True)
        one_runs.append(score_folders(workdir, [one_folder], root / "outbox" / "one", champion, overlays=False))
    bare = statistics.median(bare_runs)
    wall_one, done_one = sorted(one_runs, key=lambda r: r[1][0].seconds["inference"])[len(one_runs) // 2]
    n_one = sum(len(d.scores) for d in done_one)
    max_dp = float(np.max(np.abs(bare_p[:, champion.models[0].classes.index(int(champion.classes[-1]))]
                                 - scored_p.loc[ids].to_numpy())))

    passes = {"per-study, overlays": (wall_ov, phase_seconds(done_ov)),
              "per-study, no overlays": (wall_plain, phase_seconds(done_plain)),
              "one folder, no overlays": (wall_one, phase_seconds(done_one))}
    print(f"champion {version}: {len(champion.models)} fold models (ResNet-50, 2D, {args.input_size}x{args.input_size}, "
          f"random init, 1 epoch); device {champion.models[0].device.device}; cores {os.cpu_count()}; "
          f"torch threads {DEFAULT_THREADS}")
    print(f"inbox: {len(folders)} studies, {n} scans; champion trained on {args.train_per_split} images per split; "
          f"set-up took {setup:.1f} s (not timed below)")
    print()
    print(f"{'end to end (inbox DICOM -> scores + DICOM SR)':48} {'scans':>6} {'seconds':>8} {'scans/s':>8}")
    print(f"{'per-study folders, overlays (GradCAM + SC)':48} {n:6d} {wall_ov:8.2f} {n / wall_ov:8.2f}")
    print(f"{'per-study folders, no overlays':48} {n:6d} {wall_plain:8.2f} {n / wall_plain:8.2f}")
    print(f"{'one folder for all scans, no overlays (median)':48} {n_one:6d} {wall_one:8.2f} {n_one / wall_one:8.2f}")
    print(f"{'idempotent re-run, per-study (all skipped)':48} {skipped:6d} {wall_rerun:8.2f} {skipped / wall_rerun:8.2f}")
    print()
    print(f"{'phase (s, % of wall)':16}" + "".join(f"{name:>26}" for name in passes))
    for phase in (*PHASES, "other", "wall"):
        cells = []
        for wall, seconds in passes.values():
            s = {"other": wall - sum(seconds.values()), "wall": wall}.get(phase, seconds.get(phase, 0.0))
            cells.append(f"{s:8.2f} ({100 * s / wall:5.1f}%)")
        print(f"{phase:16}" + "".join(f"{c:>26}" for c in cells))
    print()
    inf_one, inf_study = passes["one folder, no overlays"][1]["inference"], passes["per-study, no overlays"][1]["inference"]
    inf_study_ov = passes["per-study, overlays"][1]["inference"]
    ratio = bare / inf_one
    print(f"bare inference, batches of {BATCH}, {DEFAULT_THREADS} threads (median of {args.repeats}, interleaved with "
          f"the one-folder runs; {min(bare_runs):.3f}-{max(bare_runs):.3f} s): {bare:.3f} s {n / bare:6.1f} scans/s; "
          f"max |p bare - p scored| = {max_dp:.1e}")
    print(f"bare inference, batches of 1, {DEFAULT_THREADS} threads (median of {args.repeats}): "
          f"{bare_one:.3f} s {n / bare_one:6.1f} scans/s")
    print(f"model-part ratio, equal batching, one folder (bare@{BATCH} {bare:.3f} s / scoring inference {inf_one:.3f} s): "
          f"{ratio:.2f}x (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")
    print(f"model-part ratio, equal batching, per study  (bare@1 {bare_one:.3f} s / scoring inference {inf_study:.3f} s): "
          f"{bare_one / inf_study:.2f}x (target >= {TARGET}x: {'met' if bare_one / inf_study >= TARGET else 'NOT met'})")
    print(f"one folder for all vs one study per folder (no overlays): inference {inf_one:.3f} s vs {inf_study:.3f} s "
          f"({inf_study / inf_one:.2f}x the throughput), end to end {wall_one:.2f} s vs {wall_plain:.2f} s "
          f"({wall_plain / wall_one:.2f}x); per-study inference with overlays: {inf_study_ov:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
