"""Command line: ``python -m pipeline <command>`` (installed as ``scanlens``).

Exit codes: 0 success; 2 user error (one line on stderr, no traceback); 1 internal failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pipeline import __version__
from pipeline.errors import DistributedRunError, UserInputError
from pipeline.layout import Workdir
from pipeline.locking import set_lock_timeout
from pipeline.logsafety import install as install_log_redaction
from pipeline.settings import MODEL_KINDS, PROFILES, dims_of
from pipeline.settings.augment import AugmentConfig
from pipeline.settings.cli import add_settings, from_args
from pipeline.settings.distributed import DistributedSettings
from pipeline.settings.drift import DriftSettings
from pipeline.settings.evaluate import CVSettings, EvaluationSettings
from pipeline.settings.explain import AttributionConfig, ExplainSettings
from pipeline.settings.ingest import IngestSettings
from pipeline.settings.pacs import PacsAuthSettings, PacsSendSettings
from pipeline.settings.preprocess import PreprocessSettings
from pipeline.settings.score import ScoreSettings
from pipeline.settings.train import TrainConfig

if TYPE_CHECKING:
    from pipeline.deid import Pseudonymizer
    from pipeline.preprocess import PreprocessConfig

log = logging.getLogger("pipeline")


def _parser(profile: str = "default") -> argparse.ArgumentParser:
    """The ``scanlens`` parser; settings flags take their defaults from ``profile``."""
    parser = argparse.ArgumentParser(prog="scanlens", description="ScanLens medical-imaging pipeline.")
    parser.add_argument("--version", action="version", version=f"scanlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of internal errors")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for a work folder another command is writing "
        "(default $SCANLENS_LOCK_TIMEOUT or 600), then exit 2",
    )
    parser.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default="default",
        help="named defaults for every setting: default, or demo (small and quick on a CPU; what "
        "make demo uses). Flags given explicitly win (default: default)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_import_medmnist,
        _add_ingest,
        _add_train,
        _add_evaluate,
        _add_explain,
        _add_report,
        _add_registry,
        _add_score,
        _add_drift,
        _add_status,
        _add_listen,
        _add_fetch,
    ):
        add(commands, profile)
    return parser


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_import_medmnist(commands: Commands, profile: str) -> None:
    mm = commands.add_parser(
        "import-medmnist",
        help="write a MedMNIST .npz as a DICOM or NIfTI study folder with labels.csv",
        description="Write a MedMNIST .npz (2D or 3D) as a realistic study folder with synthetic patients "
        "and DIR/labels.csv (columns documented in its header comment).",
    )
    mm.add_argument("npz", type=Path, help="MedMNIST .npz file")
    mm.add_argument("--out", type=Path, required=True, help="output study folder")
    mm.add_argument(
        "--format", choices=("dicom", "nifti"), default="dicom", help="3D output format (2D is always DICOM)"
    )
    mm.add_argument("--limit", type=int, default=None, help="keep at most N items per split (stratified by label)")
    mm.add_argument("--seed", type=int, default=0, help="random seed for the subset and synthetic headers")
    mm.add_argument(
        "--inbox",
        action="store_true",
        help="write new studies to score instead: one folder per study (<MRN>_<accession>) directly "
        "under OUT, no labels file; studies already there are kept",
    )


def _add_ingest(commands: Commands, profile: str) -> None:
    ing = commands.add_parser(
        "ingest",
        help="catalogue, de-identify and convert a folder of DICOM/NIfTI scans",
        description="Scan SRC recursively (DICOM with or without extension, DICOMDIR, .nii, .nii.gz) and write "
        "W/catalog.parquet, W/quarantine.parquet, W/ingest_manifest.parquet and W/volumes/. SRC is never modified.",
    )
    ing.add_argument("src", type=Path, help="source folder (read-only)")
    ing.add_argument("--workdir", type=Path, required=True, help="work folder W")
    ing.add_argument("--labels", type=Path, default=None, help="labels CSV (scan_ref,label[,split,patient_id])")
    ing.add_argument(
        "--secret", default=None, help="pseudonymisation key (default: $SCANLENS_SECRET or W/.scanlens/secret.key)"
    )
    add_settings(ing, IngestSettings, profile=profile)
    ing.add_argument(
        "--timings",
        type=Path,
        default=None,
        metavar="CSV",
        help="write source_path,stage,seconds for every file read (stage probe or build), "
        "to find slow files; it holds source paths, like the manifest",
    )


def add_training_flags(parser: argparse.ArgumentParser, profile: str = "default") -> None:
    """Flags shared by `train` and the commands that train (evaluate)."""
    parser.add_argument("--workdir", type=Path, required=True, help="work folder W")
    parser.add_argument(
        "--dims",
        choices=MODEL_KINDS,
        default=MODEL_KINDS[0],
        help="2D model, or 3D model inflated from 2D (default: %(default)s)",
    )
    add_settings(parser, PreprocessSettings, TrainConfig, AugmentConfig, DistributedSettings, profile=profile)


def _add_train(commands: Commands, profile: str) -> None:
    tr = commands.add_parser(
        "train",
        help="fine-tune a 2D or 3D ResNet-50 on the catalogue's labelled scans",
        description="Train on split `train` and early-stop on `val` (or a seeded patient-grouped split). "
        "Writes W/models/<model_id>/ (weights.pt, model_card.json, checkpoint.pt, history.json).",
    )
    add_training_flags(tr, profile)
    tr.add_argument("--resume", action="store_true", help="continue from the model's last checkpoint")
    tr.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N epochs of this invocation (continue later with --resume)",
    )
    tr.add_argument(
        "--fold",
        type=int,
        default=None,
        metavar="K",
        help="train fold K's model of the work folder's cross-validation (folds made by `evaluate` or cv_folds) "
        "and write its out-of-fold and test predictions; always resumes",
    )


def _add_evaluate(commands: Commands, profile: str) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="patient-grouped K-fold cross-validation with a held-out test set and review-board statistics",
        description="Hold out a patient-grouped test set (the catalogue's `test` split, else --test-fraction), "
        "split the rest with StratifiedGroupKFold by patient, train one model per fold (resumable), and write "
        "W/evaluation/: folds.parquet, oof_predictions.parquet, test_predictions.parquet, metrics.json and plots.",
    )
    add_training_flags(ev, profile)
    add_settings(ev, CVSettings, EvaluationSettings, profile=profile)


def _add_explain(commands: Commands, profile: str) -> None:
    ex = commands.add_parser(
        "explain",
        help="Captum saliency maps for selected cases, with sanity and faithfulness checks",
        description="Explain the most confident TP/TN and the worst FP/FN at the pre-specified operating point "
        "(held-out test set by the fold ensemble, or out-of-fold by each case's fold model) with integrated "
        "gradients, saliency, GradCAM and occlusion. Writes W/saliency/ (PNG overlays or 3D montages, NIfTI maps "
        "for 3D scans, cases.parquet, sanity.json). Needs `scanlens evaluate` first.",
    )
    ex.add_argument("--workdir", type=Path, required=True, help="work folder W")
    add_settings(ex, ExplainSettings, AttributionConfig, profile=profile)


def _add_report(commands: Commands, profile: str) -> None:
    rp = commands.add_parser(
        "report",
        help="write the review-board PDF and print its path",
        description="Write W/reports/scanlens_report_<hash>.pdf from W/evaluation and W/saliency "
        "(A4, table of contents, page numbers, CLAIM 2024 checklist). Prints the PDF's path.",
    )
    rp.add_argument("--workdir", type=Path, required=True, help="work folder W")
    rp.add_argument("--audience", default=None, help="who the report is for (title page)")


def _add_registry(commands: Commands, profile: str) -> None:
    rg = commands.add_parser(
        "registry",
        help="model registry: list, show, register or promote versions",
        description="Versions of evaluated models in W/registry/, the champion, and the history "
        "of promotions and rejections with their reasons.",
    )
    rg_commands = rg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    for name, text in (
        ("list", "every version with its status"),
        ("show", "one version's record and history"),
        ("register", "store the work folder's current evaluation as a version"),
        ("promote", "make a version the champion (needs --reason)"),
    ):
        action = rg_commands.add_parser(name, help=text)
        action.add_argument("--workdir", type=Path, required=True, help="work folder W")
        if name in ("show", "promote"):
            action.add_argument("version", help="version id (v-...)")
        if name == "promote":
            action.add_argument("--reason", required=True, help="why (recorded in the history)")
        if name == "register":
            action.add_argument("--report", type=Path, default=None, help="the report PDF to store with it")


def _add_score(commands: Commands, profile: str) -> None:
    sc = commands.add_parser(
        "score",
        help="score the studies in an inbox folder with the champion (what the Dagster sensor does)",
        description="Each top-level folder of INBOX is one study (any layout inside). Every study is ingested and "
        "de-identified into W/scoring/intake/<key>/ (unreadable files are quarantined there with a reason), scored "
        "with the registry's champion into W/scoring/scores.parquet (pseudonymous ids, calibrated probability, "
        "uncertainty, decision: positive, negative or refer with its reason, model version) with a GradCAM overlay in W/scoring/overlays/, and, with --out, "
        "a DICOM Comprehensive SR and a Secondary Capture of the overlay per scan are written to OUTBOX. Scans "
        "already scored by the current champion are skipped. INBOX is never modified.",
    )
    sc.add_argument("inbox", type=Path, help="inbox folder: one folder per study")
    sc.add_argument("--workdir", type=Path, required=True, help="work folder W (holds the registry)")
    sc.add_argument("--out", type=Path, default=None, help="outbox for the DICOM SR and Secondary Capture objects")
    sc.add_argument(
        "--secret", default=None, help="pseudonymisation key (default: $SCANLENS_SECRET or W/.scanlens/secret.key)"
    )
    sc.add_argument(
        "--stable-seconds",
        type=float,
        default=0.0,
        help="skip (for now) studies with a file modified less than this many seconds ago",
    )
    add_settings(sc, ScoreSettings, profile=profile)
    pacs = sc.add_argument_group("sending results to the PACS (credentials from $SCANLENS_PACS_USER/_PASSWORD/_TOKEN)")
    add_settings(pacs, PacsSendSettings, PacsAuthSettings, profile=profile)


def _add_drift(commands: Commands, profile: str) -> None:
    dr = commands.add_parser(
        "drift",
        help="compare the champion's recent scores with its out-of-fold reference (what score_drift does)",
        description="The champion's last --window scores in W/scoring/scores.parquet against the out-of-fold "
        "predictions of its registry version: PSI of the probabilities, out-of-distribution flag rate, refer rate, "
        "modality and manufacturer shares. Writes W/scoring/drift.json and two plots, and prints one line with the "
        "verdict against the limits (exit 0 either way).",
    )
    dr.add_argument("--workdir", type=Path, required=True, help="work folder W (holds the registry and the scores)")
    add_settings(dr, DriftSettings, profile=profile)


def _add_listen(commands: Commands, profile: str) -> None:
    ls = commands.add_parser(
        "listen",
        help="receive studies over the DICOM network (a Storage SCP) into an inbox folder",
        description="A DICOM Storage SCP (pynetdicom). It answers C-ECHO and stores C-STORE requests of image "
        "storage SOP classes (CT, MR, PET, CR, DX, MG, US, Secondary Capture, enhanced and multi-frame) in every "
        "transfer syntax ingest decodes, each instance atomically as INBOX/<stu_ pseudonym>/<ins_ pseudonym>.dcm. "
        "Score the inbox with `scanlens score` or the Dagster inbox_sensor. SIGTERM finishes the running "
        "associations, then exits 0.",
    )
    ls.add_argument("--inbox", type=Path, required=True, help="folder the received studies are written to")
    ls.add_argument("--ae-title", default="SCANLENS", help="our AE title (default: SCANLENS)")
    ls.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0: all)")
    ls.add_argument("--port", type=int, default=11112, help="TCP port (default: 11112)")
    ls.add_argument(
        "--allow",
        default="",
        metavar="AE[,AE...]",
        help="calling AE titles allowed to send; others are rejected at association (default: any)",
    )
    ls.add_argument("--max-pdu", type=int, default=262144, help="largest PDU received, bytes (default: 262144)")
    ls.add_argument(
        "--max-instance-mb", type=float, default=2048.0, help="larger instances are refused (default: 2048 MiB)"
    )
    ls.add_argument(
        "--min-free-mb",
        type=float,
        default=1024.0,
        help="below this much free disk every C-STORE is answered Out of Resources (default: 1024 MiB)",
    )
    ls.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="work folder whose secret key names the studies (not needed with --secret or $SCANLENS_SECRET)",
    )
    ls.add_argument(
        "--secret", default=None, help="pseudonymisation key (default: $SCANLENS_SECRET or W/.scanlens/secret.key)"
    )


def _add_fetch(commands: Commands, profile: str) -> None:
    from pipeline.settings.pacs import PacsAuthSettings

    fe = commands.add_parser(
        "fetch",
        help="retrieve studies from a DICOMweb archive (QIDO-RS, WADO-RS) into a source folder for ingest",
        description="Search the archive with QIDO-RS and retrieve every instance of the chosen studies with WADO-RS, "
        "several at a time, into OUT/<stu_ pseudonym>/<ins_ pseudonym>.dcm (keyed pseudonyms: no identifier in a "
        "name). Instances already in OUT are not requested again. With --studies and a label column, OUT/labels.csv "
        "is written for the studies retrieved completely: `scanlens ingest OUT --labels OUT/labels.csv`. Exits 1 "
        "when an instance could not be retrieved or a study was not found (run it again to retry), 2 for bad input "
        "or an archive that cannot be reached or refuses the credentials.",
    )
    fe.add_argument("--dicomweb", required=True, metavar="URL", help="DICOMweb base URL (e.g. http://pacs/dicom-web)")
    fe.add_argument("--out", type=Path, required=True, help="folder the studies are retrieved into")
    which = fe.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", action="append", metavar="UID", help="a StudyInstanceUID (repeat for more)")
    which.add_argument(
        "--studies",
        type=Path,
        metavar="CSV",
        help="CSV with a StudyInstanceUID column (and optionally label, split, patient_id: writes OUT/labels.csv)",
    )
    which.add_argument("--since", metavar="YYYYMMDD", help="every study dated on or after this day")
    fe.add_argument("--modality", default="", help="with --since: only studies with this modality (e.g. CT)")
    fe.add_argument(
        "--description", default="", metavar="WORD", help="with --since: only studies whose description has WORD"
    )
    fe.add_argument("--workers", type=int, default=4, metavar="N", help="instances retrieved at once (default: 4)")
    fe.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="work folder whose secret key names the files (not needed with --secret or $SCANLENS_SECRET)",
    )
    fe.add_argument(
        "--secret", default=None, help="pseudonymisation key (default: $SCANLENS_SECRET or W/.scanlens/secret.key)"
    )
    add_settings(fe, PacsAuthSettings, profile=profile)


def _add_status(commands: Commands, profile: str) -> None:
    st = commands.add_parser("status", help="summarise a work folder: scans, labels, quarantine, output paths")
    st.add_argument("--workdir", type=Path, required=True, help="work folder W")


def training_configs(args: argparse.Namespace) -> tuple[TrainConfig, PreprocessConfig, AugmentConfig]:
    """The training settings of a parsed ``train`` or ``evaluate`` command line."""
    pre = from_args(PreprocessSettings, args, args.profile).for_dims(dims_of(args.dims))
    return from_args(TrainConfig, args, args.profile), pre, from_args(AugmentConfig, args, args.profile)


def _train(args: argparse.Namespace) -> int:
    from pipeline.train import train
    from pipeline.train.distributed import is_main_rank
    from pipeline.train.launch import launch_workers, needs_launch

    dist = from_args(DistributedSettings, args, args.profile)
    cfg, pre, aug = training_configs(args)
    if needs_launch(dist):
        return launch_workers(args.argv, dist, cfg.batch_size)
    if args.fold is not None:
        return _train_fold(args, cfg, pre, aug, dist)
    result = train(
        args.workdir.resolve(), cfg, pre, aug, resume=args.resume, stop_after=args.stop_after, progress=True, dist=dist
    )
    if not is_main_rank():  # every process returns the result; the main one reports it
        return 0
    validation = result.card["validation"]
    metric = SELECTION_METRICS.get(validation["selection_metric"], validation["selection_metric"])
    value = "n/a" if validation["best_value"] is None else f"{validation['best_value']:.4f}"
    sys.stdout.write(
        f"model: {result.model_dir}\n"
        f"best {metric} {value} at epoch {validation['best_epoch']} "
        f"({validation['epochs_run']} epochs{', stopped early' if validation['early_stopped'] else ''}"
        f"{'' if result.completed else ', paused: resume with --resume'})\n"
    )
    return 0


def _train_fold(
    args: argparse.Namespace, cfg: TrainConfig, pre: PreprocessConfig, aug: AugmentConfig, dist: DistributedSettings
) -> int:
    from pipeline.evaluate import train_fold
    from pipeline.train.distributed import is_main_rank

    if args.stop_after is not None:
        raise UserInputError("--stop-after does not apply to --fold (a fold trains to the end, resuming)")
    run = train_fold(args.workdir.resolve(), args.fold, cfg, pre, aug, dist=dist)
    if not is_main_rank():
        return 0
    auroc = "n/a" if run.best_val_auroc is None else f"{run.best_val_auroc:.4f}"
    sys.stdout.write(
        f"model: {run.model_dir}\n"
        f"fold {run.fold}: best validation AUROC {auroc}; predicted {run.n_oof} out-of-fold and {run.n_test} test scans"
        f"{'' if run.predicted else ' (up to date)'}\n"
    )
    return 0


#: How the model-selection metrics of a card read in a sentence.
SELECTION_METRICS = {"val_auroc": "validation AUROC", "neg_val_loss": "negative validation loss (AUROC undefined)"}


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import cross_validate
    from pipeline.train.distributed import is_main_rank
    from pipeline.train.launch import launch_workers, needs_launch

    cfg, pre, aug = training_configs(args)
    dist = from_args(DistributedSettings, args, args.profile)
    cv = from_args(CVSettings, args, args.profile, dims=pre.dims)
    settings = from_args(EvaluationSettings, args, args.profile)
    if needs_launch(dist):
        return launch_workers(args.argv, dist, cfg.batch_size)
    result = cross_validate(args.workdir.resolve(), cv, cfg, pre, aug, settings, progress=True, dist=dist)
    if not is_main_rank():
        return 0
    m = result.metrics
    lines = [
        f"evaluation: {result.folder}",
        f"operating point: {m['operating_point']['rule']}"
        + (
            f", threshold {m['operating_point']['threshold']:.4f}"
            if m["operating_point"]["threshold"] is not None
            else ""
        ),
    ]
    for name in ("oof", "test"):
        block = m[name]
        if block is None:
            lines.append(f"{name}: no held-out test set")
            continue
        ci = block["auroc_ci"]
        lines.append(
            f"{name} AUROC {block['auroc']:.4f}"
            + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else " (no CI)")
            + f", {block['n_scans']} scans of {block['n_patients']} patients"
        )
    lines += _calibration_lines(m)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _calibration_lines(m: dict[str, Any]) -> list[str]:
    """ECE before/after recalibration and the referral point of a binary evaluation's metrics."""
    recal, before, after, referral = (
        m.get(k) for k in ("recalibration", "calibration_before", "calibration_after", "referral")
    )
    if not recal or not before or not after:
        return []
    part = "test" if before.get("test") else "oof"
    params = ", ".join(f"{k} {v:.3f}" for k, v in recal["params"].items())
    lines = [
        f"calibration: {recal['method']}{f' ({params})' if params else ''}; {part} ECE "
        f"{before[part]['ece']:.4f} before, {after[part]['ece']:.4f} after"
    ]
    for name in ("oof", "test"):
        block = (referral or {}).get(name)
        if referral and block:
            accuracy = block["accuracy_non_referred"]
            lines.append(
                f"referral {name}: {block['rate']:.1%} referred (target {referral['target_rate']:.0%}), accuracy "
                f"{'n/a' if accuracy is None else f'{accuracy:.4f}'} on the rest vs {block['accuracy_all']:.4f} on all"
            )
    return lines


