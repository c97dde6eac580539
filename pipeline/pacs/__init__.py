"""PACS connectivity: a DICOM Storage SCP (:mod:`.listener`), sending results back with C-STORE or
STOW-RS (:mod:`.send`), and reading the archive with QIDO-RS/WADO-RS (:mod:`.dicomweb`, :mod:`.watch`).

Built on pynetdicom (DIMSE) and dicomweb-client (DICOMweb). Logs carry AE titles and keyed
pseudonyms only, never a patient's identifiers or a study's UID.
"""
