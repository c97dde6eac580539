"""The CLAIM 2024 checklist (Checklist for Artificial Intelligence in Medical Imaging, 2024 update;
Tejani et al., Radiology: Artificial Intelligence 2024), items paraphrased, each mapped to the report
section that answers it, or flagged as not available from the pipeline (a study author must supply it).
"""

from __future__ import annotations

NOT_AVAILABLE = "not available from the pipeline"

#: (item, topic, report section or NOT_AVAILABLE)
CLAIM_2024: list[tuple[int, str, str]] = [
    (1, "Title identifies the AI methodology", "1 Title"),
    (2, "Structured summary of design, methods, results, conclusions", NOT_AVAILABLE),
    (3, "Scientific and clinical background, intended use and clinical role of the AI", "2 Intended use"),
    (4, "Study objectives and hypotheses", NOT_AVAILABLE),
    (5, "Prospective or retrospective study", NOT_AVAILABLE),
    (6, "Study goal (model creation, feasibility, non-inferiority, ...)", "2 Intended use"),
    (7, "Data sources", "3 Data"),
    (8, "Eligibility criteria (inclusion and exclusion)", "3 Data (exclusions from quarantine)"),
    (9, "Data pre-processing steps", "4 Model and training"),
    (10, "Selection of data subsets", "3 Data (counts per class per fold)"),
    (11, "De-identification methods", "3 Data (de-identification statement)"),
    (12, "How missing data were handled", "3 Data (exclusions from quarantine)"),
    (13, "Image acquisition protocol", NOT_AVAILABLE),
    (14, "Definition of the ground truth (reference standard)", NOT_AVAILABLE),
    (15, "Rationale for the reference standard", NOT_AVAILABLE),
    (16, "Source and qualifications of ground-truth annotators", NOT_AVAILABLE),
    (17, "Annotation tools and procedure", NOT_AVAILABLE),
    (18, "Inter- and intra-rater variability", NOT_AVAILABLE),
    (19, "How data were assigned to partitions; proportions", "3 Data; 5 Performance"),
    (20, "Level at which partitions are disjoint (patient)", "3 Data"),
    (21, "Detailed description of the model", "4 Model and training"),
    (22, "Software libraries, frameworks and packages", "9 Reproducibility receipt"),
    (23, "Initialisation of model parameters (random, transfer learning)", "4 Model and training"),
    (24, "Training details: augmentation, hyperparameters, number of models", "4 Model and training"),
    (25, "Method of selecting the final model", "4 Model and training"),
    (26, "Ensembling techniques", "5 Performance (fold-model ensemble on the test set)"),
    (27, "Metrics of model performance", "5 Performance"),
    (28, "Statistical measures of significance and uncertainty", "5 Performance (patient-level bootstrap CIs)"),
    (29, "Robustness or sensitivity analysis", "6 Subgroups"),
    (30, "Methods for explainability or interpretability, and how they were validated", "7 Saliency"),
    (31, "Validation or testing on external data", NOT_AVAILABLE),
    (32, "Flow of participants or examinations", "3 Data"),
    (33, "Demographic and clinical characteristics per partition", "6 Subgroups (when demographics were kept)"),
    (34, "Performance of the model on all data partitions", "5 Performance"),
    (35, "Estimates of diagnostic accuracy with 95% confidence intervals", "5 Performance"),
    (
        36,
        "Failure analysis of incorrectly classified cases",
        "7 Saliency (false-positive and false-negative galleries)",
    ),
    (37, "Study limitations", "8 Limitations"),
    (38, "Implications for practice, intended use and clinical role", "2 Intended use"),
    (39, "Registration number and registry", NOT_AVAILABLE),
    (40, "Where the full study protocol can be accessed", NOT_AVAILABLE),
    (41, "Sources of funding and role of funders", NOT_AVAILABLE),
    (42, "Data availability", NOT_AVAILABLE),
    (43, "Code availability", "9 Reproducibility receipt (git SHA of the open-source pipeline)"),
    (44, "Conflicts of interest / other information", NOT_AVAILABLE),
]