def _explain(args: argparse.Namespace) -> int:
    from pipeline.explain.run import explain

    settings = from_args(
        ExplainSettings, args, args.profile, attribution=from_args(AttributionConfig, args, args.profile)
    )
    result = explain(args.workdir.resolve(), settings)
    lines = [f"saliency: {result.folder} ({len(result.cases)} cases from {result.sanity['source']})"]
    for method, entry in result.sanity["methods"].items():
        lines.append(
            f"  {method}: {entry['verdict']} (final Spearman {entry['randomisation']['final_spearman']:.3f}), "
            f"deletion AUC {entry['deletion_auc']:.3f} vs random {entry['deletion_random_auc']:.3f}"
        )
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
        lines = [
            f"{e.version}  {e.status:10}  OOF AUROC {e.record['oof_auroc']:.3f}  {e.reason or ''}" for e in entries
        ]
        sys.stdout.write("\n".join(lines or ["no versions registered"]) + "\n")
    elif args.registry_command == "show":
        entry = registry.entry(args.version)
        history = [h for h in registry.history() if h["version"] == args.version]
        sys.stdout.write(
            json.dumps({"status": entry.status, "record": entry.record, "history": history}, indent=2) + "\n"
        )
    elif args.registry_command == "register":
        entry = registry.register(args.report)
        sys.stdout.write(f"{entry.version} {entry.status}\n")
    else:
        entry = registry.promote(args.version, args.reason)
        sys.stdout.write(f"{entry.version} is the champion\n")
    return 0


