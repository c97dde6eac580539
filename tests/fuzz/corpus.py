"""The seed corpus of the ingest fuzzer: real DICOM and NIfTI files, small and deterministic.

Always present (a fresh clone fuzzes real files too):

* a fixed, diverse selection of the DICOM files bundled in the installed pydicom wheel
  (``pydicom.data.get_testdata_files``): CT, MR, US, NM, RT dose, SEG, secondary capture; explicit and
  implicit little endian, big endian, deflated, RLE, JPEG baseline/extended/lossless, JPEG-LS,
  JPEG 2000; multi-frame, palette colour, YBR, 1-bit; non-image objects, files without file meta,
  and three small series (CT 4 slices, CT 5 slices, MR 7 slices) for series assembly; plus four of
  them re-encoded as deflated by pydicom (the syntax whose pixel bytes are only known once inflated);
* nibabel's bundled NIfTI test files (``nibabel.testing.data_path``);
* three AdrenalMNIST3D volumes of ``data/demo/adrenalmnist3d.npz`` written as ``.nii.gz`` and ``.nii``.

When ``../shared/data/dicom`` exists (next to the repository): 6 consecutive slices of the sts002 CT
and PET series, every file of ``transfer_syntaxes/In``, a selection of ``pydicom_testfiles`` (the
``pydicom-data`` multi-frame and compressed files), the sts002 RTSTRUCTs and the small sts002 NIfTI files.

Seeds over :data:`MAX_SEED_BYTES` are skipped. Seeds are returned in a fixed order.

>>> seeds = load_corpus(include_shared=False)
>>> len({s.name for s in seeds}) == len(seeds) and all(len(s.data) <= MAX_SEED_BYTES for s in seeds)
True
>>> sorted({s.kind for s in seeds})
['dicom', 'nifti']
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_SEED_BYTES = 1_000_000

#: Files of pydicom's own test data (``pydicom/data/test_files``), chosen for diversity.
PYDICOM_FILES = (
    "CT_small.dcm",                           # CT, explicit VR little endian
    "MR_small.dcm",                           # MR, explicit VR little endian
    "MR_small_implicit.dcm",                  # implicit VR little endian
    "MR_small_bigendian.dcm",                 # explicit VR big endian
    "MR_small_RLE.dcm",                       # RLE lossless
    "MR_small_jp2klossless.dcm",              # JPEG 2000 lossless
    "MR_small_jpeg_ls_lossless.dcm",          # JPEG-LS lossless
    "MR_small_padded.dcm",                    # trailing padding after Pixel Data
    "MR_truncated.dcm",                       # pixel data too short (already broken)
    "JPEG2000.dcm",                           # NM, JPEG 2000 (lossy syntax), 1 frame
    "JPGExtended.dcm",                        # NM, JPEG extended 12-bit
    "JPEG-lossy.dcm",                         # NM, JPEG extended that pylibjpeg cannot decode
    "693_J2KI.dcm",                           # CT 512x512 JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",                  # JPEG baseline, YBR_FULL
    "SC_rgb_jpeg_gdcm.dcm",                   # JPEG lossless, RGB
    "SC_rgb_rle.dcm",                         # RLE, RGB 8-bit
    "SC_rgb_rle_16bit_2frame.dcm",            # RLE, RGB 16-bit, 2 frames
    "SC_rgb_rle_32bit_2frame.dcm",            # RLE, RGB 32-bit, 2 frames
    "SC_rgb_jls_lossy_line.dcm",              # JPEG-LS near-lossless, RGB
    "JPEGLSNearLossless_16.dcm",              # JPEG-LS near-lossless, 16-bit
    "SC_rgb_gdcm_KY.dcm",                     # JPEG 2000, RGB
    "SC_rgb_small_odd.dcm",                   # 3x3 RGB, odd length
    "SC_ybr_full_422_uncompressed.dcm",       # native YBR_FULL_422
    "image_dfl.dcm",                          # deflated explicit VR little endian
    "ExplVR_BigEnd.dcm",                      # US RGB, big endian
    "examples_palette.dcm",                   # US palette colour
    "examples_ybr_color.dcm",                 # US, 30 frames, JPEG baseline YBR_FULL_422
    "examples_jpeg2k.dcm",                    # US, JPEG 2000 YBR_RCT
    "rtdose.dcm",                             # RT dose, 15 frames, 32-bit, implicit VR
    "rtdose_rle.dcm",                         # RT dose, 15 frames, RLE
    "rtdose_expb_1frame.dcm",                 # RT dose, 1 frame, big endian
    "liver_1frame.dcm",                       # SEG, 1 bit allocated
    "badVR.dcm",                              # invalid VR and IS values
    "J2K_pixelrep_mismatch.dcm",              # JPEG 2000 with a pixel representation mismatch
    "no_meta.dcm",                            # no file meta
    "meta_missing_tsyntax.dcm",               # file meta without a transfer syntax
    "UN_sequence.dcm",                        # sequence encoded as UN
    "nested_priv_SQ.dcm",                     # nested private sequences
    "rtplan.dcm",                             # non-image object (implicit VR)
    "test-SR.dcm",                            # structured report
    "dicomdirtests/DICOMDIR",                 # media index
)
#: Small series in pydicom's test data (each file is one slice): exercised as series.
PYDICOM_SERIES = (
    "dicomdirtests/77654033/CT2",
    "dicomdirtests/98892001/CT5N",
    "dicomdirtests/98892003/MR700",
)
#: Files of ``../shared/data/dicom/pydicom_testfiles/from_pydicom_data``.
SHARED_PYDICOM_DATA_FILES = (
    "emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm", "JLSL_16_15_1_1F.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "OBXXXX1A_rle_2frame.dcm", "JPEG-LL.dcm", "MR2_J2KI.dcm", "MR2_J2KR.dcm", "bad_sequence.dcm",
)
#: Files of pydicom's test data re-encoded as deflated (see :func:`deflated_seeds`).
DEFLATED_FROM = ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "examples_palette.dcm")
SERIES_SLICES = 6
NIBABEL_FILES = (
    "anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii", "reoriented_anat_moved.nii",
    "resampled_anat_moved.nii", "standard.nii.gz", "row_major.dconn.nii",
)
MEDMNIST_VOLUMES = (0, 1, 2)


@dataclass(frozen=True)
class Seed:
    """One seed file.

    Attributes:
        name: unique, file-name-safe; keeps the suffix (``.nii``/``.nii.gz``) that tells NIfTI apart.
        data: the file's bytes.
        kind: ``dicom`` or ``nifti``.
        origin: ``pydicom``, ``nibabel``, ``medmnist`` or ``shared``.
        series: for slices of a series, the series' name (its slices share it and are in order).
    """

    name: str
    data: bytes
    kind: str
    origin: str
    series: str | None = None

    @property
    def suffix(self) -> str:
        for suffix in (".nii.gz", ".nii"):
            if self.name.endswith(suffix):
                return suffix
        return ""


def _safe(text: str) -> str:
    return text.replace("/", "-").replace(" ", "_")


def _small(path: Path) -> bool:
    return path.is_file() and path.stat().st_size <= MAX_SEED_BYTES


def pydicom_seeds() -> list[Seed]:
    """The selected DICOM files of the installed pydicom wheel, then its three small series."""
    import pydicom.data

    root = Path(pydicom.data.__file__).parent / "test_files"
    seeds = [Seed(f"pydicom-{_safe(name)}", (root / name).read_bytes(), "dicom", "pydicom")
             for name in PYDICOM_FILES if _small(root / name)]
    for series in PYDICOM_SERIES:
        folder = root / series
        files = sorted(p for p in folder.iterdir() if _small(p)) if folder.is_dir() else []
        seeds += [Seed(f"pydicom-{_safe(series)}-{p.name}", p.read_bytes(), "dicom", "pydicom", f"pydicom-{_safe(series)}")
                  for p in files]
    return seeds


def deflated_seeds() -> list[Seed]:
    """A few of pydicom's files re-encoded as Deflated Explicit VR Little Endian by pydicom itself: the one
    syntax whose pixel bytes cannot be checked before inflating, so it gets more than one seed."""
    import logging
    import warnings

    import pydicom
    import pydicom.data
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    root = Path(pydicom.data.__file__).parent / "test_files"
    seeds = []
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.ERROR)  # pydicom logs its (old) test files' invalid UIDs
    try:
        for name in DEFLATED_FROM:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(root / name)
                ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
            seeds.append(Seed(f"pydicom-deflated-{name}", buffer.getvalue(), "dicom", "pydicom"))
    finally:
        log.setLevel(level)
    return seeds


def nibabel_seeds() -> list[Seed]:
    """nibabel's bundled NIfTI test files."""
    from nibabel.testing import data_path

    root = Path(str(data_path))
    return [Seed(f"nibabel-{name}", (root / name).read_bytes(), "nifti", "nibabel")
            for name in NIBABEL_FILES if _small(root / name)]


