"""Command line: ``python -m pipeline <command>`` (installed as ``scanlens``).

Exit codes: 0 success; 2 user error (one line on stderr, no traceback); 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline import __version__
from pipeline.config import IngestConfig
from pipeline.errors import UserInputError
from pipeline.io.limits import ReadLimits
from pipeline.locking import set_lock_timeout
from pipeline.logsafety import install as install_log_redaction
from pipeline.parallel import WorkerLimits

if TYPE_CHECKING:
    from pipeline.preprocess import AugmentConfig, PreprocessConfig
    from pipeline.train import TrainConfig

log = logging.getLogger("pipeline")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanlens", description="ScanLens medical-imaging pipeline.")
    parser.add_argument("--version", action="version", version=f"scanlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of internal errors")
    parser.add_argument("--lock-timeout", type=float, default=None, metavar="S",
                        help="seconds to wait for a work folder another command is writing "
                        "(default $SCANLENS_LOCK_TIMEOUT or 600), then exit 2")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mm = commands.add_parser(
        "import-medmnist", help="write a MedMNIST .npz as a DICOM or NIfTI study folder with labels.csv",
        description="Write a MedMNIST .npz (2D or 3D) as a realistic study folder with synthetic patients "
        "and DIR/labels.csv (columns documented in its header comment).",
    )
    mm.add_argument("npz", type=Path, help="MedMNIST .npz file")
    mm.add_argument("--out", type=Path, required=True, help="output study folder")
    mm.add_argument("--format", choices=("dicom", "nifti"), default="dicom", help="3D output format (2D is always DICOM)")
    mm.add_argument("--limit", type=int, default=None, help="keep at most N items per split (stratified by label)")
    mm.add_argument("--seed", type=int, default=0, help="random seed for the subset and synthetic headers")
    mm.add_argument("--inbox", action="store_true",
                    help="write new studies to score instead: one folder per study (<MRN>_<accession>) directly "
                    "under OUT, no labels file; studies already there are kept")

    ing = commands.add_parser(
        "ingest", help="catalogue, de-identify and convert a folder of DICOM/NIfTI scans",
        description="Scan SRC recursively (DICOM with or without extension, DICOMDIR, .nii, .nii.gz) and write "
        "W/catalog.parquet, W/quarantine.parquet, W/ingest_manifest.parquet and W/volumes/. SRC is never modified.",
    )
    ing.add_argument("src", type=Path, help="source folder (read-only)")
    ing.add_argument("--workdir", type=Path, required=True, help="work folder W")
    ing.add_argument("--labels", type=Path, default=None, help="labels CSV (scan_ref,label[,split,patient_id])")
    ing.add_argument("--secret", default=None, help="pseudonymisation key (default: $SCANLENS_SECRET or W/.scanlens/secret.key)")
    ing.add_argument("--keep-demographics", action="store_true", help="keep PatientSex and PatientAge for subgroups")
    ing.add_argument("--allow-burned-in", action="store_true", help="ingest images flagged BurnedInAnnotation=YES")
    ing.add_argument("--spacing-tolerance", type=float, default=0.05, help="relative slice-spacing deviation accepted with a warning")
    ing.add_argument("--workers", type=int, default=None, help="parallel parser processes (default: all cores)")
    ing.add_argument("--rehash", action="store_true", help="hash every file even if size and mtime are unchanged")
    ing.add_argument("--task-timeout", type=float, default=WorkerLimits.timeout_s, metavar="S",
                     help=f"wall-clock seconds one file or scan may take before its worker is killed and it is "
                     f"quarantined as decoder_timeout (default {WorkerLimits.timeout_s:g})")
    ing.add_argument("--worker-memory-mb", type=int, default=WorkerLimits.memory_mb, metavar="MB",
                     help=f"memory one worker process may add (default {WorkerLimits.memory_mb}); past it the file "
                     "is quarantined as too_large")
    ing.add_argument("--max-file-mb", type=int, default=ReadLimits.max_file_mb, metavar="MB",
                     help=f"larger files are quarantined as too_large without being read (default {ReadLimits.max_file_mb})")
    ing.add_argument("--max-decoded-mb", type=int, default=ReadLimits.max_decoded_mb, metavar="MB",
                     help="memory one image may need once decoded, from its declared size "
                     f"(default {ReadLimits.max_decoded_mb})")
    ing.add_argument("--follow-external-links", action="store_true",
                     help="read files through symbolic links that point outside SRC (default: quarantine them)")
    ing.add_argument("--timings", type=Path, default=None, metavar="CSV",
                     help="write source_path,stage,seconds for every file read (stage probe or build), "
                     "to find slow files; it holds source paths, like the manifest")
    tr = commands.add_parser(
        "train", help="fine-tune a 2D or 3D ResNet-50 on the catalogue's labelled scans",
        description="Train on split `train` and early-stop on `val` (or a seeded patient-grouped split). "
        "Writes W/models/<model_id>/ (weights.pt, model_card.json, checkpoint.pt, history.json).",
    )
    add_training_flags(tr)
    tr.add_argument("--resume", action="store_true", help="continue from the model's last checkpoint")
    tr.add_argument("--stop-after", type=int, default=None, metavar="N",
                    help="stop after N epochs of this invocation (continue later with --resume)")

    ev = commands.add_parser(
        "evaluate", help="patient-grouped K-fold cross-validation with a held-out test set and review-board statistics",
        description="Hold out a patient-grouped test set (the catalogue's `test` split, else --test-fraction), "
        "split the rest with StratifiedGroupKFold by patient, train one model per fold (resumable), and write "
        "W/evaluation/: folds.parquet, oof_predictions.parquet, test_predictions.parquet, metrics.json and plots.",
    )
    add_training_flags(ev)
    ev.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds (default 5)")
    ev.add_argument("--test-fraction", type=float, default=0.2, help="test share of patients without a catalogue test split")
    ev.add_argument("--resamples", type=int, default=2000, help="patient-level bootstrap resamples per CI (default 2000)")
    ev.add_argument("--target-sensitivity", type=float, default=None,
                    help="operating point: the highest threshold reaching this OOF sensitivity (default: Youden's J)")
    ev.add_argument("--subgroups", default="", help="comma-separated catalogue columns for subgroup tables "
                    "(e.g. manufacturer,patient_sex,age_band)")

    ex = commands.add_parser(
        "explain", help="Captum saliency maps for selected cases, with sanity and faithfulness checks",
        description="Explain the most confident TP/TN and the worst FP/FN at the pre-specified operating point "
        "(held-out test set by the fold ensemble, or out-of-fold by each case's fold model) with integrated "
        "gradients, saliency, GradCAM and occlusion. Writes W/saliency/ (PNG overlays or 3D montages, NIfTI maps "
        "for 3D scans, cases.parquet, sanity.json). Needs `scanlens evaluate` first.",
    )
    ex.add_argument("--workdir", type=Path, required=True, help="work folder W")
    ex.add_argument("--source", choices=("auto", "test", "oof"), default="auto", help="cases from the test set or OOF")
    ex.add_argument("--per-kind", type=int, default=2, help="cases of each of TP, TN, FP, FN (default 2)")
    ex.add_argument("--methods", default="integrated_gradients,saliency,gradcam,occlusion", help="comma-separated methods")
    ex.add_argument("--ig-steps", type=int, default=32, help="integrated-gradients steps (default 32)")
    ex.add_argument("--ig-baseline", choices=("zeros", "blur"), default="zeros")
    ex.add_argument("--memory-mb", type=float, default=None, help="memory budget of IG's batches (default: half of free)")
    ex.add_argument("--occlusion-window", type=int, default=8, help="occlusion window edge in input voxels")
    ex.add_argument("--occlusion-stride", type=int, default=4, help="occlusion stride in input voxels")
    ex.add_argument("--sanity-threshold", type=float, default=0.5,
                    help="a method fails when maps of the fully randomised model keep Spearman rho >= this")
    ex.add_argument("--sanity-cases", type=int, default=4, help="cases the sanity checks run on")
    ex.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    rp = commands.add_parser("report", help="write the review-board PDF and print its path",
                             description="Write W/reports/scanlens_report_<hash>.pdf from W/evaluation and W/saliency "
                             "(A4, table of contents, page numbers, CLAIM 2024 checklist). Prints the PDF's path.")
    rp.add_argument("--workdir", type=Path, required=True, help="work folder W")
    rp.add_argument("--audience", default=None, help="who the report is for (title page)")

    rg = commands.add_parser("registry", help="model registry: list, show, register or promote versions",
                             description="Versions of evaluated models in W/registry/, the champion, and the history "
                             "of promotions and rejections with their reasons.")
    rg_commands = rg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    for name, text in (("list", "every version with its status"), ("show", "one version's record and history"),
                       ("register", "store the work folder's current evaluation as a version"),
                       ("promote", "make a version the champion (needs --reason)")):
        action = rg_commands.add_parser(name, help=text)
        action.add_argument("--workdir", type=Path, required=True, help="work folder W")
        if name in ("show", "promote"):
            action.add_argument("version", help="version id (v-...)")
        if name == "promote":
            action.add_argument("--reason", required=True, help="why (recorded in the history)")
        if name == "register":
            action.add_argument("--report", type=Path, default=None, help="the report PDF to store with it")

    sc = commands.add_parser(
        "score", help="score the studies in an inbox folder with the champion (what the Dagster sensor does)",
        description="Each top-level folder of INBOX is one study (any layout inside). Every study is ingested and "
        "de-identified into W/scoring/intake/<key>/ (unreadable files are quarantined there with a reason), scored "
        "with the registry's champion into W/scoring/scores.parquet (pseudonymous ids, probability, decision at the "
        "champion's operating point, model version) with a GradCAM overlay in W/scoring/overlays/, and, with --out, "
        "a DICOM Comprehensive SR and a Secondary Capture of the overlay per scan are written to OUTBOX. Scans "
        "already scored by the current champion are skipped. INBOX is never modified.",
    )
    sc.add_argument("inbox", type=Path, help="inbox folder: one folder per study")
    sc.add_argument("--workdir", type=Path, required=True, help="work folder W (holds the registry)")
    sc.add_argument("--out", type=Path, default=None, help="outbox for the DICOM SR and Secondary Capture objects")
    sc.add_argument("--secret", default=None, help="pseudonymisation key (default: $SCANLENS_SECRET or W/.scanlens/secret.key)")
    sc.add_argument("--stable-seconds", type=float, default=0.0,
                    help="skip (for now) studies with a file modified less than this many seconds ago")
    sc.add_argument("--no-overlays", action="store_true", help="skip the GradCAM overlays (and the Secondary Captures)")
    sc.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")

    st = commands.add_parser("status", help="summarise a work folder: scans, labels, quarantine, output paths")
    st.add_argument("--workdir", type=Path, required=True, help="work folder W")
    return parser


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and the commands that train (evaluate)."""
    parser.add_argument("--workdir", type=Path, required=True, help="work folder W")
    parser.add_argument("--dims", choices=("2d", "3d"), default="2d", help="2D model, or 3D model inflated from 2D")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="head learning rate (backbone: x0.1)")
    parser.add_argument("--input-size", type=int, default=None, help="model input edge in voxels (default 64 for 2D, 32 for 3D)")
    parser.add_argument("--weights", default=None, help="ImageNet weights: a torchvision .pth path, or 'imagenet' for the torch hub cache")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact reruns)")
    parser.add_argument("--head-only-epochs", type=int, default=0, help="epochs training only the new head first")
    parser.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs")
    parser.add_argument("--grad-accumulation", type=int, default=1, help="batches per optimiser step")
    parser.add_argument("--slice-strategy", choices=("centre", "mip", "2.5d"), default="centre",
                        help="how a 2D model reads 3D scans")
    parser.add_argument("--intensity", choices=("auto", "ct_window", "percentile", "minmax"), default="auto")
    parser.add_argument("--ct-window", default="soft_tissue", help="soft_tissue, lung, bone or 'centre,width' in HU")
    parser.add_argument("--no-augment", action="store_true", help="turn random augmentation off")