def _score(args: argparse.Namespace) -> int:
    import time

    from pipeline.deid import project_pseudonymizer
    from pipeline.scoring import warm_scorer
    from pipeline.scoring.inbox import settled_studies

    workdir = args.workdir.resolve()
    settings = from_args(ScoreSettings, args, args.profile)
    send, auth = from_args(PacsSendSettings, args, args.profile), from_args(PacsAuthSettings, args, args.profile)
    if send.sends and args.out is None:
        raise UserInputError("--send-to and --stow-url send the DICOM outputs: give --out OUTBOX too")
    sender = _outbox_sender(args.out.resolve() if args.out else None, send, auth)
    scorer = warm_scorer(workdir, settings.device)  # the champion, ingest workers and table kept across studies
    champion = scorer.champion
    secret, pseudonymizer = project_pseudonymizer(args.secret, workdir)
    poll = settled_studies(args.inbox.resolve(), pseudonymizer, time.time(), args.stable_seconds)
    totals = {"scored": 0, "skipped": 0, "dicom": 0}
    for study in poll.ready:
        done = scorer.score_study(
            study.folder,
            study.key,
            args.out.resolve() if args.out else None,
            secret.decode(),
            overlays=settings.overlays,
        )
        quarantined = ", ".join(f"{k}={v}" for k, v in done.quarantine_by_reason.items()) or "none"
        not_scored = "".join(f", {n} not scored ({why})" for why, n in done.not_scored.items())
        sys.stdout.write(
            f"{study.key}: {done.n_scans} scans, {len(done.scores)} scored, {done.n_skipped} already "
            f"scored{not_scored}; quarantined: {quarantined}\n"
        )
        totals["scored"] += len(done.scores)
        totals["skipped"] += done.n_skipped
        totals["dicom"] += len(done.dicom_outputs)
        sender.send(done.dicom_outputs)
    if not poll.ready:
        sender.send([])  # objects left in OUTBOX/failed/ by an earlier run are re-sent all the same
    sys.stdout.write(
        f"{len(poll.ready)} studies with champion {champion.version}: {totals['scored']} scans scored, "
        f"{totals['skipped']} already scored, {totals['dicom']} DICOM objects written"
        f"{f' to {args.out}' if args.out else ''}; {poll.waiting} studies still being written or empty, "
        f"{poll.loose_files} loose files outside study folders (not scored)\n"
        f"scores: {Workdir(workdir).scores}\n"
    )
    return sender.finish()


