"""The report's sections, one builder each: ``builder(inputs, styles) -> flowables`` (heading included).

:data:`SECTIONS` names them in order and :data:`BUILDERS` holds their builders in the same order;
:func:`story` is the whole document body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

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
    ("forest", "Per-fold AUROC and the pixel baseline (forest plot)"),
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
                ["summary", summary_text(r.metrics)],
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


def summary_text(metrics: dict[str, Any]) -> str:
    """The headline figures, and plainly whether the model beats the pixel baseline."""
    oof, test = metrics["oof"], metrics["test"]
    text = f"Pooled out-of-fold AUROC {fmt(oof['auroc'], oof.get('auroc_ci'))}"
    text += f"; held-out test AUROC {fmt(test['auroc'], test.get('auroc_ci'))}." if test else "; no test set."
    baseline = metrics.get("baseline")
    if baseline is None:  # evaluated before the baseline existed
        return text
    if "statement" not in baseline:
        return f"{text} No pixel baseline: {baseline.get('note', 'not computed')}."
    return f"{text} {baseline['statement']}"


def _signed(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("auroc_difference") is None:
        return "n/a"
    ci = entry.get("ci")
    return f"{entry['auroc_difference']:+.3f}" + (f" ({ci[0]:+.3f} to {ci[1]:+.3f})" if ci else "")


def baseline_comparison(metrics: dict[str, Any], s: Styles) -> Flowables:
    """The model beside the pixel baseline: AUROC with CIs, the paired difference, the verdict."""
    baseline, test = metrics.get("baseline"), metrics["test"]
    if not baseline:
        return []
    if "statement" not in baseline:
        return [Paragraph(f"Pixel baseline: {baseline.get('note', 'not computed')}.", s.body)]
    b_test, d = baseline.get("test"), baseline["difference"]
    rows = [
        ["AUROC (95% CI)", "out-of-fold (pooled)", "held-out test (fold ensemble)"],
        [
            "model",
            fmt(metrics["oof"]["auroc"], metrics["oof"].get("auroc_ci")),
            fmt(test["auroc"], test.get("auroc_ci")) if test else "no test set",
        ],
        [
            f"pixel baseline: {baseline['method']} ({baseline['input']}, C = {baseline['C']})",
            fmt(baseline["oof"]["auroc"], baseline["oof"].get("auroc_ci")),
            fmt(b_test["auroc"], b_test.get("auroc_ci")) if b_test else "no test set",
        ],
        ["difference, model - baseline (paired patient-level bootstrap CI)", _signed(d["oof"]), _signed(d["test"])],
    ]
    verdict = baseline["statement"] if baseline["shown_to_beat"] else f"<b>{baseline['statement']}</b>"
    return [
        Paragraph("Model against a pixel baseline", s.h2),
        Paragraph(
            "The baseline is fitted on the same folds and scored on the same test set as the model "
            f"({baseline['folds']}).",
            s.body,
        ),
        table(rows),
        Paragraph(verdict, s.body),
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
    out += baseline_comparison(metrics, s)
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
    out += score_drift_paragraph(r.drift, s)
    return out


def score_drift_paragraph(drift: dict[str, Any] | None, s: Styles) -> Flowables:
    """A paragraph quoting the champion's last score-drift record (``W/scoring/drift.json``, made by
    :mod:`pipeline.scoring.drift`): PSI, flag and refer rates, n, window, the largest share change and
    the verdict against the limits. Nothing before a champion has a record."""
    if not drift or drift.get("champion") is None:
        return []
    limits = drift["limits"]
    flags = "unavailable (scores without out-of-distribution flags)"
    if drift["flag_rate"] is not None:
        flags = f"{drift['flag_rate']:.1%} (limit {limits['flag_rate']:.0%})"
    refer = "n/a" if drift["refer_rate"] is None else f"{drift['refer_rate']:.1%}"
    if drift.get("reference_refer_rate") is not None:
        refer += f" (out-of-fold {drift['reference_refer_rate']:.1%})"
    shift = drift.get("largest_share_shift")
    moved = (
        f"{shift['covariate']} {escape(repr(shift['value']))} {shift['reference']:.0%} to {shift['recent']:.0%} "
        f"(limit {limits['share_shift']:.0%})"
        if shift
        else "n/a (no catalogue rows)"
    )
    exceeded = "; ".join(escape(e) for e in drift["exceeded"])
    verdict = escape(drift["verdict"]) + (f": {exceeded}" if exceeded else "")
    return [
        Paragraph(
            f"<b>Score drift</b> of the model in use (champion {escape(drift['champion'])}), its last "
            f"{drift['n']} scores (window {drift['window']}) against its out-of-fold predictions: "
            f"PSI {fmt(drift['psi'])} (limit {limits['psi']:g}; below 0.1 stable, above 0.25 a major shift), "
            f"out-of-distribution flag rate {flags}, refer rate {refer}, largest share change: {moved}. "
            f"Verdict: {verdict}.",
            s.body,
        )
    ]


def calibration_and_referral(r: ReportInputs, s: Styles) -> Flowables:
    """Part of section 5: the recalibration with ECE before and after it (reliability diagram of the
    test split), then the referral limits, the chosen referral point and the referral curve."""
    m = r.metrics
    recal, before, after, referral = (
        m.get("recalibration"),
        m.get("calibration_before"),
        m.get("calibration_after"),
        m.get("referral"),
    )
    if not recal or not before or not after:
        return []  # a multi-class task, or an evaluation from before calibration
    params = ", ".join(f"{k} {v:.3f}" for k, v in recal["params"].items()) or "identity"
    out: Flowables = [
        Paragraph("Calibration", s.h2),
        Paragraph(
            f"Probabilities are recalibrated by {recal['method']} scaling ({params}), fitted on the pooled "
            f"out-of-fold predictions ({recal['n_fitted']} scans) and applied to each fold model's probability "
            "before the ensemble mean; the operating point and the referral limits are chosen on the calibrated "
            "out-of-fold probabilities. ECE: expected calibration error over 10 equal-mass bins (0 is perfect); "
            "the out-of-fold 'after' figures are in-sample for the fit, the test figures are not.",
            s.body,
        ),
    ]
    rows = [["set", "ECE before", "ECE after", "slope before / after", "intercept before / after"]]
    for part, name in (("test", "held-out test (fold ensemble)"), ("oof", "out-of-fold (pooled)")):
        b, a = before.get(part), after.get(part)
        if b and a:
            rows.append(
                [
                    name,
                    fmt(b["ece"]),
                    fmt(a["ece"]),
                    f"{fmt(b['calibration_slope'])} / {fmt(a['calibration_slope'])}",
                    f"{fmt(b['calibration_intercept'])} / {fmt(a['calibration_intercept'])}",
                ]
            )
    out.append(table(rows))
    if r.workdir.plot("reliability").exists():
        out += [
            Paragraph("Reliability before and after recalibration", s.caption),
            image(r.workdir.plot("reliability"), s.width * 0.55),
        ]
    if referral:
        out += [Paragraph("Uncertainty and referral", s.h2), Paragraph(referral_text(referral), s.body)]
        if r.workdir.plot("referral").exists():
            out += [
                Paragraph("Accuracy on non-referred scans against the referral rate", s.caption),
                image(r.workdir.plot("referral"), s.width * 0.7),
            ]
    return out


def referral_text(referral: dict[str, Any]) -> str:
    """The referral rule and the chosen point, out-of-fold and on the test set, in words."""
    band, limit = referral.get("band"), referral.get("max_uncertainty")
    rules = []
    if band:
        rules.append(f"its calibrated probability lies in [{band[0]:.3f}, {band[1]:.3f}]")
    if limit is not None:
        rules.append(f"the fold ensemble's spread (std of the members' calibrated probabilities) exceeds {limit:.3f}")
    rule = " or ".join(rules) if rules else "never (referral rate 0)"

    def point(block: dict[str, Any]) -> str:
        return (
            f"refer {block['n_referred']} of {block['n_scans']} scans ({fmt(block['rate'])}: "
            f"{block['referred_by']['band']} near the threshold, {block['referred_by']['uncertainty']} for "
            f"uncertainty); accuracy on the rest {fmt(block['accuracy_non_referred'], block.get('accuracy_non_referred_ci'))}"
            f" against {fmt(block['accuracy_all'])} on all scans"
        )

    text = (
        f"A scan is decided 'refer' (read without the model's call) when {rule}. Chosen point: a target referral "
        f"rate of {referral['target_rate']:.0%}, with both limits pre-specified on the out-of-fold predictions "
        f"({referral['rule']}). Out-of-fold, the limits {point(referral['oof'])}."
    )
    if referral.get("test"):
        text += f" On the held-out test set they {point(referral['test'])}."
    if referral.get("uncertainty_source"):
        text += f" Uncertainty: {referral['uncertainty_source']}."
    return text


def performance_and_calibration(r: ReportInputs, s: Styles) -> Flowables:
    """Section 5: :func:`performance`, then :func:`calibration_and_referral`."""
    return performance(r, s) + calibration_and_referral(r, s)


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
    if layer := sanity.get("gradcam_layer"):
        cells, size = " x ".join(map(str, layer["map_size"])), " x ".join(map(str, layer["input_size"]))
        out.append(
            Paragraph(
                f"GradCAM reads <b>{layer['layer']}</b>, whose map of {cells} cells for the {size}-voxel input is "
                f"upsampled to it (the deepest ResNet stage with at least {layer['min_map_size']} cells per axis).",
                s.body,
            )
        )
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
    return [Paragraph(f"{case.scan_id}: label {case.label}, p = {case.p:.3f}", s.caption), Table(grid)]


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
    baseline = r.metrics.get("baseline") or {}
    if "shown_to_beat" in baseline and not baseline["shown_to_beat"]:
        limits.append(f"{baseline['statement'].rstrip('.')} (section 5).")
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
    performance_and_calibration,
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
