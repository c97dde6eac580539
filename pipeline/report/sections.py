"""The report's sections, one builder each: ``builder(inputs, styles) -> flowables`` (heading included).

:data:`SECTIONS` names them in order and :data:`BUILDERS` holds their builders in the same order;
:func:`story` is the whole document body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.platypus import PageBreak, Paragraph, Spacer, Table
from reportlab.platypus.tableofcontents import TableOfContents

from pipeline import __version__
from pipeline.report.claim import CLAIM_2024
from pipeline.report.flowables import Styles, fmt, image, key_value_table, table
from pipeline.report.inputs import ReportInputs
from pipeline.train.card import git_sha, library_versions

SECTIONS = (
    "1 Title",
    "2 Intended use",
    "3 Data",
    "4 Model and training",
    "5 Performance",
    "6 Subgroups",
    "7 Saliency",
    "8 Limitations",
    "9 Reproducibility receipt",
    "10 CLAIM 2024 checklist",
)
NOT_LOCALISATION = (
    "Saliency maps show which input voxels changed this model's score; they are not evidence "
    "of where a lesion is, and must not be used to localise findings or to justify a diagnosis."
)
#: Metrics of the performance table, in order (those absent from ``metrics["oof"]`` are skipped).
METRICS = (
    "auroc",
    "auprc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "accuracy",
    "balanced_accuracy",
    "brier",
    "ece",
)
#: Evaluation plots (``W/evaluation/<name>.png``) with their captions; the last two are drawn wider.
PLOTS = (
    ("roc", "ROC"),
    ("pr", "Precision-recall"),
    ("calibration", "Calibration"),
    ("confusion_matrix", "Confusion matrix at the pre-specified operating point"),
    ("forest", "Per-fold AUROC (forest plot)"),
)
WIDE_PLOTS = ("confusion_matrix", "forest")
CASE_KINDS = ("TP", "TN", "FP", "FN")

Flowables = list[Any]
Builder = Callable[[ReportInputs, Styles], Flowables]


def title(r: ReportInputs, s: Styles) -> Flowables:
    """Which models, which pipeline, when and for whom; then the table of contents."""
    card = r.card
    model = (
        f"ResNet-50 {card['dims']}D classifier, {len(r.cards)} fold models "
        f"({', '.join(c['model_id'] for c in r.cards)})"
    )
    toc = TableOfContents()
    toc.levelStyles = [
        ParagraphStyle("toc1", fontSize=10, leftIndent=10, leading=14),
        ParagraphStyle("toc2", fontSize=9, leftIndent=24, leading=12),
    ]
    return [
        Paragraph(SECTIONS[0], s.h1),
        key_value_table(
            [
                ["field", "value"],
                ["model", model],
                ["pipeline version", f"ScanLens {__version__}, git {card['git_sha']}"],
                ["report date", r.date],
                ["prepared for", r.settings.audience],
            ],
            s.width,
        ),
        Spacer(1, 0.5 * cm),
        Paragraph("Contents", ParagraphStyle("contents", parent=s.h2)),
        toc,
        PageBreak(),
    ]


def intended_use(r: ReportInputs, s: Styles) -> Flowables:
    return [
        Paragraph(SECTIONS[1], s.h1),
        Paragraph(f"<b>Intended use.</b> {r.settings.intended_use}", s.body),
        Paragraph(f"<b>Out of scope.</b> {r.settings.out_of_scope}", s.body),
        Paragraph(
            f"Study goal: model creation with internal validation ({r.metrics['settings']['n_folds']}-fold "
            "patient-grouped cross-validation and a held-out test set).",
            s.body,
        ),
    ]


def data(r: ReportInputs, s: Styles) -> Flowables:
    """Sources, counts per class and partition, de-identification, and exclusions by reason."""
    catalog = r.catalog
    modalities = catalog.groupby([catalog["modality"].fillna("unknown"), "dims"]).size()
    sources = "; ".join(f"{n} {m} {d}D scans" for (m, d), n in modalities.items())
    rows = [["partition", "scans per class", "patients"]]
    for name, entry in r.metrics["counts"].items():
        rows.append([name, ", ".join(f"class {c}: {n}" for c, n in entry["scans"].items()), entry["patients"]])
    by_reason = {} if r.quarantine is None else r.quarantine["reason"].value_counts().sort_index().to_dict()
    return [
        Paragraph(SECTIONS[2], s.h1),
        Paragraph(
            "Sources (pseudonymised work folder; no names, identifiers, dates or UIDs): "
            + sources
            + f" from {catalog['patient_id'].nunique()} patients.",
            s.body,
        ),
        Paragraph("Counts per class per partition (patients never cross partitions):", s.body),
        table(rows),
        Paragraph(
            "<b>De-identification.</b> Source headers are reduced to an allow-list of technical attributes; patient, "
            "study and series identifiers are replaced by keyed HMAC-SHA-256 pseudonyms; dates, names and UIDs are "
            "dropped; images flagged with burned-in annotations are quarantined unless explicitly allowed. Source files "
            "are never modified.",
            s.body,
        ),
        Paragraph("Exclusions (quarantined source files, by reason):", s.body),
        table([["reason", "files"]] + ([[reason, n] for reason, n in by_reason.items()] or [["none", 0]])),
    ]


def selection_text(cards: list[dict[str, Any]]) -> str:
    """How the fold models' best epochs were chosen, as their cards record it."""
    where = "on a patient-grouped 20% of each fold's training data"
    chosen_by = {c.get("validation", {}).get("selection_metric") for c in cards}
    if "neg_val_loss" in chosen_by:
        return (
            f"best validation AUROC, or lowest validation loss where the validation share held one class "
            f"(AUROC undefined), {where}"
        )
    return f"best validation AUROC {where}"