class _OutboxSender:
    """``scanlens score``'s sending of each study's DICOM outputs (:mod:`pipeline.pacs.send`)."""

    def __init__(self, outbox: Path | None, send: PacsSendSettings, auth: PacsAuthSettings) -> None:
        from pipeline.pacs.send import SendReport

        self.outbox, self.settings, self.auth, self.report = outbox, send, auth, SendReport()

    def send(self, objects: list[Path]) -> None:
        from pipeline.pacs.send import send_objects

        if self.outbox is not None and self.settings.sends:
            self.report.merge(send_objects(self.outbox, objects, self.settings, self.auth))

    def finish(self) -> int:
        """Print what was sent; 1 when objects are left in OUTBOX/failed/ (re-sent by the next run)."""
        if not self.settings.sends:
            return 0
        summary = self.report.summary()
        sys.stdout.write(
            f"sent {summary['sent']} DICOM objects ({summary['resent_from_failed']} from failed/, "
            f"{summary['already_sent']} sent before)\n"
        )
        if self.report.failed:
            sys.stderr.write(
                f"scanlens: {len(self.report.failed)} DICOM objects could not be sent "
                f"({summary['failed_by_reason']}); they wait in {self.outbox}/failed/ and the next run re-sends them\n"
            )
            return 1
        return 0


