"""Seeded mutations of DICOM and NIfTI files, grouped in named classes.

Every mutation is a pure function of (seed bytes, ``random.Random``): the same bytes and the same rng
state give the same file. DICOM files are edited by byte surgery on a small element tokenizer
(:func:`tokenize`): it records every element's header, length field and value offsets (inside
sequences too), so that a value can be replaced while the lengths of the enclosing defined-length
items and sequences and the file meta group length are kept right, or deliberately made to lie.
This works alike for implicit and explicit VR, little and big endian; deflated files are edited
in their inflated form and deflated again. NIfTI headers are edited field by field (NIfTI-1 and -2),
``.nii.gz`` files are decompressed first and compressed again.

A mutator that cannot apply to a file (no pixel data, no file meta, not explicit VR...) raises
:class:`NotApplicable`; the campaign then draws another seed.

>>> import random
>>> from tests.fuzz.corpus import load_corpus
>>> ct = next(s for s in load_corpus(include_shared=False) if s.name == "pydicom-CT_small.dcm")
>>> a = MUTATORS["pixel_short"].mutate(ct.data, random.Random(7))
>>> a == MUTATORS["pixel_short"].mutate(ct.data, random.Random(7)) and a != ct.data
True
>>> layout = tokenize(ct.data)
>>> layout.syntax, layout.explicit, layout.little, layout.complete
('1.2.840.10008.1.2.1', True, True, True)
>>> rows = layout.find(0x00280010)
>>> rows is not None and element_vr(rows) == "US" and layout.value(rows) == b"\\x80\\x00"
True
"""

from __future__ import annotations

import gzip
import hashlib
import math
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_DELIM, SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
TRANSFER_SYNTAX = 0x00020010
META_GROUP_LENGTH = 0x00020000
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
ALL_VRS = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
           "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")
NUMERIC_VRS = ("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD")
IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
NATIVE_SYNTAXES = frozenset({IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED})


class NotApplicable(Exception):
    """This mutation cannot be applied to these bytes (the campaign draws another seed)."""


# --------------------------------------------------------------------------------------------------
# DICOM tokenizer and byte surgery
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Element:
    """One element (or item, or delimiter) as found in the bytes.

    ``parents`` are the indices (in :attr:`Layout.elements`) of the enclosing sequences and items,
    outermost first; the fragments of encapsulated Pixel Data have the Pixel Data element as parent.
    """

    tag: int
    vr: str | None  # None: implicit VR, or an item/delimiter
    offset: int
    length_offset: int
    length_size: int
    value_offset: int
    length: int
    parents: tuple[int, ...]
    little: bool
    explicit: bool

    @property
    def group(self) -> int:
        return self.tag >> 16

    @property
    def defined(self) -> bool:
        return self.length != UNDEFINED

    @property
    def end(self) -> int:
        """Offset just past the value (only for a defined length)."""
        return self.value_offset + self.length

    @property
    def is_item_tag(self) -> bool:
        return self.group == 0xFFFE


@dataclass
class Layout:
    data: bytes
    meta_end: int  # where the data set starts
    syntax: str | None
    explicit: bool
    little: bool
    elements: list[Element] = field(default_factory=list)
    complete: bool = False
    has_meta: bool = False

    def find(self, tag: int, top_level: bool = True) -> Element | None:
        for el in self.elements:
            if el.tag == tag and (not top_level or not el.parents):
                return el
        return None

    def index(self, el: Element) -> int:
        return self.elements.index(el)

    def value(self, el: Element) -> bytes:
        return self.data[el.value_offset:el.end] if el.defined else b""

    def top_level(self) -> list[Element]:
        return [el for el in self.elements if not el.parents and el.group != 0x0002 and not el.is_item_tag]

    def dataset_elements(self) -> list[Element]:
        return [el for el in self.elements if el.group != 0x0002 and not el.is_item_tag]

    def pixel(self) -> Element | None:
        return self.find(PIXEL_DATA)

    def fragments(self) -> list[Element]:
        """Items of encapsulated Pixel Data (first: the Basic Offset Table)."""
        pixel = self.pixel()
        if pixel is None or pixel.defined:
            return []
        index = self.index(pixel)
        return [el for el in self.elements if el.tag == ITEM and el.parents and el.parents[-1] == index]


def _u16(data: bytes, pos: int, little: bool) -> int:
    return struct.unpack_from("<H" if little else ">H", data, pos)[0]


def _u32(data: bytes, pos: int, little: bool) -> int:
    return struct.unpack_from("<I" if little else ">I", data, pos)[0]


def dictionary_vr(tag: int) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return vr.split(" or ")[0] if vr else None


def element_vr(el: Element) -> str | None:
    """The element's VR: as written (explicit VR) or from the dictionary (implicit VR)."""
    return el.vr if el.vr is not None else dictionary_vr(el.tag)


def _syntax_encoding(syntax: str | None) -> tuple[bool, bool]:
    if syntax == IMPLICIT_LE:
        return False, True
    if syntax == EXPLICIT_BE:
        return True, False
    return True, True


def tokenize(data: bytes, meta_only: bool = False) -> Layout:
    """Tokenize a DICOM file (a deflated data set must be inflated first: see :func:`inflated`);
    with ``meta_only``, just the preamble and file meta."""
    n = len(data)
    pos = 132 if data[128:132] == b"DICM" else (4 if data[:4] == b"DICM" else 0)
    elements: list[Element] = []
    syntax = None
    meta_start = pos
    while pos + 8 <= n and _u16(data, pos, True) == 0x0002:
        tag = (0x0002 << 16) | _u16(data, pos + 2, True)
        vr = data[pos + 4:pos + 6].decode("latin-1")
        if vr in LONG_VRS:
            loff, lsize, voff = pos + 8, 4, pos + 12
            if voff > n:
                break
            length = _u32(data, loff, True)
        else:
            loff, lsize, voff = pos + 6, 2, pos + 8
            length = _u16(data, loff, True)
        if length == UNDEFINED or voff + length > n:
            break
        elements.append(Element(tag, vr, pos, loff, lsize, voff, length, (), True, True))
        if tag == TRANSFER_SYNTAX:
            syntax = data[voff:voff + length].rstrip(b"\0 ").decode("latin-1")
        pos = voff + length
    meta_end = pos
    has_meta = meta_end > meta_start
    if meta_only:
        explicit, little = _syntax_encoding(syntax)
        return Layout(data, meta_end, syntax, explicit, little, elements, has_meta=has_meta)
    if has_meta:
        explicit, little = _syntax_encoding(syntax)
        layout = Layout(data, meta_end, syntax, explicit, little, elements, has_meta=True)
        _walk(layout, pos)
        return layout
    best: Layout | None = None
    for skip in range(4):  # no file meta: guess the encoding (and up to 3 stray leading bytes)
        for explicit, little in ((False, True), (True, True), (True, False)):
            layout = Layout(data, meta_end + skip, None, explicit, little, list(elements))
            _walk(layout, pos + skip)
            if best is None or len(layout.elements) > len(best.elements):
                best = layout
    assert best is not None
    return best


