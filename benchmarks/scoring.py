"""Benchmark: batch scoring with the champion, end to end, against a bare batched inference loop.

Set-up (not timed, its duration is printed): a work folder with a promoted 2D champion made as
cheaply as possible (BreastMNIST demo images, random init, 1 epoch per fold, ``--folds`` folds at
``--input-size``; registering needs no explain/report step and promotion skips the gate), and an
inbox of ``--scans`` new DICOM studies (another seed than the training images), one folder each.
Before each pass ``W/scoring`` is deleted and the scores table gets ``--prior-rows`` rows of another
model version (a table that has grown: they are never skipped, only read past).

Timed, in one process, with the champion loaded once and warmed up (one forward per fold model):
1. a warm :class:`Scorer` (what ``scanlens score``, the ``scan_scores`` asset and a listener use:
   champion, isolated ingest workers and the scores table's index kept across studies) scores every
   inbox folder with overlays (GradCAM + Secondary Capture) and a DICOM SR per scan; then the same
   inbox again (idempotent re-run: everything skipped);
2. the same studies without overlays, through the warm scorer;
3. the same studies without overlays, cold: ``score_study`` with the loaded champion but nothing
   else kept (two pools of isolated workers started and stopped per study, the table read afresh:
   what each study cost before the scorer existed);
4. all scans in ONE study folder without overlays (median of ``--repeats`` runs): inference then
   batches across scans as the bare loop does.
The per-phase split is ``StudyScoring.seconds`` summed over studies. Per-study fixed costs, in ms per
study: ingest set-up (ingest wall time less the isolated tasks' own seconds: the walk, starting
workers, the intake tables), the scores table (the check of what is scored + the append), and the
rest of ``score_study`` outside its phases. The table's append is also timed alone against the
single-file read + rewrite it replaced (same table, ``--prior-rows`` rows, in this run).

The baseline is a bare loop over the preprocessed tensors the scoring run cached (stacked in memory):
every fold model under ``torch.inference_mode()`` + softmax, averaged over models; warmed up once.
Targets: model-part ratio = bare / scoring's ``inference`` seconds at equal batching >= 0.9, for one
folder (batches of 64, like ``predict_ensemble``; bare timed before each one-folder run, median of
``--repeats``) and for one study per folder through the warm scorer: bare at batch 1 on each study's
input right after that study (passes 2 and 3; same moment and process state, so load changes on the
machine hit both alike), and also against the bare loop at batch 1 run back to back over all inputs
(median of ``--repeats``), a steady state that a process scoring studies one at a time never reaches.
Ratios are against baselines measured in the same run.

Usage: python benchmarks/scoring.py [--scans 60] [--input-size 64] [--folds 3] [--repeats 5]
       [--prior-rows 20000] [--workdir DIR]
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
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.scoring.score import Champion  # noqa: E402
from pipeline.scoring.study import StudyScoring, score_study  # noqa: E402
from pipeline.scoring.table import SCORE_COLUMNS, ScoresTable  # noqa: E402
from pipeline.storage import file_lock, read_parquet, write_parquet_if_changed  # noqa: E402
from pipeline.train import TrainConfig  # noqa: E402

NPZ = Path(__file__).resolve().parents[1] / "data" / "demo" / "breastmnist.npz"
SECRET = "scoring-bench"
PHASES = ("ingest", "preprocess", "inference", "overlays", "outputs", "table")
BATCH = 64  # predict_ensemble's default batch size
TARGET = 0.9
PRIOR_VERSION = "v-prior0000000"
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


def prior_rows(n: int, start: int = 0) -> pd.DataFrame:
    """``n`` rows of another model version, as a grown scores table holds."""
    ids = [f"scan_{i:016x}" for i in range(start, start + n)]
    return pd.DataFrame({"scan_id": ids, "patient_id": [f"pat_{i:016x}" for i in range(start, start + n)],
                         "study_id": [f"stu_{i:016x}" for i in range(start, start + n)],
                         "probability": np.linspace(0, 1, n), "decision": "0", "threshold": 0.5,
                         "model_version": PRIOR_VERSION})[SCORE_COLUMNS]


def fresh_scoring(workdir: Path, n_prior: int) -> None:
    """``W/scoring`` deleted, then a scores table of ``n_prior`` rows of another model version."""
    shutil.rmtree(workdir / "scoring", ignore_errors=True)
    if n_prior:
        ScoresTable(workdir).append(prior_rows(n_prior))


def score_folders(workdir: Path, folders: list[Path], outbox: Path, champion: Champion, overlays: bool,
                  scorer: Scorer | None, paired: bool = False) -> tuple[float, list[StudyScoring], float]:
    """Wall seconds and per-study results of scoring ``folders`` one after another, through the warm
    ``scorer`` or cold (``score_study`` with only the champion kept). Each pass starts with the
    process's default torch thread count, as a fresh scoring process would. With ``paired``, right
    after each study the bare loop runs once at batch 1 on that study's cached inputs (same moment,
    same process state); its seconds are summed and returned, and left out of the wall time."""
    torch.set_num_threads(DEFAULT_THREADS)
    names = Pseudonymizer(SECRET.encode())
    outbox.mkdir(parents=True, exist_ok=True)
    wall, bare, done = 0.0, 0.0, []
    for folder in folders:
        start = time.perf_counter()
        if scorer is not None:
            study = scorer.score_study(folder, names.inbox(folder.name), outbox, overlays=overlays)
        else:
            study = score_study(workdir, folder, names.inbox(folder.name), outbox, champion=champion, overlays=overlays)
        wall += time.perf_counter() - start
        done.append(study)
        if paired:
            _, tensors = cached_inputs(workdir, [study], champion)
            batches = [t[None] for t in tensors]
            start = time.perf_counter()
            bare_inference(champion, batches)
            bare += time.perf_counter() - start
    return wall, done, bare


def phase_seconds(done: list[StudyScoring]) -> dict[str, float]:
    return {p: sum(d.seconds.get(p, 0.0) for d in done) for p in PHASES}


def fixed_costs(wall: float, done: list[StudyScoring]) -> dict[str, float]:
    """Per-study fixed costs in ms per study: ingest set-up, the scores table, the rest outside the phases."""
    phases = phase_seconds(done)
    setup = phases["ingest"] - sum(d.seconds.get("ingest_tasks", 0.0) for d in done)
    costs = {"ingest set-up": setup, "scores table": phases["table"], "other": wall - sum(phases.values())}
    costs["total"] = sum(costs.values())
    return {k: 1000 * v / len(done) for k, v in costs.items()}


def table_appends(root: Path, n_prior: int, repeats: int) -> dict[str, float]:
    """Median ms to add one study's row to a table of ``n_prior`` rows: the single-file read + rewrite
    scoring used before, a warm :class:`ScoresTable` and a fresh one (reads the parts' keys first)."""
    old, new = Workdir(root / "table_old"), root / "table_new"
    for folder in (old.root, new):
        shutil.rmtree(folder, ignore_errors=True)
    write_parquet_if_changed(old.scores, prior_rows(n_prior))
    ScoresTable(new).append(prior_rows(n_prior))
    warm = ScoresTable(new)
    warm.scored("v", [])
    times: dict[str, list[float]] = {"single file, read + rewrite (before)": [], "parts, warm ScoresTable": [],
                                     "parts, fresh ScoresTable": []}
    for i in range(repeats):
        rows = [prior_rows(1, n_prior + 3 * i + k).assign(model_version="v-new") for k in range(3)]
        start = time.perf_counter()
        with file_lock(old.scores_lock):
            table = pd.concat([read_parquet(old.scores), rows[0]], ignore_index=True)
            table = table.drop_duplicates(["scan_id", "model_version"], keep="last")
            write_parquet_if_changed(old.scores, table.sort_values(["scan_id", "model_version"]).reset_index(drop=True))
        times["single file, read + rewrite (before)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        warm.scored("v-new", rows[1]["scan_id"])
        warm.append(rows[1])
        times["parts, warm ScoresTable"].append(time.perf_counter() - start)
        start = time.perf_counter()
        fresh = ScoresTable(new)
        fresh.scored("v-new", rows[2]["scan_id"])
        fresh.append(rows[2])
        times["parts, fresh ScoresTable"].append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


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
    parser.add_argument("--prior-rows", type=int, default=20000,
                        help="rows of another model version in the scores table before each pass (default 20000)")
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


def met(ratio: float) -> str:
    return f"{ratio:.2f}x (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})"


def run(args: argparse.Namespace, root: Path) -> int:
    clock = time.perf_counter()
    log.info("set-up: champion (%d folds, %d px) in %s", args.folds, args.input_size, root)
    if (root / "w" / "registry").is_dir() and Registry(root / "w").champion():  # --workdir kept from a run before
        workdir, version = root / "w", str(Registry(root / "w").champion())
    else:
        workdir, version = build_champion(root, args.input_size, args.folds, args.train_per_split)
    inbox, one_folder = make_inbox(root, args.scans)
    shutil.rmtree(root / "outbox", ignore_errors=True)
    torch.set_num_threads(DEFAULT_THREADS)
    scorer = Scorer(workdir, args.device)
    champion = scorer.champion  # loaded and warmed up (one forward per fold model), as a long-running scorer is
    setup = time.perf_counter() - clock
    folders = sorted(p for p in inbox.iterdir() if p.is_dir())
    outbox = root / "outbox"

    log.info("pass 1: %d studies with overlays, warm scorer", len(folders))
    fresh_scoring(workdir, args.prior_rows)
    wall_ov, done_ov, _ = score_folders(workdir, folders, outbox / "overlays", champion, True, scorer)
    n = sum(len(d.scores) for d in done_ov)
    log.info("pass 2: idempotent re-run")
    wall_rerun, done_rerun, _ = score_folders(workdir, folders, outbox / "overlays", champion, True, scorer)
    skipped = sum(d.n_skipped for d in done_rerun)
    ids, tensors = cached_inputs(workdir, done_ov, champion)
    scored_p = pd.concat([d.scores for d in done_ov]).set_index("scan_id")["probability"]

    log.info("pass 3: %d studies without overlays, warm scorer", len(folders))
    fresh_scoring(workdir, args.prior_rows)
    wall_plain, done_plain, bare_paired = score_folders(workdir, folders, outbox / "plain", champion, False, scorer,
                                                        paired=True)
    plain_p = pd.concat([d.scores for d in done_plain]).set_index("scan_id")["probability"]
    log.info("pass 4: %d studies without overlays, cold (score_study, champion only)", len(folders))
    fresh_scoring(workdir, args.prior_rows)
    shutil.rmtree(outbox / "plain")
    wall_cold, done_cold, bare_paired_cold = score_folders(workdir, folders, outbox / "plain", champion, False, None,
                                                           paired=True)
    cold_p = pd.concat([d.scores for d in done_cold]).set_index("scan_id")["probability"]

    log.info("bare loop at batch 1, then pass 5: one folder x %d, each after a bare loop at batch %d", args.repeats, BATCH)
    _, bare_p = time_bare(champion, tensors, BATCH, 0)  # warm-up and the probabilities to check
    bare_one, _ = time_bare(champion, tensors, 1, args.repeats)
    one_runs, bare_runs = [], []
    for _ in range(args.repeats):  # interleaved, so that a load change on the machine hits both alike
        bare_runs.append(time_bare(champion, tensors, BATCH, 1, warm_up=False)[0])
        fresh_scoring(workdir, args.prior_rows)
        shutil.rmtree(outbox / "one", ignore_errors=True)
        one_runs.append(score_folders(workdir, [one_folder], outbox / "one", champion, False, scorer)[:2])
    bare = statistics.median(bare_runs)
    wall_one, done_one = sorted(one_runs, key=lambda r: r[1][0].seconds["inference"])[len(one_runs) // 2]
    n_one = sum(len(d.scores) for d in done_one)
    positive = champion.models[0].classes.index(int(champion.classes[-1]))
    max_dp = float(np.max(np.abs(bare_p[:, positive] - scored_p.loc[ids].to_numpy())))
    same = bool((plain_p.loc[ids] == cold_p.loc[ids]).all() and (plain_p.loc[ids] == scored_p.loc[ids]).all())
    appends = table_appends(root, args.prior_rows, max(args.repeats, 5))
    scorer.close()

    passes = {"per-study, overlays": (wall_ov, phase_seconds(done_ov)),
              "per-study, no overlays": (wall_plain, phase_seconds(done_plain)),
              "per-study cold, no overl.": (wall_cold, phase_seconds(done_cold)),
              "one folder, no overlays": (wall_one, phase_seconds(done_one))}
    print(f"champion {version}: {len(champion.models)} fold models (ResNet-50, 2D, {args.input_size}x{args.input_size}, "
          f"random init, 1 epoch); device {champion.models[0].device.device}; cores {os.cpu_count()}; "
          f"torch threads {DEFAULT_THREADS}")
    print(f"inbox: {len(folders)} studies, {n} scans; champion trained on {args.train_per_split} images per split; "
          f"scores table holds {args.prior_rows} rows of another version before each pass; "
          f"set-up took {setup:.1f} s (not timed below)")
    print()
    print(f"{'end to end (inbox DICOM -> scores + DICOM SR)':52} {'scans':>6} {'seconds':>8} {'scans/s':>8}")
    print(f"{'per-study folders, warm scorer, overlays (GradCAM + SC)':52} {n:6d} {wall_ov:8.2f} {n / wall_ov:8.2f}")
    print(f"{'per-study folders, warm scorer, no overlays':52} {n:6d} {wall_plain:8.2f} {n / wall_plain:8.2f}")
    print(f"{'per-study folders, cold score_study, no overlays':52} {n:6d} {wall_cold:8.2f} {n / wall_cold:8.2f}")
    print(f"{'one folder for all scans, no overlays (median)':52} {n_one:6d} {wall_one:8.2f} {n_one / wall_one:8.2f}")
    print(f"{'idempotent re-run, per-study, warm (all skipped)':52} {skipped:6d} {wall_rerun:8.2f} "
          f"{skipped / wall_rerun:8.2f}")
    print()
    print(f"{'phase (s, % of wall)':16}" + "".join(f"{name:>27}" for name in passes))
    for phase in (*PHASES, "other", "wall"):
        cells = []
        for wall, seconds in passes.values():
            s = {"other": wall - sum(seconds.values()), "wall": wall}.get(phase, seconds.get(phase, 0.0))
            cells.append(f"{s:8.2f} ({100 * s / wall:5.1f}%)")
        print(f"{phase:16}" + "".join(f"{c:>27}" for c in cells))
    print()
    fixed = {"warm scorer": fixed_costs(wall_plain, done_plain), "cold score_study": fixed_costs(wall_cold, done_cold),
             "one folder (per folder)": fixed_costs(wall_one, done_one)}
    print(f"{'per-study fixed costs (ms per study, no overlays)':52}" + "".join(f"{k:>25}" for k in fixed))
    for cost in ("ingest set-up", "scores table", "other", "total"):
        print(f"{cost:52}" + "".join(f"{f[cost]:25.1f}" for f in fixed.values()))
    print("(ingest set-up = ingest wall - its isolated tasks' own seconds, which overlap on several workers for one "
          "folder; scores table = check + append; other = outside the phases)")
    print(f"append one study's row to a table of {args.prior_rows} rows (median ms): "
          + "; ".join(f"{k} {v:.1f}" for k, v in appends.items()))
    print()
    inf_one, inf_study = passes["one folder, no overlays"][1]["inference"], passes["per-study, no overlays"][1]["inference"]
    inf_cold, inf_study_ov = passes["per-study cold, no overl."][1]["inference"], passes["per-study, overlays"][1]["inference"]
    print(f"bare inference, batches of {BATCH}, {DEFAULT_THREADS} threads (median of {args.repeats}, interleaved with "
          f"the one-folder runs; {min(bare_runs):.3f}-{max(bare_runs):.3f} s): {bare:.3f} s {n / bare:6.1f} scans/s; "
          f"max |p bare - p scored| = {max_dp:.1e}; warm, cold and overlay passes give identical probabilities: {same}")
    print(f"bare inference, batches of 1, {DEFAULT_THREADS} threads (median of {args.repeats}): "
          f"{bare_one:.3f} s {n / bare_one:6.1f} scans/s")
    print(f"model-part ratio, equal batching, one folder (bare@{BATCH} {bare:.3f} s / scoring inference {inf_one:.3f} s): "
          f"{met(bare / inf_one)}")
    print(f"model-part ratio, equal batching, per study, warm scorer (bare@1 right after each study {bare_paired:.3f} s "
          f"/ scoring inference {inf_study:.3f} s): {met(bare_paired / inf_study)}")
    print(f"  the same against the bare loop at batch 1 run back to back (steady state no per-study process has; "
          f"{bare_one:.3f} s): {met(bare_one / inf_study)}")
    print(f"model-part ratio, per study, cold score_study (bare@1 right after each study {bare_paired_cold:.3f} s / "
          f"{inf_cold:.3f} s): {bare_paired_cold / inf_cold:.2f}x; back to back: {bare_one / inf_cold:.2f}x; "
          f"with overlays, warm, back to back: {bare_one / inf_study_ov:.2f}x")
    print(f"one folder for all vs one study per folder, warm (no overlays): inference {inf_one:.3f} s vs {inf_study:.3f} s "
          f"({inf_study / inf_one:.2f}x the throughput), end to end {wall_one:.2f} s vs {wall_plain:.2f} s "
          f"({wall_plain / wall_one:.2f}x); cold per-study end to end {wall_cold:.2f} s "
          f"({wall_cold / wall_plain:.2f}x the warm scorer's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