def _outbox_sender(outbox: Path | None, send: PacsSendSettings, auth: PacsAuthSettings) -> _OutboxSender:
    from pipeline.pacs.send import Destination

    Destination.all_of(send)  # a malformed address or URL is a usage error before any scoring
    return _OutboxSender(outbox, send, auth)


def _drift(args: argparse.Namespace) -> int:
    from pipeline.scoring.drift import measure_drift, summary

    record = measure_drift(args.workdir, from_args(DriftSettings, args, args.profile))
    sys.stdout.write(f"{summary(record)}\ndrift: {Workdir(args.workdir).drift}\n")
    return 0


def _network_pseudonymizer(args: argparse.Namespace) -> Pseudonymizer:
    """The project key's pseudonymizer for ``listen`` and ``fetch``: ``--secret``, else
    ``$SCANLENS_SECRET``, else the key file of ``--workdir`` (which may then create it)."""
    from pipeline.deid import SECRET_ENV, Pseudonymizer, project_pseudonymizer

    if args.workdir is not None:
        return project_pseudonymizer(args.secret, args.workdir.resolve())[1]
    if args.secret or os.environ.get(SECRET_ENV):
        return Pseudonymizer((args.secret or os.environ[SECRET_ENV]).encode())
    raise UserInputError(f"no pseudonymisation key: give --workdir (its key file), --secret or ${SECRET_ENV}")