def _walk(layout: Layout, pos: int) -> None:
    data, elements, explicit, little = layout.data, layout.elements, layout.explicit, layout.little
    n = len(data)
    stack: list[tuple[int, int | None, str]] = []  # (element index, end offset, kind: seq|item|encaps)
    while True:
        while stack and stack[-1][1] is not None and pos >= stack[-1][1]:  # type: ignore[operator]
            stack.pop()
        if pos + 8 > n:
            break
        parents = tuple(s[0] for s in stack)
        group, number = _u16(data, pos, little), _u16(data, pos + 2, little)
        tag = (group << 16) | number
        kind = stack[-1][2] if stack else None
        if group == 0xFFFE:
            length = _u32(data, pos + 4, little)
            index = len(elements)
            elements.append(Element(tag, None, pos, pos + 4, 4, pos + 8, length, parents, little, explicit))
            if tag == ITEM and kind == "encaps":
                if length == UNDEFINED or pos + 8 + length > n:
                    return
                pos += 8 + length
            elif tag == ITEM and kind == "seq":
                stack.append((index, None if length == UNDEFINED else pos + 8 + length, "item"))
                pos += 8
            elif (tag == ITEM_DELIM and kind == "item") or (tag == SEQ_DELIM and kind in ("seq", "encaps")):
                stack.pop()
                pos += 8
            else:
                return
            continue
        if explicit:
            vr: str | None = data[pos + 4:pos + 6].decode("latin-1")
            if vr not in ALL_VRS:
                return
            if vr in LONG_VRS:
                loff, lsize, voff = pos + 8, 4, pos + 12
                if voff > n:
                    return
                length = _u32(data, loff, little)
            else:
                loff, lsize, voff = pos + 6, 2, pos + 8
                length = _u16(data, loff, little)
        else:
            vr, loff, lsize, voff = None, pos + 4, 4, pos + 8
            length = _u32(data, loff, little)
        index = len(elements)
        elements.append(Element(tag, vr, pos, loff, lsize, voff, length, parents, little, explicit))
        is_seq = vr == "SQ" or (vr is None and (dictionary_vr(tag) == "SQ" or (length == UNDEFINED and tag != PIXEL_DATA)))
        if is_seq:
            stack.append((index, None if length == UNDEFINED else voff + length, "seq"))
            pos = voff
        elif length == UNDEFINED and tag == PIXEL_DATA:
            stack.append((index, None, "encaps"))
            pos = voff
        elif length == UNDEFINED or voff + length > n:
            return
        else:
            pos = voff + length
    layout.complete = pos >= n and not stack


def _pack_length(value: int, size: int, little: bool) -> bytes:
    return struct.pack(("<" if little else ">") + ("H" if size == 2 else "I"), value & (0xFFFF if size == 2 else 0xFFFFFFFF))


def set_length(data: bytes, el: Element, value: int) -> bytes:
    """Write ``value`` into ``el``'s length field (masked to the field's size): a lie, usually."""
    return data[:el.length_offset] + _pack_length(value, el.length_size, el.little) + data[el.length_offset + el.length_size:]


def replace_range(layout: Layout, start: int, end: int, new: bytes, parents: tuple[int, ...] = ()) -> bytes:
    """Replace ``data[start:end]`` with ``new`` and keep every defined length that encloses it right:
    the ``parents`` (sequences and items) and, inside the file meta, the meta group length."""
    data = layout.data
    delta = len(new) - (end - start)
    out = bytearray(data[:start] + new + data[end:])
    for index in parents:
        parent = layout.elements[index]
        if parent.defined:
            current = struct.unpack_from("<I" if parent.little else ">I", out, parent.length_offset)[0]
            out[parent.length_offset:parent.length_offset + 4] = _pack_length(current + delta, 4, parent.little)
    group_length = layout.find(META_GROUP_LENGTH)
    if start < layout.meta_end and group_length is not None and group_length.length == 4 and start > group_length.offset:
        current = struct.unpack_from("<I", out, group_length.value_offset)[0]
        out[group_length.value_offset:group_length.value_offset + 4] = struct.pack("<I", (current + delta) & 0xFFFFFFFF)
    return bytes(out)


def replace_value(layout: Layout, el: Element, value: bytes) -> bytes:
    """Replace a defined-length element's value, with its own length field and its parents' updated."""
    if not el.defined:
        raise NotApplicable("undefined length")
    if el.length_size == 2 and len(value) > 0xFFFF:
        raise NotApplicable("value too long for a 2-byte length")
    data = replace_range(layout, el.value_offset, el.end, value, el.parents)
    return data[:el.length_offset] + _pack_length(len(value), el.length_size, el.little) + data[el.length_offset + el.length_size:]


def encode_header(tag: int, vr: str, length: int, explicit: bool, little: bool) -> bytes:
    """An element (or item/delimiter) header in the given encoding."""
    order = "<" if little else ">"
    head = struct.pack(order + "HH", tag >> 16, tag & 0xFFFF)
    if tag >> 16 == 0xFFFE or not explicit:
        return head + struct.pack(order + "I", length & 0xFFFFFFFF)
    if vr in LONG_VRS:
        return head + vr.encode("latin-1") + b"\0\0" + struct.pack(order + "I", length & 0xFFFFFFFF)
    return head + vr.encode("latin-1") + struct.pack(order + "H", length & 0xFFFF)


def encode_element(tag: int, vr: str, value: bytes, explicit: bool, little: bool) -> bytes:
    return encode_header(tag, vr, len(value), explicit, little) + value


def insert_top_level(layout: Layout, tag: int, element: bytes) -> bytes:
    """Insert an encoded element among the top-level data set elements, in tag order."""
    position = len(layout.data) if layout.complete else None
    for el in layout.top_level():
        if el.tag > tag:
            position = el.offset
            break
    if position is None:  # data set not fully parsed: insert before Pixel Data, or after the meta
        pixel = layout.pixel()
        position = pixel.offset if pixel is not None else layout.meta_end
    return replace_range(layout, position, position, element)


def element_span(layout: Layout, el: Element) -> tuple[int, int]:
    """(start, end) of a whole element in the bytes; an undefined length runs to its sequence delimiter."""
    if el.defined:
        return el.offset, el.end
    index = layout.index(el)
    inside = (*el.parents, index)
    for other in layout.elements[index + 1:]:
        if other.tag == SEQ_DELIM and other.parents == inside:
            return el.offset, other.value_offset
        if index not in other.parents:
            return el.offset, other.offset
    return el.offset, len(layout.data)