def model_and_training(r: ReportInputs, s: Styles) -> Flowables:
    card = r.card
    hyper, pre = card["hyperparameters"], card["preprocessing"]["config"]
    quoted = {k: hyper[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "patience", "seed") if k in hyper}
    return [
        Paragraph(SECTIONS[3], s.h1),
        key_value_table(
            [
                ["item", "value"],
                ["architecture", card["architecture"]],
                ["dimensions", f"{card['dims']}D"],
                ["inflation", json.dumps(card.get("inflation")) if card.get("inflation") else "none (2D)"],
                ["initial weights", card["weights_source"]["description"]],
                ["input size", " x ".join(str(size) for size in card["input_size"]) + " voxels"],
                ["preprocessing", json.dumps(pre)],
                ["augmentation", json.dumps(card["augmentation"])],
                ["hyperparameters", json.dumps(quoted)],
                ["model selection", selection_text(r.cards)],
                ["device", card["device"]],
            ],
            s.width,
        ),
    ]


def performance(r: ReportInputs, s: Styles) -> Flowables:
    """Operating point, pooled out-of-fold and held-out test metrics with CIs, and the evaluation plots."""
    metrics, op, test = r.metrics, r.metrics["operating_point"], r.metrics["test"]
    out: Flowables = [
        Paragraph(SECTIONS[4], s.h1),
        Paragraph(
            f"Operating point: threshold {fmt(op['threshold'])} ({op['rule']}), {op['statement']}. "
            f"Positive class: {metrics['positive_class']}. 95% CIs: patient-level bootstrap, "
            f"{metrics['settings']['n_resamples']} resamples.",
            s.body,
        ),
    ]
    rows = [["metric", "out-of-fold (pooled)", "held-out test (fold ensemble)"]]
    for name in METRICS:
        if name in metrics["oof"]:
            rows.append(
                [
                    name,
                    fmt(metrics["oof"][name], metrics["oof"].get(f"{name}_ci")),
                    fmt(test[name], test.get(f"{name}_ci")) if test else "no test set",
                ]
            )
    out.append(table(rows))
    for plot, caption in PLOTS:
        png = r.workdir.plot(plot)
        if png.exists():
            out += [Paragraph(caption, s.h2), image(png, s.width * (0.8 if plot in WIDE_PLOTS else 0.55))]
    if test:
        out.append(
            Paragraph(
                f"Held-out test set: AUROC {fmt(test['auroc'], test['auroc_ci'])} "
                f"on {test['n_scans']} scans of {test['n_patients']} patients.",
                s.body,
            )
        )
    return out


def subgroups(r: ReportInputs, s: Styles) -> Flowables:
    rows = [["set", "column", "value", "n scans / patients", "AUROC (95% CI)", "flag"]]
    for part in ("oof", "test"):
        for column, entries in (r.subgroups.get(part) or {}).items():
            for e in entries:
                rows.append(
                    [
                        part,
                        column,
                        e["value"],
                        f"{e['n_scans']} / {e['n_patients']}",
                        fmt(e.get("auroc"), e.get("auroc_ci")),
                        e.get("reason") or "",
                    ]
                )
    return [
        Paragraph(SECTIONS[5], s.h1),
        table(rows) if len(rows) > 1 else Paragraph("No subgroup columns were configured.", s.body),
    ]


