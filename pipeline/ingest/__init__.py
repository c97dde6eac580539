"""Ingest: a source folder of DICOM and NIfTI files into a work folder's de-identified catalogue.

Modules, in the order a run uses them:

* :mod:`~pipeline.settings.ingest` and :mod:`~pipeline.ingest.config`: ``IngestSettings`` (the ``ingest``
  settings group) and ``IngestConfig``, what a run is asked to do;
* :mod:`~pipeline.ingest.run`: :func:`ingest`, the incremental, parallel, atomic run;
* :mod:`~pipeline.ingest.probe`: per-file hashing, header reading and de-identification (isolated workers),
  and which files a run must read;
* :mod:`~pipeline.ingest.identity`: the one definition of which files form one scan;
* :mod:`~pipeline.ingest.build`: per-scan assembly, checks and volume writing (isolated workers);
* :mod:`~pipeline.ingest.series`: the slice order, geometry checks and affine of a DICOM scan;
* :mod:`~pipeline.ingest.tables`: the catalogue, quarantine and manifest tables;
* :mod:`~pipeline.ingest.labels`: the labels file and how it joins the scans.

Reading files is :mod:`pipeline.io`'s job; de-identification is :mod:`pipeline.deid`'s.
"""

from pipeline.ingest.config import IngestConfig
from pipeline.ingest.run import IngestResult, ingest
from pipeline.settings.ingest import IngestSettings

__all__ = ["IngestConfig", "IngestResult", "IngestSettings", "ingest"]