def _inflate_split(data: bytes) -> tuple[int, bytes] | None:
    """For a deflated file: (meta end, inflated data set); None for any other file."""
    layout = tokenize(data, meta_only=True)
    if layout.syntax != DEFLATED:
        return None
    try:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        return layout.meta_end, inflater.decompress(data[layout.meta_end:], 64 * 1024 * 1024)
    except zlib.error:
        return None


def inflated(data: bytes, edit: Callable[[bytes], bytes], rng: random.Random, raw_share: float = 0.0) -> bytes:
    """Apply ``edit`` to a DICOM file; a deflated one is edited inflated (meta + data set) and deflated
    again, except with probability ``raw_share`` (then the compressed bytes themselves are edited)."""
    split = _inflate_split(data)
    if split is None or rng.random() < raw_share:
        return edit(data)
    meta_end, dataset = split
    edited = edit(data[:meta_end] + dataset)
    layout = tokenize(edited, meta_only=True)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return edited[:layout.meta_end] + compressor.compress(edited[layout.meta_end:]) + compressor.flush()


def deflate_segments(segments: list[bytes | int]) -> bytes:
    """A raw deflate stream of the concatenation of ``segments``; an int stands for that many zero bytes
    (in 16 MiB blocks, compressed once and repeated: gigabytes of zeros cost milliseconds). Every segment
    is compressed on its own and ends byte-aligned with no back-reference out of it, so the pieces join."""
    out = []
    for k, segment in enumerate(segments):
        last = k == len(segments) - 1
        if isinstance(segment, int):
            blocks, rest = divmod(segment, ZERO_BLOCK)
            out.append(_zero_block() * blocks)
            segment = bytes(rest)
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        out.append(compressor.compress(segment) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH))
    return b"".join(out)


ZERO_BLOCK = 16 * 1024 * 1024


@lru_cache(maxsize=1)
def _zero_block() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(bytes(ZERO_BLOCK)) + compressor.flush(zlib.Z_FULL_FLUSH)


def is_nifti_bytes(data: bytes) -> bool:
    raw = gunzip(data) if data[:2] == b"\x1f\x8b" else data
    return len(raw) >= 4 and (struct.unpack_from("<i", raw)[0] in (348, 540) or struct.unpack_from(">i", raw)[0] in (348, 540))