def saliency(r: ReportInputs, s: Styles) -> Flowables:
    """The not-for-localisation warning, the sanity checks per method, and the explained cases' maps."""
    sanity = r.sanity
    out: Flowables = [
        Paragraph(SECTIONS[6], s.h1),
        Paragraph(f"<b>{NOT_LOCALISATION}</b>", s.body),
        Paragraph(
            f"Sanity checks on model {sanity['reference_model']} over {sanity['n_sanity_cases']} cases: "
            f"cascading model-parameter randomisation (fails when the fully randomised model's maps still "
            f"correlate with Spearman rho >= {sanity['threshold']}), deletion curves against random order, "
            "and integrated-gradients completeness.",
            s.body,
        ),
    ]
    rows = [["method", "verdict", "final Spearman", "deletion AUC (random)", "IG completeness |delta|/gap"]]
    for method, entry in sanity["methods"].items():
        rows.append(
            [
                method,
                entry["verdict"].upper() if not entry["passed"] else entry["verdict"],
                fmt(entry["randomisation"]["final_spearman"]),
                f"{entry['deletion_auc']:.3f} ({entry['deletion_random_auc']:.3f})",
                fmt(entry.get("ig_relative_delta_median")),
            ]
        )
    out.append(table(rows))
    for kind in CASE_KINDS:
        chosen = r.cases[r.cases["kind"] == kind]
        if chosen.empty:
            continue
        out.append(Paragraph(f"{kind} cases ({sanity['source']})", s.h2))
        for case in chosen.itertuples(index=False):
            out += _case(r, s, case)
    return out


def _case(r: ReportInputs, s: Styles, case: Any) -> Flowables:
    """One explained case: its caption, then its maps two per row (2D) or one per row (3D)."""
    files = [r.workdir.root / rel for rel in json.loads(case.files).values()]
    first = image(files[0], 1)
    per_row = 2 if first.imageWidth < 1.5 * first.imageHeight else 1
    cells: list[Any] = [image(path, s.width / per_row - 0.3 * cm) for path in files]
    grid = [
        cells[i : i + per_row] + [""] * (per_row - len(cells[i : i + per_row])) for i in range(0, len(cells), per_row)
    ]
    return [Paragraph(f"{case.scan_id}: label {case.label}, p = {case.p:.3f}", s.body), Table(grid)]


def limitations(r: ReportInputs, s: Styles) -> Flowables:
    limits = [
        "Internal validation only: no external test site.",
        "Labels are taken from the labels file as given; their reference standard is not known to the pipeline.",
    ]
    if r.card["weights_source"]["kind"] == "random-init":
        limits.append("The models were trained from random initialisation (no ImageNet weights were available).")
    if any(
        e["flag"] for part in ("oof", "test") for entries in (r.subgroups.get(part) or {}).values() for e in entries
    ):
        limits.append("Some subgroups are too small for confidence intervals (flagged in section 6).")
    if not r.sanity["all_passed"]:
        limits.append("At least one saliency method failed its sanity check: its maps must not be interpreted.")
    limits.append(NOT_LOCALISATION)
    return [Paragraph(SECTIONS[7], s.h1)] + [Paragraph(f"- {text}", s.body) for text in limits]


def receipt(r: ReportInputs, s: Styles) -> Flowables:
    """What reproduces the evaluation: code, fold assignment, data manifests, seeds, configs, libraries."""
    card, settings = r.card, r.metrics["settings"]
    seeds = f"training {card['seed']}, folds {settings['fold_seed']}, bootstrap {settings['bootstrap_seed']}"
    return [
        Paragraph(SECTIONS[8], s.h1),
        key_value_table(
            [
                ["item", "value"],
                ["git SHA", git_sha()],
                ["fold assignment hash", settings.get("folds_hash", "n/a")],
                ["data manifest hashes", ", ".join(c["training_data"]["manifest_hash"][:16] for c in r.cards)],
                ["seeds", seeds],
                ["training config", json.dumps(card["hyperparameters"])],
                ["evaluation config", json.dumps(settings)],
                ["library versions", ", ".join(f"{k} {v}" for k, v in library_versions().items())],
            ],
            s.width,
        ),
    ]


def claim_checklist(r: ReportInputs, s: Styles) -> Flowables:
    return [
        Paragraph(SECTIONS[9], s.h1),
        table(
            [["item", "topic", "where"]] + [[n, topic, where] for n, topic, where in CLAIM_2024],
            [1.2 * cm, 9 * cm, s.width - 10.2 * cm],
        ),
    ]


BUILDERS: tuple[Builder, ...] = (
    title,
    intended_use,
    data,
    model_and_training,
    performance,
    subgroups,
    saliency,
    limitations,
    receipt,
    claim_checklist,
)


def story(r: ReportInputs) -> Flowables:
    """The document body: the report title, then every section of :data:`SECTIONS` in order."""
    s = Styles.sample()
    out: Flowables = [Paragraph("ScanLens interpretability report", s.title)]
    for builder in BUILDERS:
        out += builder(r, s)
    return out