def nifti_bytes(data: object, affine: object, gz: bool) -> bytes:
    """A single-file NIfTI-1 image as bytes (gzip with mtime 0, so the bytes are deterministic)."""
    import nibabel as nib
    import numpy as np

    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float))
    image.header.set_xyzt_units("mm")
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def medmnist_seeds(repo: Path = REPO) -> list[Seed]:
    """A few AdrenalMNIST3D volumes (28x28x28 uint8) as ``.nii.gz`` and ``.nii``."""
    import numpy as np

    npz = repo / "data" / "demo" / "adrenalmnist3d.npz"
    if not npz.is_file():
        return []
    with np.load(npz) as archive:
        volumes = archive["train_images"][list(MEDMNIST_VOLUMES)]
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    seeds = []
    for index, volume in zip(MEDMNIST_VOLUMES, volumes):
        for gz in (True, False):
            suffix = ".nii.gz" if gz else ".nii"
            seeds.append(Seed(f"medmnist-adrenal{index}{suffix}", nifti_bytes(volume, affine, gz), "nifti", "medmnist"))
    return seeds


def shared_root(repo: Path = REPO) -> Path:
    return Path(repo).parent / "shared" / "data" / "dicom"


def shared_seeds(repo: Path = REPO) -> list[Seed]:
    """Seeds from ``../shared/data/dicom`` (empty where it is absent)."""
    root = shared_root(repo)
    if not root.is_dir():
        return []
    seeds: list[Seed] = []
    for modality in ("CT", "PET"):
        folder = root / "sts002" / modality / "dicom" / "image"
        files = sorted(p for p in folder.glob("*.dcm") if _small(p)) if folder.is_dir() else []
        start = max(0, len(files) // 2 - SERIES_SLICES // 2)
        series = f"shared-sts002-{modality}"
        seeds += [Seed(f"{series}-{p.name}", p.read_bytes(), "dicom", "shared", series)
                  for p in files[start:start + SERIES_SLICES]]
        rtstruct = root / "sts002" / modality / "dicom" / "mask" / "RS.dcm"
        if _small(rtstruct):
            seeds.append(Seed(f"shared-sts002-{modality}-RS.dcm", rtstruct.read_bytes(), "dicom", "shared"))
        for part in ("image", "mask"):
            nifti = root / "sts002" / modality / "nifti" / part / f"{part}.nii.gz"
            if _small(nifti):
                seeds.append(Seed(f"shared-sts002-{modality}-{part}.nii.gz", nifti.read_bytes(), "nifti", "shared"))
    syntaxes = root / "transfer_syntaxes" / "In"
    if syntaxes.is_dir():
        seeds += [Seed(f"shared-ts-{p.name}", p.read_bytes(), "dicom", "shared")
                  for p in sorted(syntaxes.iterdir()) if _small(p)]
    data_files = root / "pydicom_testfiles" / "from_pydicom_data"
    seeds += [Seed(f"shared-pydicom-data-{name}", (data_files / name).read_bytes(), "dicom", "shared")
              for name in SHARED_PYDICOM_DATA_FILES if _small(data_files / name)]
    return seeds


@lru_cache(maxsize=4)
def _load(repo: str, include_shared: bool) -> tuple[Seed, ...]:
    seeds = pydicom_seeds() + deflated_seeds() + nibabel_seeds() + medmnist_seeds(Path(repo))
    if include_shared:
        seeds += shared_seeds(Path(repo))
    return tuple(seeds)


def load_corpus(repo: Path = REPO, include_shared: bool = True) -> list[Seed]:
    """Every seed, in a fixed order (shared seeds only where ``../shared/data/dicom`` exists)."""
    return list(_load(str(Path(repo).resolve()), include_shared))


def describe(seeds: list[Seed]) -> str:
    """One line per origin: how many seeds and bytes (for reports)."""
    out = io.StringIO()
    for origin in sorted({s.origin for s in seeds}):
        mine = [s for s in seeds if s.origin == origin]
        out.write(f"{origin}: {len(mine)} seeds, {sum(len(s.data) for s in mine) / 1e6:.1f} MB\n")
    return out.getvalue()
