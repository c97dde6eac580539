"""Seeded mutation fuzzing of ``scanlens ingest``: seed corpus, mutators and the campaign runner.

``python -m tests.fuzz.campaign --n N --seed S --out DIR`` (or ``make fuzz``) generates N mutated
DICOM/NIfTI files from real seed files, ingests them with the real CLI and reports how every file
ended up; ``tests/e2e/test_fuzzed_ingest.py`` runs a 2,000-file campaign and checks the promise that
every file is catalogued or quarantined with a reason, with no crash, memory blow-up or hang.
"""
