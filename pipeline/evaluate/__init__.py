"""Evaluation statistics: point metrics, patient-level bootstrap CIs, DeLong CIs, operating points."""