def _listen(args: argparse.Namespace) -> int:
    from pipeline.pacs.listener import ListenerSettings, StorageListener

    names = _network_pseudonymizer(args)
    settings = ListenerSettings(
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        allow=tuple(a for a in args.allow.split(",") if a.strip()),
        max_pdu=args.max_pdu,
        max_instance_bytes=int(args.max_instance_mb * 1024**2),
        min_free_bytes=int(args.min_free_mb * 1024**2),
    )
    return StorageListener(args.inbox.resolve(), settings, names).serve()


def _fetch(args: argparse.Namespace) -> int:
    from pipeline.layout import StudyDrop
    from pipeline.pacs.dicomweb import archive_client, fetch_studies, parse_date, search_studies
    from pipeline.pacs.studylist import StudyRow, check_uid, read_study_list, write_labels
    from pipeline.settings.pacs import PacsAuthSettings

    if args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, not {args.workers}")
    if (args.modality or args.description) and args.since is None:
        raise UserInputError("--modality and --description choose studies with --since")
    names = _network_pseudonymizer(args)
    since = parse_date(args.since) if args.since is not None else None
    if args.studies is not None:
        rows = read_study_list(args.studies)
    else:
        rows = [StudyRow(check_uid(uid, f"--study number {n}")) for n, uid in enumerate(args.study or [], 1)]
    client = archive_client(args.dicomweb, from_args(PacsAuthSettings, args, args.profile))
    if since is not None:
        rows = [StudyRow(study.uid) for study in search_studies(client, since, args.modality, args.description)]
    drop = StudyDrop(args.out.resolve())
    result = fetch_studies(client, drop, names, [row.uid for row in rows], workers=args.workers)
    out = [study.summary() for study in result.studies]
    out.append(
        f"{len(result.studies)} studies: {result.total('found')} instances found, {result.total('retrieved')} "
        f"retrieved, {result.total('skipped')} already on disk, {result.total('n_failed')} failed; into {drop.root}"
    )
    labelled = {names.study(row.uid): row for row in rows if row.label is not None}
    if labelled:
        series = {
            uid: labelled[s.key] for s in result.studies if s.complete and s.key in labelled for uid in s.series_uids
        }
        n_rows = write_labels(drop.labels, series)
        out.append(f"labels: {drop.labels} ({n_rows} series; ingest with --labels {drop.labels})")
    sys.stdout.write("\n".join(out) + "\n")
    if result.incomplete:
        sys.stderr.write(
            f"scanlens: {len(result.incomplete)} studies not retrieved completely (see above); run fetch again to retry\n"
        )
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from pipeline.storage import read_parquet

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
    for model_id in wd.model_ids():
        card = json.loads(wd.model(model_id).card.read_text())
        auroc = card["validation"]["best_auroc"]
        out.append(
            f"  model:      {wd.model(model_id).root} ({card['dims']}D, {card['validation']['epochs_run']} "
            f"epochs, best validation AUROC {'n/a' if auroc is None else f'{auroc:.3f}'})"
        )
    metrics_path = wd.metrics
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
    sys.stdout.write(
        f"wrote {result.n_items} {result.dims}D items for {result.n_patients} synthetic patients to {args.out}\n"
    )
    sys.stdout.write(f"labels: {result.labels_path}\n")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest import IngestConfig, ingest

    settings = from_args(IngestSettings, args, args.profile)
    result = ingest(
        IngestConfig.of(settings, source=args.src, workdir=args.workdir, labels=args.labels, secret=args.secret)
    )
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
        f"catalogue: {Workdir(result.workdir).catalog}\n"
    )
    if result.unmatched_label_lines:
        lines = ", ".join(str(n) for n in result.unmatched_label_lines[:10])
        more = len(result.unmatched_label_lines) - 10
        raise UserInputError(
            f"{len(result.unmatched_label_lines)} labels row(s) match no scan under SRC (line(s) {lines}"
            f"{f' +{more} more' if more > 0 else ''}); the other scans were ingested"
        )
    return 0