def training_configs(args: argparse.Namespace) -> tuple["TrainConfig", "PreprocessConfig", "AugmentConfig"]:
    from pipeline.preprocess import AugmentConfig, PreprocessConfig
    from pipeline.train import TrainConfig

    dims = 2 if args.dims == "2d" else 3
    edge = args.input_size or (64 if dims == 2 else 32)
    pre = PreprocessConfig(dims=dims, input_size=(edge,) * dims, intensity=args.intensity, ct_window=args.ct_window,
                           slice_strategy=args.slice_strategy)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weights=args.weights,
                      device=args.device, seed=args.seed, deterministic=args.deterministic,
                      head_only_epochs=args.head_only_epochs, patience=args.patience,
                      grad_accumulation=args.grad_accumulation)
    return cfg, pre, AugmentConfig(enabled=not args.no_augment)


def _train(args: argparse.Namespace) -> int:
    from pipeline.train import train

    cfg, pre, aug = training_configs(args)
    result = train(args.workdir.resolve(), cfg, pre, aug, resume=args.resume, stop_after=args.stop_after, progress=True)
    validation = result.card["validation"]
    sys.stdout.write(
        f"model: {result.model_dir}\n"
        f"best validation AUROC {validation['best_auroc']:.4f} at epoch {validation['best_epoch']} "
        f"({validation['epochs_run']} epochs{', stopped early' if validation['early_stopped'] else ''}"
        f"{'' if result.completed else ', paused: resume with --resume'})\n"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import CVSettings, EvaluationSettings, cross_validate

    cfg, pre, aug = training_configs(args)
    cv = CVSettings(n_folds=args.folds, test_fraction=args.test_fraction, seed=args.seed, dims=pre.dims)
    settings = EvaluationSettings(n_resamples=args.resamples, seed=args.seed, target_sensitivity=args.target_sensitivity,
                                  subgroups=tuple(c.strip() for c in args.subgroups.split(",") if c.strip()))
    if settings.n_resamples < 1:
        raise UserInputError("--resamples must be at least 1")
    result = cross_validate(args.workdir.resolve(), cv, cfg, pre, aug, settings, progress=True)
    m = result.metrics
    lines = [f"evaluation: {result.folder}", f"operating point: {m['operating_point']['rule']}"
             + (f", threshold {m['operating_point']['threshold']:.4f}" if m["operating_point"]["threshold"] is not None else "")]
    for name in ("oof", "test"):
        block = m[name]
        if block is None:
            lines.append(f"{name}: no held-out test set")
            continue
        ci = block["auroc_ci"]
        lines.append(f"{name} AUROC {block['auroc']:.4f}" + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else " (no CI)")
                     + f", {block['n_scans']} scans of {block['n_patients']} patients")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from pipeline.explain.attribution import AttributionConfig
    from pipeline.explain.run import ExplainSettings, explain

    attribution = AttributionConfig(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), ig_steps=args.ig_steps,
        ig_baseline=args.ig_baseline, memory_budget_mb=args.memory_mb, occlusion_window=args.occlusion_window,
        occlusion_stride=args.occlusion_stride)
    result = explain(args.workdir.resolve(), ExplainSettings(
        source=args.source, per_kind=args.per_kind, attribution=attribution, sanity_threshold=args.sanity_threshold,
        sanity_cases=args.sanity_cases, device=args.device))
    lines = [f"saliency: {result.folder} ({len(result.cases)} cases from {result.sanity['source']})"]
    for method, entry in result.sanity["methods"].items():
        lines.append(f"  {method}: {entry['verdict']} (final Spearman {entry['randomisation']['final_spearman']:.3f}), "
                     f"deletion AUC {entry['deletion_auc']:.3f} vs random {entry['deletion_random_auc']:.3f}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.report import ReportSettings, build_report

    settings = ReportSettings(audience=args.audience) if args.audience else ReportSettings()
    sys.stdout.write(f"{build_report(args.workdir.resolve(), settings).path}\n")
    return 0


def _registry(args: argparse.Namespace) -> int:
    from pipeline.registry import Registry

    registry = Registry(args.workdir.resolve())
    if args.registry_command == "list":
        entries = registry.versions()
        lines = [f"{e.version}  {e.status:10}  OOF AUROC {e.record['oof_auroc']:.3f}  {e.reason or ''}" for e in entries]
        sys.stdout.write("\n".join(lines or ["no versions registered"]) + "\n")
    elif args.registry_command == "show":
        entry = registry.entry(args.version)
        history = [h for h in registry.history() if h["version"] == args.version]
        sys.stdout.write(json.dumps({"status": entry.status, "record": entry.record, "history": history}, indent=2) + "\n")
    elif args.registry_command == "register":
        entry = registry.register(args.report)
        sys.stdout.write(f"{entry.version} {entry.status}\n")
    else:
        entry = registry.promote(args.version, args.reason)
        sys.stdout.write(f"{entry.version} is the champion\n")
    return 0


def _score(args: argparse.Namespace) -> int:
    import time

    from pipeline.deid import Pseudonymizer, load_secret
    from pipeline.scoring import load_champion
    from pipeline.scoring.inbox import settled_studies
    from pipeline.scoring.study import score_study
    from pipeline.storage import Workdir

    workdir = args.workdir.resolve()
    champion = load_champion(workdir, args.device)
    secret = load_secret(args.secret, Workdir(workdir).secret_file)
    poll = settled_studies(args.inbox.resolve(), Pseudonymizer(secret), time.time(), args.stable_seconds)
    totals = {"scored": 0, "skipped": 0, "dicom": 0}
    for study in poll.ready:
        done = score_study(workdir, study.folder, study.key, args.out.resolve() if args.out else None, secret.decode(),
                           champion, overlays=not args.no_overlays)
        quarantined = ", ".join(f"{k}={v}" for k, v in done.quarantine_by_reason.items()) or "none"
        not_scored = "".join(f", {n} not scored ({why})" for why, n in done.not_scored.items())
        sys.stdout.write(f"{study.key}: {done.n_scans} scans, {len(done.scores)} scored, {done.n_skipped} already "
                         f"scored{not_scored}; quarantined: {quarantined}\n")
        totals["scored"] += len(done.scores)
        totals["skipped"] += done.n_skipped
        totals["dicom"] += len(done.dicom_outputs)
    sys.stdout.write(f"{len(poll.ready)} studies with champion {champion.version}: {totals['scored']} scans scored, "
                     f"{totals['skipped']} already scored, {totals['dicom']} DICOM objects written"
                     f"{f' to {args.out}' if args.out else ''}; {poll.waiting} studies still being written or empty, "
                     f"{poll.loose_files} loose files outside study folders (not scored)\n"
                     f"scores: {workdir / 'scoring' / 'scores.parquet'}\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    from pipeline.storage import Workdir, read_parquet

    wd = Workdir(args.workdir.resolve())
    catalog = read_parquet(wd.catalog)
    if catalog is None:
        raise UserInputError(f"no catalogue in {args.workdir}: run `scanlens ingest` first")
    quarantine = read_parquet(wd.quarantine)
    by_kind = catalog.groupby([catalog["modality"].fillna("unknown"), "dims"]).size()
    labels = catalog.groupby([catalog["split"].fillna("none"), catalog["label"].astype("string").fillna("none")]).size()
    out = [f"work folder: {wd.root}", f"  catalogue:  {wd.catalog} ({len(catalog)} scans)"]
    out += [f"    {modality} {dims}D: {n}" for (modality, dims), n in by_kind.items()]
    out += [f"    split {split} label {label}: {n}" for (split, label), n in labels.items()]
    out.append(f"  volumes:    {wd.volumes}/")
    out.append(f"  quarantine: {wd.quarantine} ({0 if quarantine is None else len(quarantine)} files)")
    if quarantine is not None:
        out += [f"    {reason}: {n}" for reason, n in quarantine["reason"].value_counts().sort_index().items()]
    out.append(f"  manifest:   {wd.manifest}")
    for card_path in sorted((wd.root / "models").glob("*/model_card.json")):
        card = json.loads(card_path.read_text())
        auroc = card["validation"]["best_auroc"]
        out.append(f"  model:      {card_path.parent} ({card['dims']}D, {card['validation']['epochs_run']} epochs, "
                   f"best validation AUROC {'n/a' if auroc is None else f'{auroc:.3f}'})")
    metrics_path = wd.root / "evaluation" / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        parts = []
        for name in ("oof", "test"):
            block = metrics.get(name)
            if block and block.get("auroc") is not None:
                ci = block.get("auroc_ci")
                parts.append(f"{name} AUROC {block['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        out.append(f"  evaluation: {metrics_path} ({metrics['settings']['n_folds']}-fold; {'; '.join(parts)})")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _import_medmnist(args: argparse.Namespace) -> int:
    from pipeline.demo import prepare_demo_inbox
    from pipeline.io.medmnist import import_medmnist

    if args.inbox:
        studies = prepare_demo_inbox(args.npz, args.out, args.limit, args.seed)
        sys.stdout.write(f"{len(studies)} studies in the inbox {args.out}\n")
        return 0
    result = import_medmnist(args.npz, args.out, fmt=args.format, limit=args.limit, seed=args.seed)
    sys.stdout.write(f"wrote {result.n_items} {result.dims}D items for {result.n_patients} synthetic patients to {args.out}\n")
    sys.stdout.write(f"labels: {result.labels_path}\n")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest import ingest

    limits = ReadLimits(max_file_mb=args.max_file_mb, max_decoded_mb=args.max_decoded_mb)
    worker_limits = WorkerLimits(timeout_s=args.task_timeout, memory_mb=args.worker_memory_mb)
    config = IngestConfig(
        source=args.src, workdir=args.workdir, labels=args.labels, secret=args.secret,
        keep_demographics=args.keep_demographics, allow_burned_in=args.allow_burned_in,
        spacing_tolerance=args.spacing_tolerance, workers=args.workers, rehash=args.rehash,
        limits=limits, worker_limits=worker_limits, follow_external_links=args.follow_external_links,
    )
    result = ingest(config)
    if args.timings is not None:
        import pandas as pd

        from pipeline.storage import atomic_write_bytes

        table = pd.DataFrame(result.timings, columns=["source_path", "stage", "seconds"])
        atomic_write_bytes(args.timings, table.to_csv(index=False).encode())
    quarantined = ", ".join(f"{k}={v}" for k, v in result.quarantine_by_reason.items()) or "none"
    sys.stdout.write(
        f"{result.n_scans} scans catalogued from {result.n_source_files} files "
        f"({result.n_volumes_written} volumes written); quarantined: {quarantined}; "
        f"slowest file {result.slowest_file_seconds:.2f} s\n"
        f"catalogue: {result.workdir / 'catalog.parquet'}\n"
    )
    if result.unmatched_label_lines:
        lines = ", ".join(str(n) for n in result.unmatched_label_lines[:10])
        more = len(result.unmatched_label_lines) - 10
        raise UserInputError(
            f"{len(result.unmatched_label_lines)} labels row(s) match no scan under SRC (line(s) {lines}"
            f"{f' +{more} more' if more > 0 else ''}); the other scans were ingested"
        )
    return 0


COMMANDS = {"import-medmnist": _import_medmnist, "ingest": _ingest, "train": _train, "evaluate": _evaluate,
            "explain": _explain, "report": _report, "registry": _registry, "score": _score,
            "status": _status}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    set_lock_timeout(args.lock_timeout)  # None: $SCANLENS_LOCK_TIMEOUT or the default
    try:
        return COMMANDS[args.command](args)
    except UserInputError as exc:
        sys.stderr.write(f"scanlens: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("scanlens: interrupted\n")
        return 130
    except Exception as exc:  # internal failure: no PHI-bearing message unless asked for
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"scanlens: internal error ({type(exc).__name__}); rerun with --debug for the traceback\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
