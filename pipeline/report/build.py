"""The interpretability report for a review board: ``W/reports/scanlens_report_<hash>.pdf``.

A4, page numbers, a table of contents, and the sections of :data:`SECTIONS`. Built with reportlab
from the work folder's files only (catalogue counts, quarantine counts, ``W/evaluation``,
``W/saliency``, the fold models' cards): pseudonymous by construction, PDF metadata set
explicitly. The same inputs give the same bytes (reportlab's invariant mode); an unchanged work
folder rewrites nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    Image,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.tableofcontents import TableOfContents

from pipeline import __version__
from pipeline.errors import UserInputError
from pipeline.evaluate.crossval import fold_dir
from pipeline.evaluate.folds import evaluation_dir
from pipeline.explain.run import saliency_dir
from pipeline.locking import writes_workdir
from pipeline.report.claim import CLAIM_2024
from pipeline.storage import Workdir, atomic_write, atomic_write_bytes, read_parquet
from pipeline.train.card import git_sha, library_versions

log = logging.getLogger(__name__)
SECTIONS = ("1 Title", "2 Intended use", "3 Data", "4 Model and training", "5 Performance", "6 Subgroups",
            "7 Saliency", "8 Limitations", "9 Reproducibility receipt", "10 CLAIM 2024 checklist")
NOT_LOCALISATION = ("Saliency maps show which input voxels changed this model's score; they are not evidence "
                    "of where a lesion is, and must not be used to localise findings or to justify a diagnosis.")


@dataclass(frozen=True)
class ReportSettings:
    """Words that the pipeline cannot know, with defaults that say so."""

    audience: str = "the institutional review board (model validation)"
    intended_use: str = ("Research use: triage support that estimates the probability of the positive class for a "
                         "single scan, for review by a qualified clinician. Not a diagnostic device.")
    out_of_scope: str = ("Diagnosis without clinician review; patients, modalities, scanners or populations unlike the "
                         "training data; paediatric use unless evaluated; any use as localisation of findings.")


class _Document(SimpleDocTemplate):
    def afterFlowable(self, flowable: Any) -> None:  # noqa: N802 (reportlab's hook name)
        if isinstance(flowable, Paragraph) and flowable.style.name in ("Heading1", "Heading2"):
            level = 0 if flowable.style.name == "Heading1" else 1
            self.notify("TOCEntry", (level, flowable.getPlainText(), self.page))


def _page_number(canvas: Any, doc: Any) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 8)
    canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"Page {doc.page}")
    canvas.drawString(2 * cm, 1.2 * cm, "ScanLens interpretability report - pseudonymised, no PHI")
    canvas.restoreState()


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def _table(rows: list[list[Any]], widths: list[float] | None = None) -> Table:
    style = getSampleStyleSheet()["BodyText"]
    small = ParagraphStyle("cell", parent=style, fontSize=7.5, leading=9)
    data = [[Paragraph(str(c), small) for c in row] for row in rows]
    table = Table(data, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _image(path: Path, width: float) -> Image:
    image = Image(str(path))
    scale = width / image.imageWidth
    image.drawWidth, image.drawHeight = width, image.imageHeight * scale
    return image


def _inputs(workdir: Path) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, list[dict[str, Any]]]:
    metrics_path, sanity_path = evaluation_dir(workdir) / "metrics.json", saliency_dir(workdir) / "sanity.json"
    if not metrics_path.exists():
        raise UserInputError(f"no evaluation in {workdir}: run `scanlens evaluate` first")
    if not sanity_path.exists():
        raise UserInputError(f"no saliency maps in {workdir}: run `scanlens explain` first")
    metrics, sanity = json.loads(metrics_path.read_text()), json.loads(sanity_path.read_text())
    cases = pd.read_parquet(saliency_dir(workdir) / "cases.parquet")
    cards = []
    for k in range(metrics["settings"]["n_folds"]):
        record = json.loads((fold_dir(workdir, k) / "fold.json").read_text())
        cards.append(json.loads((workdir / "models" / record["model_id"] / "model_card.json").read_text()))
    return metrics, sanity, cases, cards


@dataclass(frozen=True)
class Report:
    path: Path
    pages: int
    sections: tuple[str, ...] = SECTIONS


@writes_workdir("report")
def build_report(workdir: Path, settings: ReportSettings = ReportSettings(), today: dt.date | None = None) -> Report:
    """Write the PDF (unless an identical one exists) and return its path and page count.
    ``W/reports/<name>.json`` beside it records the page count and sections."""
    metrics, sanity, cases, cards = _inputs(workdir)
    wd = Workdir(workdir)
    catalog = pd.read_parquet(wd.catalog)
    quarantine = read_parquet(wd.quarantine)
    date = (today or dt.date.today()).isoformat()
    key = hashlib.sha256(json.dumps([metrics, sanity, cases.to_dict("records"), [c["model_id"] for c in cards],
                                     asdict(settings), date, __version__,
                                     hashlib.sha256(Path(__file__).read_bytes()).hexdigest()], sort_keys=True, default=str).encode())
    path = workdir / "reports" / f"scanlens_report_{key.hexdigest()[:12]}.pdf"
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        log.info("report up to date: %s", path)
        return Report(path, int(json.loads(sidecar.read_text())["pages"]))
    story = _story(workdir, metrics, sanity, cases, cards, catalog, quarantine, settings, date)
    pages: list[int] = []

    def write(tmp: Path) -> None:
        doc = _Document(str(tmp), pagesize=A4, leftMargin=2 * cm, rightMargin=2 * cm, topMargin=2 * cm,
                        bottomMargin=2 * cm, title="ScanLens interpretability report", author="ScanLens",
                        subject=f"Model {cards[0]['model_id']}", creator=f"ScanLens {__version__}", keywords="",
                        invariant=1)
        doc.multiBuild(story, onFirstPage=_page_number, onLaterPages=_page_number)
        pages.append(doc.page)

    atomic_write(path, write)
    atomic_write_bytes(sidecar, json.dumps({"pages": pages[0], "sections": list(SECTIONS)}).encode())
    log.info("report: %s (%d pages)", path, pages[0])
    return Report(path, pages[0])


def _story(workdir: Path, metrics: dict[str, Any], sanity: dict[str, Any], cases: pd.DataFrame,
           cards: list[dict[str, Any]], catalog: pd.DataFrame, quarantine: pd.DataFrame | None,
           settings: ReportSettings, date: str) -> list[Any]:
    styles = getSampleStyleSheet()
    h1, h2, body = styles["Heading1"], styles["Heading2"], styles["BodyText"]
    width = A4[0] - 4 * cm
    card = cards[0]
    pos = metrics["positive_class"]
    out: list[Any] = [Paragraph("ScanLens interpretability report", styles["Title"])]

    out.append(Paragraph(SECTIONS[0], h1))
    out.append(_table([["field", "value"],
                       ["model", f"ResNet-50 {card['dims']}D classifier, {len(cards)} fold models "
                                 f"({', '.join(c['model_id'] for c in cards)})"],
                       ["pipeline version", f"ScanLens {__version__}, git {card['git_sha']}"],
                       ["report date", date], ["prepared for", settings.audience]], [4 * cm, width - 4 * cm]))
    toc = TableOfContents()
    toc.levelStyles = [ParagraphStyle("toc1", fontSize=10, leftIndent=10, leading=14),
                       ParagraphStyle("toc2", fontSize=9, leftIndent=24, leading=12)]
    out += [Spacer(1, 0.5 * cm), Paragraph("Contents", ParagraphStyle("contents", parent=h2)), toc, PageBreak()]

    out.append(Paragraph(SECTIONS[1], h1))
    out += [Paragraph(f"<b>Intended use.</b> {settings.intended_use}", body),
            Paragraph(f"<b>Out of scope.</b> {settings.out_of_scope}", body),
            Paragraph(f"Study goal: model creation with internal validation ({metrics['settings']['n_folds']}-fold "
                      "patient-grouped cross-validation and a held-out test set).", body)]

    out.append(Paragraph(SECTIONS[2], h1))
    modalities = catalog.groupby([catalog["modality"].fillna("unknown"), "dims"]).size()
    out.append(Paragraph("Sources (pseudonymised work folder; no names, identifiers, dates or UIDs): " + "; ".join(
        f"{n} {m} {d}D scans" for (m, d), n in modalities.items()) + f" from {catalog['patient_id'].nunique()} patients.", body))
    rows = [["partition", "scans per class", "patients"]]
    for name, entry in metrics["counts"].items():
        rows.append([name, ", ".join(f"class {c}: {n}" for c, n in entry["scans"].items()), entry["patients"]])
    out += [Paragraph("Counts per class per partition (patients never cross partitions):", body), _table(rows)]
    out.append(Paragraph(
        "<b>De-identification.</b> Source headers are reduced to an allow-list of technical attributes; patient, "
        "study and series identifiers are replaced by keyed HMAC-SHA-256 pseudonyms; dates, names and UIDs are "
        "dropped; images flagged with burned-in annotations are quarantined unless explicitly allowed. Source files "
        "are never modified.", body))
    by_reason = {} if quarantine is None else quarantine["reason"].value_counts().sort_index().to_dict()
    out += [Paragraph("Exclusions (quarantined source files, by reason):", body),
            _table([["reason", "files"]] + ([[r, n] for r, n in by_reason.items()] or [["none", 0]]))]

    out.append(Paragraph(SECTIONS[3], h1))
    hyper, pre = card["hyperparameters"], card["preprocessing"]["config"]
    out.append(_table([["item", "value"],
                       ["architecture", card["architecture"]], ["dimensions", f"{card['dims']}D"],
                       ["inflation", json.dumps(card.get("inflation")) if card.get("inflation") else "none (2D)"],
                       ["initial weights", card["weights_source"]["description"]],
                       ["input size", " x ".join(str(s) for s in card["input_size"]) + " voxels"],
                       ["preprocessing", json.dumps(pre)], ["augmentation", json.dumps(card["augmentation"])],
                       ["hyperparameters", json.dumps({k: hyper[k] for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                                             "patience", "seed") if k in hyper})],
                       ["model selection", "best validation AUROC on a patient-grouped 20% of each fold's training data"],
                       ["device", card["device"]]], [4 * cm, width - 4 * cm]))

    out.append(Paragraph(SECTIONS[4], h1))
    op = metrics["operating_point"]
    out.append(Paragraph(f"Operating point: threshold {_fmt(op['threshold'])} ({op['rule']}), {op['statement']}. "
                         f"Positive class: {pos}. 95% CIs: patient-level bootstrap, {metrics['settings']['n_resamples']} "
                         "resamples.", body))
    names = ["auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy", "balanced_accuracy", "brier", "ece"]
    rows = [["metric", "out-of-fold (pooled)", "held-out test (fold ensemble)"]]
    for name in names:
        if name in metrics["oof"]:
            test = metrics["test"]
            rows.append([name, _fmt(metrics["oof"][name], metrics["oof"].get(f"{name}_ci")),
                         _fmt(test[name], test.get(f"{name}_ci")) if test else "no test set"])
    out.append(_table(rows))
    for plot, caption in (("roc", "ROC"), ("pr", "Precision-recall"), ("calibration", "Calibration"),
                          ("confusion_matrix", "Confusion matrix at the pre-specified operating point"),
                          ("forest", "Per-fold AUROC (forest plot)")):
        png = evaluation_dir(workdir) / f"{plot}.png"
        if png.exists():
            out += [Paragraph(caption, h2), _image(png, width * (0.55 if plot not in ("confusion_matrix", "forest") else 0.8))]
    if metrics["test"]:
        out.append(Paragraph(f"Held-out test set: AUROC {_fmt(metrics['test']['auroc'], metrics['test']['auroc_ci'])} "
                             f"on {metrics['test']['n_scans']} scans of {metrics['test']['n_patients']} patients.", body))

    out.append(Paragraph(SECTIONS[5], h1))
    groups = metrics.get("subgroups") or {}
    rows = [["set", "column", "value", "n scans / patients", "AUROC (95% CI)", "flag"]]
    for part in ("oof", "test"):
        for column, entries in (groups.get(part) or {}).items():
            for e in entries:
                rows.append([part, column, e["value"], f"{e['n_scans']} / {e['n_patients']}",
                             _fmt(e.get("auroc"), e.get("auroc_ci")), e.get("reason") or ""])
    out.append(_table(rows) if len(rows) > 1 else Paragraph("No subgroup columns were configured.", body))

    out.append(Paragraph(SECTIONS[6], h1))
    out.append(Paragraph(f"<b>{NOT_LOCALISATION}</b>", body))
    out.append(Paragraph(f"Sanity checks on model {sanity['reference_model']} over {sanity['n_sanity_cases']} cases: "
                         f"cascading model-parameter randomisation (fails when the fully randomised model's maps still "
                         f"correlate with Spearman rho >= {sanity['threshold']}), deletion curves against random order, "
                         "and integrated-gradients completeness.", body))
    rows = [["method", "verdict", "final Spearman", "deletion AUC (random)", "IG completeness |delta|/gap"]]
    for method, entry in sanity["methods"].items():
        rows.append([method, entry["verdict"].upper() if not entry["passed"] else entry["verdict"],
                     _fmt(entry["randomisation"]["final_spearman"]),
                     f"{entry['deletion_auc']:.3f} ({entry['deletion_random_auc']:.3f})",
                     _fmt(entry.get("ig_relative_delta_median"))])
    out.append(_table(rows))
    for kind in ("TP", "TN", "FP", "FN"):
        chosen = cases[cases["kind"] == kind]
        if chosen.empty:
            continue
        out.append(Paragraph(f"{kind} cases ({sanity['source']})", h2))
        for case in chosen.itertuples(index=False):
            files = list(json.loads(case.files).values())
            out.append(Paragraph(f"{case.scan_id}: label {case.label}, p = {case.p:.3f}", body))
            first = _image(workdir / files[0], 1)
            two_d = first.imageWidth < 1.5 * first.imageHeight
            per_row = 2 if two_d else 1
            cells = [_image(workdir / rel, width / per_row - 0.3 * cm) for rel in files]
            grid = [cells[i:i + per_row] + [""] * (per_row - len(cells[i:i + per_row])) for i in range(0, len(cells), per_row)]
            out.append(Table(grid))

    out.append(Paragraph(SECTIONS[7], h1))
    limits = ["Internal validation only: no external test site.",
              "Labels are taken from the labels file as given; their reference standard is not known to the pipeline."]
    if card["weights_source"]["kind"] == "random-init":
        limits.append("The models were trained from random initialisation (no ImageNet weights were available).")
    if any(e["flag"] for part in ("oof", "test") for entries in (groups.get(part) or {}).values() for e in entries):
        limits.append("Some subgroups are too small for confidence intervals (flagged in section 6).")
    if not sanity["all_passed"]:
        limits.append("At least one saliency method failed its sanity check: its maps must not be interpreted.")
    limits.append(NOT_LOCALISATION)
    out += [Paragraph(f"- {text}", body) for text in limits]

    out.append(Paragraph(SECTIONS[8], h1))
    versions = library_versions()
    out.append(_table([["item", "value"], ["git SHA", git_sha()],
                       ["fold assignment hash", metrics["settings"].get("folds_hash", "n/a")],
                       ["data manifest hashes", ", ".join(c["training_data"]["manifest_hash"][:16] for c in cards)],
                       ["seeds", f"training {card['seed']}, folds {metrics['settings']['fold_seed']}, bootstrap "
                                 f"{metrics['settings']['bootstrap_seed']}"],
                       ["training config", json.dumps(card["hyperparameters"])],
                       ["evaluation config", json.dumps(metrics["settings"])],
                       ["library versions", ", ".join(f"{k} {v}" for k, v in versions.items())]], [4 * cm, width - 4 * cm]))

    out.append(Paragraph(SECTIONS[9], h1))
    out.append(_table([["item", "topic", "where"]] + [[n, topic, where] for n, topic, where in CLAIM_2024],
                      [1.2 * cm, 9 * cm, width - 10.2 * cm]))
    return out