COMMANDS = {
    "import-medmnist": _import_medmnist,
    "ingest": _ingest,
    "train": _train,
    "evaluate": _evaluate,
    "explain": _explain,
    "report": _report,
    "registry": _registry,
    "score": _score,
    "drift": _drift,
    "status": _status,
    "listen": _listen,
    "fetch": _fetch,
}


def main(argv: Sequence[str] | None = None) -> int:
    profile = argparse.ArgumentParser(add_help=False)
    profile.add_argument("--profile", default="default")
    known, _ = profile.parse_known_args(argv)  # the profile decides the other flags' defaults
    args = _parser(known.profile if known.profile in PROFILES else "default").parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what distributed workers are started with
    rank = os.environ.get("RANK", "0")  # torchrun's other ranks log warnings only, and say which rank they are
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO if rank == "0" else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s"
        if rank == "0"
        else f"%(levelname)s [rank {rank}] %(name)s: %(message)s",
    )
    install_log_redaction()
    set_lock_timeout(args.lock_timeout)  # None: $SCANLENS_LOCK_TIMEOUT or the default
    try:
        return COMMANDS[args.command](args)
    except UserInputError as exc:
        sys.stderr.write(f"scanlens: error: {exc}\n")
        return 2
    except DistributedRunError as exc:
        sys.stderr.write(f"scanlens: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("scanlens: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001  (internal failure: no PHI-bearing message unless asked for)
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"scanlens: internal error ({type(exc).__name__}); rerun with --debug for the traceback\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