def gunzip(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return b""


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _uid(key: str, length: int) -> str:
    digits = str(int(hashlib.sha256(key.encode()).hexdigest(), 16))
    while len(digits) < length:
        digits += str(int(hashlib.sha256((key + digits).encode()).hexdigest(), 16))
    return "2.25." + digits[:length - 5]


def reidentify(data: bytes, study_key: str, series_key: str, instance_key: str) -> bytes:
    """Give a DICOM file new Study/Series/SOP Instance UIDs (same lengths: nothing else moves), derived from
    the keys. Files of one mutated series share the study and series keys; every file has its own instance."""
    if is_nifti_bytes(data):
        return data
    roles = {0x0020000D: study_key, 0x0020000E: series_key, 0x00080018: instance_key, 0x00020003: instance_key}

    def edit(raw: bytes) -> bytes:
        layout = tokenize(raw)
        out = bytearray(raw)
        for el in layout.elements:
            key = roles.get(el.tag)
            if key is None or el.parents or not el.defined:
                continue
            value = raw[el.value_offset:el.end]
            text = value.rstrip(b"\0 ")
            if len(text) < 8:
                continue
            out[el.value_offset:el.value_offset + len(text)] = _uid(key, len(text)).encode()
        return bytes(out)

    return inflated(data, edit, random.Random(0))


# --------------------------------------------------------------------------------------------------
# Mutator classes
# --------------------------------------------------------------------------------------------------

class Mutator:
    """A named class of mutations. ``kinds``: the seed kinds (``dicom``/``nifti``) it applies to."""

    name = ""
    kinds: tuple[str, ...] = ("dicom",)

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        raise NotImplementedError


def _regions(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    """(header region, pixel/voxel region) of a file, as byte ranges."""
    n = len(data)
    if is_nifti_bytes(data) and data[:2] != b"\x1f\x8b":
        header = 540 if struct.unpack_from("<i", data)[0] == 540 or struct.unpack_from(">i", data)[0] == 540 else 348
        voxels = min(n, header + 4)
        return (0, min(header, n)), (voxels, n)
    layout = tokenize(data)
    pixel = layout.pixel()
    start = 128 if layout.has_meta and n > 132 else 0
    if pixel is None:
        return (start, n), (start, n)
    return (start, pixel.offset), (pixel.value_offset, n)


class ByteFlip(Mutator):
    """Random bit flips and byte overwrites: in the header, in the pixel/voxel data, in element headers
    (tags, VRs, lengths), in the codec's header at the start of a compressed frame (JPEG SOF, JPEG 2000
    SIZ...), or anywhere; ``.nii.gz`` and deflated files mostly inflated first."""

    name = "byte_flip"
    kinds = ("dicom", "nifti")
    INTERESTING = (0x00, 0xFF, 0x7F, 0x80, 0x20, 0x5C, 0x01, 0xFE)

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        if data[:2] == b"\x1f\x8b" and rng.random() < 0.75:
            inner = gunzip(data)
            if inner:
                return gz(self._flip(inner, rng))
        return inflated(data, lambda raw: self._flip(raw, rng), rng, raw_share=0.3)

    def _flip(self, data: bytes, rng: random.Random) -> bytes:
        if not data:
            raise NotApplicable("empty")
        out = bytearray(data)
        header, pixels = _regions(data)
        mode = rng.random()
        positions: list[int] = []
        count = rng.choice((1, 1, 1, 2, 3, 4, 8, 16, 64))
        if mode < 0.35 and not is_nifti_bytes(data):
            layout = tokenize(data)
            if mode < 0.2 and layout.elements:  # element headers: tags, VRs and lengths
                for _ in range(count):
                    el = rng.choice(layout.elements)
                    positions.append(rng.randrange(el.offset, el.value_offset))
            else:  # the codec's own header (JPEG SOF, JPEG 2000 SIZ, JPEG-LS, RLE offsets): first bytes of a frame
                fragments = layout.fragments()[1:]
                pixel = layout.pixel()
                target = rng.choice(fragments) if fragments else pixel
                if target is not None and target.defined and target.length:
                    span = min(target.length, rng.choice((16, 64, 256)))
                    positions = [target.value_offset + rng.randrange(span) for _ in range(min(count, 4))]
        if not positions:
            if mode < 0.6:
                lo, hi = header
            elif mode < 0.9:
                lo, hi = pixels
            else:
                lo, hi = 0, len(data)
            if hi <= lo:
                lo, hi = 0, len(data)
            positions = [rng.randrange(lo, hi) for _ in range(count)]
        for pos in positions:
            if rng.random() < 0.6:
                out[pos] ^= 1 << rng.randrange(8)
            else:
                out[pos] = rng.choice(self.INTERESTING)
        return bytes(out)


class Truncate(Mutator):
    """Cut the file: anywhere, at or around an element boundary, inside the header, inside the pixel
    data or a few bytes before the end (``.nii.gz``: the compressed stream or the inflated file)."""

    name = "truncate"
    kinds = ("dicom", "nifti")

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        if data[:2] == b"\x1f\x8b" and rng.random() < 0.5:
            inner = gunzip(data)
            if inner:
                return gz(self._cut(inner, rng))
        return self._cut(data, rng)  # deflated DICOM: cut the compressed stream as it is on disk

    def _cut(self, data: bytes, rng: random.Random) -> bytes:
        n = len(data)
        if n < 2:
            raise NotApplicable("too short")
        mode = rng.random()
        if mode < 0.05:
            at = rng.choice((0, 1, 4, 128, 132, 136))
        elif mode < 0.40:
            at = rng.randrange(n)
        elif mode < 0.65 and data[:2] != b"\x1f\x8b" and not is_nifti_bytes(data):
            layout = tokenize(data)
            el = rng.choice(layout.elements) if layout.elements else None
            base = rng.choice((el.offset, el.length_offset, el.value_offset)) if el else rng.randrange(n)
            at = base + rng.randint(-2, 3)
        elif mode < 0.85:
            header, pixels = _regions(data)
            lo, hi = rng.choice((header, pixels))
            at = rng.randrange(lo, hi) if hi > lo else rng.randrange(n)
        else:
            at = n - rng.randint(1, min(16, n - 1))
        return data[:max(0, min(at, n - 1))]


# Values for IS/DS strings and binary numbers: not numbers, not finite, out of range, empty, several.
HOSTILE_STRINGS = (
    "abc", "NaN", "nan", "inf", "-inf", "Infinity", "-1", "0", "-0", "1e308", "1e309", "-1e309", "1e-400",
    "99999999999999999999", "2147483648", "-2147483649", "", " ", "1\\2", "1\\2\\3\\4\\5\\6\\7", "\\", "\\\\\\",
    "1.5", "0x10", "1,5", "+", "1e", ".", "-", "1 2", "12345678901234567890123456789", "\0\0", "NaN\\NaN\\NaN",
    "1\\NaN\\3", "inf\\0\\0\\0\\inf\\0", "-32768", "65536", "4294967296", "1E+2", " 7 ", "\xa0", "١٢",
)
BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
HOSTILE_NUMBERS: dict[str, tuple[float, ...]] = {
    "US": (0, 1, 0xFFFF, 0x8000, 0x7FFF, 2),
    "SS": (-1, -32768, 32767, 0, 1),
    "UL": (0, 1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF),
    "SL": (-1, -(2**31), 2**31 - 1, 0),
    "FL": (math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 1e-45, -0.0, 0.0, -1.0),
    "FD": (math.nan, math.inf, -math.inf, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -0.0, 0.0, -1.0, 1e300),
}
#: Numeric attributes ScanLens computes with: drawn more often.
READ_TAGS = frozenset({
    0x00280010, 0x00280011, 0x00280002, 0x00280100, 0x00280101, 0x00280102, 0x00280103, 0x00280006, 0x00280008,
    0x00281053, 0x00281052, 0x00280030, 0x00181164, 0x00200032, 0x00200037, 0x00180050, 0x00180088, 0x00200013,
    0x00201041, 0x0018602C, 0x0018602E, 0x00186024, 0x00186026, 0x00281101, 0x00281102, 0x00281103,
    0x00281050, 0x00281051,
})


def hostile_value(vr: str, little: bool, rng: random.Random) -> bytes:
    """A hostile value for a numeric VR, encoded (odd lengths and byte counts that fit no number included)."""
    if vr in ("IS", "DS"):
        text = rng.choice(HOSTILE_STRINGS).encode("utf-8")
        return text + b" " if len(text) % 2 else text
    fmt = BINARY_FORMATS[vr]
    order = "<" if little else ">"
    roll = rng.random()
    if roll < 0.08:
        return b""
    if roll < 0.16:
        return bytes(rng.randrange(256) for _ in range(rng.choice((1, 3, 5, 7)) if struct.calcsize(fmt) > 1 else 1))
    count = 1 if roll < 0.75 else rng.randint(2, 7)
    values = [rng.choice(HOSTILE_NUMBERS[vr]) for _ in range(count)]
    return struct.pack(order + fmt * count, *values)


class NumericValue(Mutator):
    """Set numeric attributes (IS, DS, US, SS, UL, SL, FL, FD; top level and inside sequences) to
    hostile values: one, a few, or every one of them at once."""

    name = "numeric_value"

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return inflated(data, lambda raw: self._edit(raw, rng), rng)

    def _edit(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        candidates = [el for el in layout.dataset_elements() if el.defined and element_vr(el) in NUMERIC_VRS]
        if not candidates:
            raise NotApplicable("no numeric attribute")
        roll = rng.random()
        if roll < 0.2:
            targets = candidates
        else:
            count = 1 if roll < 0.65 else rng.randint(2, 8)
            weights = [4.0 if el.tag in READ_TAGS else 1.0 for el in candidates]
            targets = list({id(t): t for t in rng.choices(candidates, weights, k=count)}.values())
        for el in sorted(targets, key=lambda e: e.offset, reverse=True):  # back to front: offsets stay valid
            vr = element_vr(el)
            assert vr is not None
            value = hostile_value(vr, layout.little, rng)
            if el.length_size == 2 and len(value) > 0xFFFF:
                continue
            data = replace_value(Layout(data, layout.meta_end, layout.syntax, layout.explicit, layout.little,
                                        layout.elements, layout.complete, layout.has_meta), el, value)
        return data


class LyingLength(Mutator):
    """Rewrite element length fields in the raw bytes: Pixel Data, file meta (group length included),
    sequences and items, the last element, any element; to 0, ±1, odd, double, half, the rest of the
    file (±), undefined (0xFFFFFFFF) on a non-sequence, or huge."""

    name = "lying_length"

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return inflated(data, lambda raw: self._lie(raw, rng), rng)

    def _lie(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        if not layout.elements:
            raise NotApplicable("no element found")
        for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 3)):
            el = self._pick(layout, rng)
            data = set_length(data, el, self._length(el, len(data), rng))
        return data

    @staticmethod
    def _pick(layout: Layout, rng: random.Random) -> Element:
        roll = rng.random()
        pool: list[Element] = []
        if roll < 0.25:
            pool = [el for el in (layout.pixel(), *layout.fragments()) if el is not None]
        elif roll < 0.35:
            pool = [el for el in layout.elements if el.group == 0x0002]
        elif roll < 0.5:
            pool = [el for el in layout.elements if el.tag == ITEM or element_vr(el) == "SQ"]
        elif roll < 0.6:
            pool = layout.elements[-1:]
        return rng.choice(pool or layout.elements)

    @staticmethod
    def _length(el: Element, size: int, rng: random.Random) -> int:
        length = el.length if el.defined else 0
        rest = size - el.value_offset
        choices = [0, 1, length - 1, length + 1, length * 2, length // 2, length | 1, rest, rest + 1, rest + 2, rest - 1,
                   0xFFFF, 0xFFFE, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 0x80000000, rng.randrange(1 << 32)]
        new = rng.choice(choices)
        return new if new != length else length + 2


class LyingVR(Mutator):
    """Change VRs in explicit-VR files to wrong ones (short/long length families swapped, other types)
    or unknown ones; elements in the file meta and inside sequences too."""

    name = "lying_vr"
    UNKNOWN = (b"ZZ", b"XX", b"\0\0", b"  ", b"us", b"\xff\xff", b"O?", b"S\0", b"ob", b"QS")

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return inflated(data, lambda raw: self._lie(raw, rng), rng)

    def _lie(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        pool = [el for el in layout.elements if el.vr is not None]
        dataset = [el for el in pool if el.group != 0x0002]
        if not dataset:
            raise NotApplicable("implicit VR data set")
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            el = rng.choice(dataset if rng.random() < 0.85 else pool)
            assert el.vr is not None
            roll = rng.random()
            if roll < 0.4:  # other length family: the header is now read with the wrong layout
                family = [v for v in ALL_VRS if (v in LONG_VRS) != (el.vr in LONG_VRS)]
                new = rng.choice(family).encode()
            elif roll < 0.7:
                family = [v for v in ALL_VRS if (v in LONG_VRS) == (el.vr in LONG_VRS) and v != el.vr]
                new = rng.choice(family).encode()
            else:
                new = rng.choice(self.UNKNOWN)
            out[el.offset + 4:el.offset + 6] = new
        return bytes(out)


class BadTransferSyntax(Mutator):
    """The file meta's Transfer Syntax UID made empty, bogus, a UID of something that is not a transfer
    syntax, a real but mismatched syntax, several values, or removed (the data set is left as it is)."""

    name = "bad_transfer_syntax"
    NOT_SYNTAXES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.1", "1.2.840.10008.1.2.4", "1.2.840.10008.1.3.10",
                    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.4.999", "1.2.840.10008.1.2.1.", "2.25.0")
    BOGUS = ("", "\0", "bogus", "1.2.3.4", ".1.2", "1.2.840.10008.1.2\\1.2.840.10008.1.2.1", "1.2.840.10008.1.2 .1",
             "1." + "2" * 120, "1.2.840.10008.1.2.1\0\0\0\0", "١.٢", "1.2.840.10008.1.2.4.50" + " " * 40, "00.01")
    REAL = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED, "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203",
            "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.107",
            "1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.4.52", "1.2.840.10008.1.2.4.100.1")

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        if not layout.has_meta:
            raise NotApplicable("no file meta")
        roll = rng.random()
        if roll < 0.5:
            value = rng.choice([s for s in self.REAL if s != layout.syntax])
        elif roll < 0.7:
            value = rng.choice(self.NOT_SYNTAXES)
        else:
            value = rng.choice(self.BOGUS)
        raw = value.encode("utf-8")
        raw = raw + b"\0" if len(raw) % 2 else raw
        current = layout.find(TRANSFER_SYNTAX)
        element = encode_element(TRANSFER_SYNTAX, "UI", raw, True, True)
        if current is None:
            after = [el for el in layout.elements if el.group == 0x0002 and el.tag > TRANSFER_SYNTAX]
            position = after[0].offset if after else layout.meta_end
            return replace_range(layout, position, position, element)
        if rng.random() < 0.1:
            return replace_range(layout, current.offset, current.end, b"")
        return replace_range(layout, current.offset, current.end, element)


def _is_native(layout: Layout) -> bool:
    pixel = layout.pixel()
    return pixel is not None and pixel.defined


def _frame_bytes(layout: Layout) -> int:
    """Bytes of one native frame per the header (best effort)."""
    def number(tag: int, default: int) -> int:
        el = layout.find(tag)
        if el is None or not el.defined:
            return default
        value = layout.value(el)
        try:
            if element_vr(el) == "US" and len(value) >= 2:
                return _u16(value, 0, el.little)
            return int(value.rstrip(b"\0 ").decode() or default)
        except (ValueError, struct.error):
            return default
    return max(1, number(0x00280010, 1) * number(0x00280011, 1) * number(0x00280002, 1) * max(1, number(0x00280100, 8) // 8))


class PixelShort(Mutator):
    """Pixel Data shorter than declared: native values cut (to nothing, by a byte, a row, a frame, half,
    a random amount); encapsulated data with fragments dropped or the last fragment cut."""

    name = "pixel_short"

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return inflated(data, lambda raw: self._shorten(raw, rng), rng)

    def _shorten(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        pixel = layout.pixel()
        if pixel is None:
            raise NotApplicable("no Pixel Data")
        if pixel.defined:
            length = pixel.length
            if length < 2:
                raise NotApplicable("empty Pixel Data")
            frame = _frame_bytes(layout)
            new = rng.choice((0, 1, length - 1, length - 2, length // 2, max(0, length - frame), max(0, length - frame // 2),
                              rng.randrange(length)))
            return replace_value(layout, pixel, layout.value(pixel)[:new])
        fragments = layout.fragments()
        if len(fragments) < 2:
            raise NotApplicable("no fragment")
        frags = fragments[1:]
        roll = rng.random()
        if roll < 0.35:  # drop the last fragment(s)
            drop = rng.randint(1, len(frags))
            start = frags[-drop].offset
            return replace_range(layout, start, frags[-1].end, b"")
        if roll < 0.5:  # only the Basic Offset Table is left
            return replace_range(layout, frags[0].offset, frags[-1].end, b"")
        target = rng.choice(frags)  # cut one fragment's bytes (its item length follows)
        keep = rng.choice((0, 1, target.length // 2, max(0, target.length - 1), max(0, target.length - 2),
                           rng.randrange(max(1, target.length))))
        return replace_value(layout, target, layout.value(target)[:keep])


class PixelLong(Mutator):
    """Pixel Data longer than declared: native values with bytes appended (a few, a row, a copy of
    itself, random); encapsulated data with extra fragments (garbage or repeated frames) or a fragment
    grown with garbage; in deflated files, often tens of MiB to a GiB of zeros (which deflate ~1000:1)."""

    name = "pixel_long"
    MAX_EXTRA = 600_000

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        split = _inflate_split(data)
        if split is not None and rng.random() < 0.5:
            return self._deflate_bomb(data, split, rng)
        return inflated(data, lambda raw: self._lengthen(raw, rng), rng)

    @staticmethod
    def _deflate_bomb(data: bytes, split: tuple[int, bytes], rng: random.Random) -> bytes:
        """Deflated file: Pixel Data grown by tens of MiB to a GiB of zeros (the file stays about 1 MB at most)."""
        meta_end, dataset = split
        full = data[:meta_end] + dataset
        layout = tokenize(full)
        pixel = layout.pixel()
        if pixel is None or not pixel.defined:
            raise NotApplicable("no native Pixel Data")
        extra = rng.choice((64, 256, 1024)) * 1024 * 1024
        head = set_length(full, pixel, pixel.length + extra)[meta_end:pixel.end]
        return data[:meta_end] + deflate_segments([head, extra, full[pixel.end:]])

    def _lengthen(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        pixel = layout.pixel()
        if pixel is None:
            raise NotApplicable("no Pixel Data")
        if pixel.defined:
            value = layout.value(pixel)
            extra_n = min(self.MAX_EXTRA, rng.choice((1, 2, 3, 7, 64, 1024, _frame_bytes(layout), max(1, len(value)))))
            kind = rng.random()
            if kind < 0.4:
                extra = bytes(extra_n)
            elif kind < 0.7:
                extra = rng.randbytes(extra_n)
            else:
                extra = (value * (extra_n // max(1, len(value)) + 1))[:extra_n]
            return replace_value(layout, pixel, value + extra)
        fragments = layout.fragments()
        if not fragments:
            raise NotApplicable("no fragment")
        frags = fragments[1:]
        end = frags[-1].end if frags else fragments[0].end
        little, explicit = pixel.little, pixel.explicit
        roll = rng.random()
        if roll < 0.4 or not frags:  # extra garbage fragments
            extra = b"".join(encode_element(ITEM, "", rng.randbytes(rng.choice((2, 16, 256, 4096, 65536))), explicit, little)
                             for _ in range(rng.randint(1, 8)))
            return replace_range(layout, end, end, extra)
        if roll < 0.7:  # the frames again, many times
            block = data[frags[0].offset:end]
            copies = max(1, min(rng.choice((1, 2, 10, 100, 1000)), self.MAX_EXTRA // max(1, len(block))))
            return replace_range(layout, end, end, block * copies)
        target = rng.choice(frags)  # a fragment grown with garbage
        grow = rng.choice((1, 2, 100, 10000, max(2, target.length)))
        return replace_value(layout, target, layout.value(target) + rng.randbytes(min(grow, self.MAX_EXTRA)))


DIMENSION_VALUES: dict[int, tuple[str, tuple[object, ...]]] = {
    0x00280010: ("US", (0, 1, 2, 3, 16384, 32768, 65535)),                      # Rows
    0x00280011: ("US", (0, 1, 2, 3, 16384, 32768, 65535)),                      # Columns
    0x00280008: ("IS", ("1000000000", "2000000000", "2147483647", "2147483648", "0", "-1", "20000", "20001",
                        "100000", "65536", "2", "1e9", "99999999999")),         # NumberOfFrames
    0x00280002: ("US", (0, 2, 3, 4, 5, 255, 65535)),                            # SamplesPerPixel
    0x00280100: ("US", (0, 1, 7, 8, 12, 24, 32, 48, 64, 65, 128, 65535)),       # BitsAllocated
    0x00280101: ("US", (0, 1, 17, 33, 64, 65, 65535)),                          # BitsStored
    0x00280102: ("US", (0, 31, 63, 65535)),                                     # HighBit
    0x00280006: ("US", (0, 1, 2, 65535)),                                       # PlanarConfiguration
    0x00280103: ("US", (0, 1, 2, 65535)),                                       # PixelRepresentation
}


class AbsurdDimensions(Mutator):
    """Rows, Columns, NumberOfFrames, SamplesPerPixel, BitsAllocated, BitsStored, HighBit,
    PlanarConfiguration, PixelRepresentation set to extremes (added where absent); compressed files
    often get NumberOfFrames in the billions; or Rows x Columns reshaped to an absurd aspect with the
    same pixel count (1 x 262144, 8 x 32768...), which the pixel bytes still match."""

    name = "absurd_dimensions"

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return inflated(data, lambda raw: self._edit(raw, rng), rng)

    def _edit(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        if layout.pixel() is None and rng.random() < 0.8:
            raise NotApplicable("no Pixel Data")
        if rng.random() < 0.2:
            reshaped = self._reshape(layout, rng)
            if reshaped is not None:
                return reshaped
        tags = list(DIMENSION_VALUES)
        chosen = rng.sample(tags, rng.choice((1, 1, 2, 3)))
        compressed = layout.syntax is not None and layout.syntax not in NATIVE_SYNTAXES
        edits: dict[int, bytes] = {}
        for tag in chosen:
            vr, values = DIMENSION_VALUES[tag]
            value = rng.choice(values)
            if tag == 0x00280008 and compressed and rng.random() < 0.6:
                value = rng.choice(("1000000000", "2000000000", "100000"))
            if vr == "IS":
                raw = str(value).encode()
                edits[tag] = raw + b" " if len(raw) % 2 else raw
            else:
                edits[tag] = struct.pack("<H" if layout.little else ">H", int(value))  # type: ignore[call-overload]
        for tag in sorted(edits, reverse=True):  # back to front
            layout = tokenize(data)
            el = layout.find(tag)
            if el is not None and el.defined:
                data = replace_value(layout, el, edits[tag])
            else:
                vr = DIMENSION_VALUES[tag][0]
                data = insert_top_level(layout, tag, encode_element(tag, vr, edits[tag], layout.explicit, layout.little))
        return data


    @staticmethod
    def _reshape(layout: Layout, rng: random.Random) -> bytes | None:
        """Same number of pixels, absurd aspect: Rows x Columns becomes e.g. 1 x (Rows*Columns)."""
        rows_el, cols_el = layout.find(0x00280010), layout.find(0x00280011)
        if rows_el is None or cols_el is None or rows_el.length != 2 or cols_el.length != 2:
            return None
        rows, cols = _u16(layout.data, rows_el.value_offset, rows_el.little), _u16(layout.data, cols_el.value_offset, cols_el.little)
        pixels = rows * cols
        shapes = [(r, pixels // r) for r in range(1, min(pixels, 65535) + 1)
                  if pixels % r == 0 and pixels // r <= 65535 and (r, pixels // r) != (rows, cols)]
        if not shapes:
            return None
        new_rows, new_cols = rng.choice(shapes[:3] + shapes[-3:])
        order = "<H" if layout.little else ">H"
        data = replace_value(layout, cols_el, struct.pack(order, new_cols))
        relaid = tokenize(data)
        rows_again = relaid.find(0x00280010)
        assert rows_again is not None
        return replace_value(relaid, rows_again, struct.pack(order, new_rows))


class DeepSequence(Mutator):
    """Deeply nested sequences (hundreds to tens of thousands of levels; undefined, defined or mixed
    lengths; sometimes unterminated), or one sequence with up to ten thousand items, added at the top
    level or replacing an existing sequence (functional groups included)."""

    name = "deep_sequence"
    TAGS = (0x00081115, 0x00400275, 0x52009229, 0x52009230, 0x00291010, 0x00081140)

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        return inflated(data, lambda raw: self._nest(raw, rng), rng)

    def _nest(self, data: bytes, rng: random.Random) -> bytes:
        layout = tokenize(data)
        if layout.meta_end >= len(data):
            raise NotApplicable("no data set")
        explicit, little = layout.explicit, layout.little
        tag = rng.choice(self.TAGS)
        inner_tag = rng.choice((tag, 0x00081140, 0x00209113, 0x00289110))
        roll = rng.random()
        payload = b""
        if rng.random() < 0.3:  # something the reader looks for at the bottom
            payload = encode_element(0x00200032, "DS", b"1\\2\\3 ", explicit, little)
        if roll < 0.1:
            element = self._wide(tag, rng.choice((1000, 3000, 10000)), explicit, little)
        else:
            depth = rng.choice((100, 500, 1000, 2000, 5000, 10000, 25000))
            form = rng.choice(("undefined", "undefined", "defined", "mixed"))
            element = self._deep(tag, inner_tag, depth, form, payload, explicit, little, rng)
            if rng.random() < 0.05:
                element = element[:len(element) - rng.randint(8, 8 * min(depth, 50))]  # unterminated
        existing = [el for el in layout.top_level() if element_vr(el) == "SQ"]
        if existing and rng.random() < 0.4:
            target = rng.choice(existing)
            start, end = element_span(layout, target)
            retagged = struct.pack("<HH" if little else ">HH", target.tag >> 16, target.tag & 0xFFFF) + element[4:]
            return replace_range(layout, start, end, retagged)
        return insert_top_level(layout, tag, element)

    @staticmethod
    def _deep(tag: int, inner_tag: int, depth: int, form: str, payload: bytes, explicit: bool, little: bool,
              rng: random.Random) -> bytes:
        seq_header = len(encode_header(tag, "SQ", 0, explicit, little))
        open_undefined = encode_header(inner_tag, "SQ", UNDEFINED, explicit, little) + encode_header(ITEM, "", UNDEFINED, explicit, little)
        close_undefined = encode_header(ITEM_DELIM, "", 0, explicit, little) + encode_header(SEQ_DELIM, "", 0, explicit, little)
        head: list[bytes] = []
        tail: list[bytes] = []
        for level in range(depth):
            defined = form == "defined" or (form == "mixed" and rng.random() < 0.5)
            this_tag = tag if level == 0 else inner_tag
            if defined:
                # Exact when every level below is defined too; otherwise (mixed) a lie.
                size = (depth - level) * (seq_header + 8) + len(payload)
                head.append(encode_header(this_tag, "SQ", size - seq_header, explicit, little)
                            + encode_header(ITEM, "", size - seq_header - 8, explicit, little))
                tail.append(b"")
            else:
                head.append(open_undefined if level else encode_header(this_tag, "SQ", UNDEFINED, explicit, little)
                            + encode_header(ITEM, "", UNDEFINED, explicit, little))
                tail.append(close_undefined)
        return b"".join(head) + payload + b"".join(reversed(tail))

    @staticmethod
    def _wide(tag: int, items: int, explicit: bool, little: bool) -> bytes:
        item = encode_header(ITEM, "", UNDEFINED, explicit, little) + encode_header(ITEM_DELIM, "", 0, explicit, little)
        return (encode_header(tag, "SQ", UNDEFINED, explicit, little) + item * items
                + encode_header(SEQ_DELIM, "", 0, explicit, little))


# NIfTI header fields: name -> (NIfTI-1 offset, format, count), (NIfTI-2 offset, format, count).
NIFTI_FIELDS: dict[str, tuple[tuple[int, str, int], tuple[int, str, int]]] = {
    "sizeof_hdr": ((0, "i", 1), (0, "i", 1)),
    "dim": ((40, "h", 8), (16, "q", 8)),
    "datatype": ((70, "h", 1), (12, "h", 1)),
    "bitpix": ((72, "h", 1), (14, "h", 1)),
    "pixdim": ((76, "f", 8), (104, "d", 8)),
    "vox_offset": ((108, "f", 1), (168, "q", 1)),
    "scl_slope": ((112, "f", 1), (176, "d", 1)),
    "scl_inter": ((116, "f", 1), (184, "d", 1)),
    "qform_code": ((252, "h", 1), (344, "i", 1)),
    "sform_code": ((254, "h", 1), (348, "i", 1)),
    "quatern": ((256, "f", 3), (352, "d", 3)),
    "qoffset": ((268, "f", 3), (376, "d", 3)),
    "srow": ((280, "f", 12), (400, "d", 12)),
    "intent_code": ((68, "h", 1), (504, "i", 1)),
    "xyzt_units": ((123, "B", 1), (500, "i", 1)),
    "dim_info": ((39, "B", 1), (524, "B", 1)),
}
NIFTI_MAGIC = ((344, 4), (4, 8))
NAN, INF = math.nan, math.inf


def _nifti_layout(raw: bytes) -> tuple[int, str] | None:
    """(1 or 2, byte order) of an uncompressed NIfTI header, or None."""
    if len(raw) < 348:
        return None
    for order in ("<", ">"):
        size = struct.unpack_from(order + "i", raw)[0]
        if size == 348:
            return 1, order
        if size == 540 and len(raw) >= 540:
            return 2, order
    return None


class NiftiHeaderLie(Mutator):
    """NIfTI headers that lie: dim (rank and sizes, a 2048³ int16 volume behind a tiny file), datatype
    and bitpix, vox_offset, pixdim (qfac included), scl_slope/scl_inter NaN or inf, qform/sform codes,
    quaternions, offsets and srows garbage, magic and sizeof_hdr; or voxel data with NaN/inf."""

    name = "nifti_header_lie"
    kinds = ("nifti",)
    LIES = ("dim", "huge", "datatype", "vox_offset", "pixdim", "scaling", "qform", "sform", "magic", "nan_voxels", "misc")

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        packed = data[:2] == b"\x1f\x8b"
        raw = gunzip(data) if packed else data
        found = _nifti_layout(raw)
        if found is None:
            raise NotApplicable("not a NIfTI header")
        version, order = found
        lies = rng.sample(self.LIES, rng.choice((1, 1, 1, 2, 3)))
        out = bytearray(raw)
        if "nan_voxels" in lies:  # first, while the header is still the seed's own
            lies.remove("nan_voxels")
            try:
                out = bytearray(self._nan_voxels(raw, version, rng))
            except NotApplicable:
                if not lies:
                    raise
            found = _nifti_layout(bytes(out))
            assert found is not None
            version, order = found
        for lie in lies:
            self._lie(out, version, order, lie, rng)
        result = bytes(out)
        return gz(result) if packed and rng.random() < 0.95 else result

    @staticmethod
    def _set(out: bytearray, version: int, order: str, name: str, values: list[float], start: int = 0) -> None:
        offset, fmt, count = NIFTI_FIELDS[name][version - 1]
        size = struct.calcsize(fmt)
        for k, value in enumerate(values[:count - start]):
            pos = offset + (start + k) * size
            if fmt in "fd":
                struct.pack_into(order + fmt, out, pos, float(value))
            else:
                bits = 8 * size
                struct.pack_into(order + fmt, out, pos, _wrap(int(value), bits, signed=fmt.islower()))

    def _lie(self, out: bytearray, version: int, order: str, lie: str, rng: random.Random) -> None:
        set_ = self._set
        floats = (NAN, INF, -INF, 0.0, -1.0, 1e-30, 1e30, 3.4e38)
        if lie == "dim":
            if rng.random() < 0.4:
                set_(out, version, order, "dim", [rng.choice((0, -1, 8, 9, 100, 32767, 2, 4, 5, 7))])
            else:
                axis = rng.randint(1, 7)
                big = (2**31, 2**40) if version == 2 else ()
                set_(out, version, order, "dim", [rng.choice((0, -1, -32768, 32767, 2048, 65535, 3, *big))], start=axis)
        elif lie == "huge":
            set_(out, version, order, "dim", [3, 2048, 2048, 2048, 1, 1, 1, 1])
            set_(out, version, order, "datatype", [4])
            set_(out, version, order, "bitpix", [16])
        elif lie == "datatype":
            set_(out, version, order, "datatype", [rng.choice((0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280,
                                                                1536, 1792, 2048, 2304, 255, 9999, -1, 16384))])
            if rng.random() < 0.5:
                set_(out, version, order, "bitpix", [rng.choice((0, 1, 7, 8, 16, 33, 64, 128, -8))])
        elif lie == "vox_offset":
            size = len(out)
            choices: tuple[float, ...] = (0, 1, 100, 347, 348, 352, -352, size, size + 1, size - 1, 2**31, 2**40)
            if version == 1:
                choices += (NAN, INF, -INF, 1e30, 352.5)
            set_(out, version, order, "vox_offset", [rng.choice(choices)])
        elif lie == "pixdim":
            set_(out, version, order, "pixdim", [rng.choice((*floats, 2.0, 1.0))], start=rng.randint(0, 7))
        elif lie == "scaling":
            name = rng.choice(("scl_slope", "scl_inter"))
            set_(out, version, order, name, [rng.choice((NAN, INF, -INF, 0.0, 1e38, -1e38, 1e-38, 3.4e38))])
        elif lie == "qform":
            set_(out, version, order, "qform_code", [rng.choice((0, 1, 2, 3, 4, 5, -1, 32767))])
            set_(out, version, order, rng.choice(("quatern", "qoffset")), [rng.choice((NAN, INF, 2.0, -2.0, 1e30))] * 3)
        elif lie == "sform":
            set_(out, version, order, "sform_code", [rng.choice((1, 2, 3, 4, 5, -1, 32767))])
            roll = rng.random()
            if roll < 0.4:
                set_(out, version, order, "srow", [0.0] * 12)  # singular
            else:
                set_(out, version, order, "srow", [rng.choice(floats)], start=rng.randrange(12))
        elif lie == "magic":
            offset, size = NIFTI_MAGIC[version - 1]
            magic = rng.choice((b"n+1\0", b"ni1\0", b"n+2\0", b"xxxx", b"\0\0\0\0", b"n+2\0\r\n\x1a\n"))
            out[offset:offset + size] = magic[:size].ljust(size, b"\0")
            if rng.random() < 0.3:
                set_(out, version, order, "sizeof_hdr", [rng.choice((0, 347, 349, 540, 348, -348))])
        else:
            name = rng.choice(("intent_code", "xyzt_units", "dim_info"))
            set_(out, version, order, name, [rng.choice((255, 1001, 2005, 3000, -1, 65535))])

    @staticmethod
    def _nan_voxels(raw: bytes, version: int, rng: random.Random) -> bytes:
        """The same image with float32 voxels, some (or all) NaN or infinite."""
        import nibabel as nib
        import numpy as np

        klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
        try:
            image = klass.from_bytes(raw)
            if math.prod(image.shape) > 400_000:
                raise NotApplicable("too many voxels to rewrite")
            values = np.asarray(image.dataobj, dtype=np.float32).copy()
        except NotApplicable:
            raise
        except Exception as exc:  # the seed's own header may already be odd
            raise NotApplicable(f"nibabel cannot read the seed ({type(exc).__name__})") from exc
        flat = values.reshape(-1)
        bad = rng.choice((np.nan, np.inf, -np.inf))
        if rng.random() < 0.2:
            flat[:] = bad
        else:
            picks = np.random.default_rng(rng.randrange(1 << 32)).choice(flat.size, size=min(flat.size, rng.choice((1, 10, 1000))), replace=False)
            flat[picks] = bad
        header = image.header.copy()
        header.set_data_dtype(np.float32)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        rebuilt = klass(values, image.affine, header)
        return rebuilt.to_bytes()


def _wrap(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


#: Every mutation class, by name, in campaign order.
MUTATORS: dict[str, Mutator] = {m.name: m for m in (
    ByteFlip(), Truncate(), NumericValue(), LyingLength(), LyingVR(), BadTransferSyntax(), PixelShort(), PixelLong(),
    AbsurdDimensions(), DeepSequence(), NiftiHeaderLie(),
)}
