"""Decoding and encoding rules. Pure code: no Beam.

``decode`` turns untrusted bytes into a ``DecodedImage`` (pixels as the viewer sees them, EXIF
orientation applied) or raises ``ImageError`` with a one-line reason. ``encode`` writes pixels back in
the source's format with the source's quality settings, stripping metadata unless asked to keep it.

Pixel layout: ``(H, W, C)`` numpy arrays, C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA),
dtype uint8 or uint16 (16-bit PNG, TIFF and PGM keep their depth). Sources in CMYK, LAB or 1-bit
are anonymized in RGB / gray and written back in their own mode where the format holds it.

Metadata is copied from an allow-list only (``EXIF_IFD0_TAGS``, ``EXIF_SUB_TAGS``,
``EXIF_GPS_TAGS``, ``ICC_TAGS``, printable JPEG comments): nothing that can carry an image
(MakerNote, thumbnails, XMP, IPTC, text chunks, private blobs) is ever written.
"""

from __future__ import annotations

import base64
import io
import re
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFile, JpegImagePlugin
from PIL.TiffImagePlugin import IFDRational

from blurbeam.errors import one_line

# We check the pixel count ourselves (clear message, configurable limit) before any decoding.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_PIXELS = 100_000_000

#: Formats we decode and write back in kind (Pillow format names).
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "JPEG2000")

#: File extensions the directory reader treats as images. Anything else in a folder is not read;
#: an image-like extension we cannot decode (e.g. HEIC) still gets an audit record with an error.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .webp .bmp .dib .tif .tiff .gif .ppm .pgm .pbm .pnm .jp2 .j2k "
    ".heic .heif .avif .jxl .ico .tga .psd .exr .hdr .dng .cr2 .nef .arw".split()
)

EXIF_ORIENTATION = 0x0112
EXIF_EXIF_IFD = 0x8769
EXIF_GPS_IFD = 0x8825

# TIFF tags read to find colour TIFFs whose depth Pillow would not keep
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_PHOTOMETRIC = 262
_TIFF_SAMPLES_PER_PIXEL = 277
_TIFF_SAMPLE_FORMAT = 339
_TIFF_PHOTOMETRIC_RGB = 2


class ImageError(Exception):
    """A one-line, user-facing reason why an input image cannot be processed."""


@dataclass
class DecodedImage:
    pixels: np.ndarray
    format: str  # Pillow format name, e.g. "JPEG"
    mode: str  # source pixel mode, e.g. "RGB", "CMYK", "I;16", "RGBA;16"
    orientation: int = 1  # the EXIF orientation that was applied (1 = none)
    exif: Any = None  # PIL.Image.Exif of the source, for --keep-metadata
    icc_profile: bytes | None = None
    save_params: dict[str, Any] = field(default_factory=dict)  # quality settings of the source
    comment: bytes | None = None
    xmp: bool = False  # the source carried XMP (dropped on output; see docs)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        return data[24]
    return None


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip ``(H, W, C)`` pixels as EXIF orientation 1-8 says (same result as Pillow's
    ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:
        out = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        out = np.rot90(pixels, k=-1)
    elif orientation == 7:
        out = np.rot90(pixels, k=2).transpose(1, 0, 2)
    elif orientation == 8:
        out = np.rot90(pixels, k=1)
    else:
        out = pixels
    return np.ascontiguousarray(out)


def _orientation_of(im: Image.Image) -> tuple[Any, int]:
    try:
        exif = im.getexif()
    except Exception:  # a broken EXIF block is not worth failing the image for
        return None, 1
    try:
        orientation = int(exif.get(EXIF_ORIENTATION, 1))
    except (TypeError, ValueError):
        orientation = 1
    return exif, orientation if 1 <= orientation <= 8 else 1


def _pixels_from_pillow(im: Image.Image) -> tuple[np.ndarray, str]:
    """Pillow image -> (H, W, C) uint8/uint16 array in our layout; returns (pixels, source mode)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return arr, mode
    if im.mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)
        return arr[:, :, None], mode
    if im.mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError("unsupported pixel mode: 32-bit integer samples outside 16-bit range")
        return arr.astype(np.uint16)[:, :, None], mode
    raise ImageError(f"unsupported pixel mode {im.mode!r}")


def _tiff_deep_colour(im: Image.Image) -> str | None:
    """For a TIFF with more than 8 bits per sample and more than one sample per pixel: "rgb16"
    for unsigned 16-bit RGB / RGBA (decoded with OpenCV, as Pillow reduces it to 8 bits), else a
    one-line reason why it cannot be anonymized with its depth kept. None for other images."""
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    bits = tags.get(_TIFF_BITS_PER_SAMPLE, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = tags.get(_TIFF_SAMPLES_PER_PIXEL, 1)
    if not bits or max(bits) <= 8 or samples <= 1:
        return None
    fmt = tags.get(_TIFF_SAMPLE_FORMAT, (1,))
    fmt = fmt if isinstance(fmt, tuple) else (fmt,)
    photometric = tags.get(_TIFF_PHOTOMETRIC)
    if (
        set(bits) == {16}
        and samples in (3, 4)
        and photometric == _TIFF_PHOTOMETRIC_RGB
        and set(fmt) <= {1}
    ):
        return "rgb16"
    kind = {1: "gray", 2: "RGB", 5: "CMYK", 6: "YCbCr", 8: "CIELAB"}.get(photometric, "colour")
    sample = {2: "signed ", 3: "float "}.get(fmt[0] if fmt else 1, "")
    return (
        f"unsupported TIFF: {max(bits)}-bit {sample}{kind} with {samples} samples per pixel "
        "(16-bit RGB, RGBA and gray are supported)"
    )


def _decode_16bit(data: bytes, fmt: str) -> np.ndarray:
    """16-bit PNG / TIFF with OpenCV, which keeps 16 bits per sample (no EXIF rotation applied)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(f"corrupt or truncated {fmt} data")
    if arr.dtype != np.uint16:
        raise ImageError(f"unsupported {fmt}: decoded as {arr.dtype}, expected 16-bit samples")
    if arr.ndim == 2:
        return arr[:, :, None]
    if arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr


def _save_params(im: Image.Image, fmt: str, data: bytes) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if fmt == "JPEG":
        q = getattr(im, "quantization", None)
        if q:
            params["qtables"] = [list(t) for t in q.values()]
        try:
            sampling = JpegImagePlugin.get_sampling(im)
        except Exception:
            sampling = -1
        if sampling != -1:
            params["subsampling"] = sampling
        if im.info.get("progressive") or im.info.get("progression"):
            params["progressive"] = True
    elif fmt == "WEBP":
        # VP8L chunk = lossless WebP; keep it lossless. Lossy WebP does not record its quality.
        if b"VP8L" in data[12:40]:
            params["lossless"] = True
        else:
            params["quality"] = 90
    elif fmt == "TIFF":
        comp = im.info.get("compression")
        if comp and comp != "raw":
            params["compression"] = comp
    return params


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode untrusted image bytes. Raises ImageError with a one-line reason."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Exception as exc:  # header parsing of a hostile file
        raise ImageError(f"unreadable image header: {one_line(exc, with_type=False)}") from None
    fmt = (im.format or "").upper()
    if fmt == "MPO":  # multi-picture JPEG: we would keep only the first picture
        fmt = "JPEG" if getattr(im, "n_frames", 1) == 1 else fmt
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(f"unsupported image format {fmt or 'unknown'}")
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"invalid image size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(
            f"image too large: {w}x{h} = {w * h} pixels exceeds --max-pixels {max_pixels} "
            "(possible decompression bomb)"
        )
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1:
        raise ImageError(
            f"multi-frame image ({n_frames} frames): only single-frame images can be anonymized"
        )
    exif, orientation = _orientation_of(im)
    deep = _tiff_deep_colour(im) if fmt == "TIFF" else None
    if deep is not None and deep != "rgb16":
        raise ImageError(deep)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _png_bit_depth(data) == 16 or deep == "rgb16":
                pixels = _decode_16bit(data, fmt)
                mode = {1: "I;16", 2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[pixels.shape[2]]
            else:
                im.load()
                pixels, mode = _pixels_from_pillow(im)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(
            f"corrupt or truncated image data: {one_line(exc, with_type=False)}"
        ) from None
    if pixels.shape[0] != h or pixels.shape[1] != w:
        raise ImageError(
            f"decoded size {pixels.shape[1]}x{pixels.shape[0]} differs from header {w}x{h}"
        )
    return DecodedImage(
        pixels=apply_orientation(pixels, orientation),
        format=fmt,
        mode=mode,
        orientation=orientation,
        exif=exif,
        icc_profile=im.info.get("icc_profile"),
        save_params=_save_params(im, fmt, data),
        comment=im.info.get("comment") if isinstance(im.info.get("comment"), bytes) else None,
        xmp=bool(im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")),
    )


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """The 8-bit RGB view detectors take. Alpha is ignored on purpose: colour under transparent
    pixels is still in the file, so faces there are detected and blurred too."""
    arr = pixels
    if arr.dtype == np.uint16:
        # the 8 most significant bits in use: a 16-bit image holding 8- or 12-bit values
        # (a 16-bit PGM or TIFF from an 8-bit source, a 12-bit sensor) is not shown black
        top = int(arr.max()) if arr.size else 0
        arr = (arr >> max(top.bit_length() - 8, 0)).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported pixel dtype {arr.dtype}")
    c = arr.shape[2]
    if c in (1, 2):
        return np.ascontiguousarray(np.repeat(arr[:, :, :1], 3, axis=2))
    return np.ascontiguousarray(arr[:, :, :3])


@dataclass(frozen=True)
class MetadataPolicy:
    keep_metadata: bool = False  # keep the allow-listed EXIF (orientation reset) and comments
    keep_gps: bool = False  # with keep_metadata: keep the allow-listed GPS tags too


# --keep-metadata copies EXIF tags from these allow-lists only: tag -> (kind of value, most
# values). A tag that is not listed, or whose value is not of its kind and size, is dropped, so
# no blob (MakerNote, UserComment, a preview in any UNDEFINED or BYTE tag), no thumbnail (IFD1)
# and no sub-IFD other than Exif and GPS (Interop, SubIFDs, vendor IFDs) reaches the output.
_ASCII = "ascii"  # printable ASCII text of at most N characters
_UINT = "uint"  # 1..N unsigned integers (BYTE, SHORT, LONG)
_RATIONAL = "rational"  # 1..N rationals, signed or not
_SMALL_BYTES = "bytes"  # 1..N raw bytes (UNDEFINED or BYTE), N <= 4

#: IFD0: camera, software, author, date, resolution, orientation (written as 1).
EXIF_IFD0_TAGS: dict[int, tuple[str, int]] = {
    0x010F: (_ASCII, 64),  # Make
    0x0110: (_ASCII, 64),  # Model
    0x0112: (_UINT, 1),  # Orientation
    0x011A: (_RATIONAL, 1),  # XResolution
    0x011B: (_RATIONAL, 1),  # YResolution
    0x0128: (_UINT, 1),  # ResolutionUnit
    0x0131: (_ASCII, 64),  # Software
    0x0132: (_ASCII, 20),  # DateTime
    0x013B: (_ASCII, 64),  # Artist
    0x8298: (_ASCII, 128),  # Copyright
}
#: Exif IFD: exposure, lens, dates and colour space.
EXIF_SUB_TAGS: dict[int, tuple[str, int]] = {
    0x829A: (_RATIONAL, 1),  # ExposureTime
    0x829D: (_RATIONAL, 1),  # FNumber
    0x8822: (_UINT, 1),  # ExposureProgram
    0x8827: (_UINT, 2),  # PhotographicSensitivity (ISO)
    0x8830: (_UINT, 1),  # SensitivityType
    0x9000: (_SMALL_BYTES, 4),  # ExifVersion
    0x9003: (_ASCII, 20),  # DateTimeOriginal
    0x9004: (_ASCII, 20),  # DateTimeDigitized
    0x9010: (_ASCII, 7),  # OffsetTime
    0x9011: (_ASCII, 7),  # OffsetTimeOriginal
    0x9012: (_ASCII, 7),  # OffsetTimeDigitized
    0x9201: (_RATIONAL, 1),  # ShutterSpeedValue
    0x9202: (_RATIONAL, 1),  # ApertureValue
    0x9203: (_RATIONAL, 1),  # BrightnessValue
    0x9204: (_RATIONAL, 1),  # ExposureBiasValue
    0x9205: (_RATIONAL, 1),  # MaxApertureValue
    0x9206: (_RATIONAL, 1),  # SubjectDistance
    0x9207: (_UINT, 1),  # MeteringMode
    0x9208: (_UINT, 1),  # LightSource
    0x9209: (_UINT, 1),  # Flash
    0x920A: (_RATIONAL, 1),  # FocalLength
    0x9290: (_ASCII, 9),  # SubSecTime
    0x9291: (_ASCII, 9),  # SubSecTimeOriginal
    0x9292: (_ASCII, 9),  # SubSecTimeDigitized
    0xA000: (_SMALL_BYTES, 4),  # FlashpixVersion
    0xA001: (_UINT, 1),  # ColorSpace
    0xA217: (_UINT, 1),  # SensingMethod
    0xA401: (_UINT, 1),  # CustomRendered
    0xA402: (_UINT, 1),  # ExposureMode
    0xA403: (_UINT, 1),  # WhiteBalance
    0xA404: (_RATIONAL, 1),  # DigitalZoomRatio
    0xA405: (_UINT, 1),  # FocalLengthIn35mmFilm
    0xA406: (_UINT, 1),  # SceneCaptureType
    0xA407: (_UINT, 1),  # GainControl
    0xA408: (_UINT, 1),  # Contrast
    0xA409: (_UINT, 1),  # Saturation
    0xA40A: (_UINT, 1),  # Sharpness
    0xA40C: (_UINT, 1),  # SubjectDistanceRange
    0xA432: (_RATIONAL, 4),  # LensSpecification
    0xA433: (_ASCII, 64),  # LensMake
    0xA434: (_ASCII, 64),  # LensModel
}
#: GPS IFD, with --keep-gps only: position, altitude, time, direction, speed. The free-form
#: GPSProcessingMethod and GPSAreaInformation (UNDEFINED blobs) are not listed.
EXIF_GPS_TAGS: dict[int, tuple[str, int]] = {
    0x00: (_SMALL_BYTES, 4),  # GPSVersionID
    0x01: (_ASCII, 1),  # GPSLatitudeRef
    0x02: (_RATIONAL, 3),  # GPSLatitude
    0x03: (_ASCII, 1),  # GPSLongitudeRef
    0x04: (_RATIONAL, 3),  # GPSLongitude
    0x05: (_SMALL_BYTES, 1),  # GPSAltitudeRef
    0x06: (_RATIONAL, 1),  # GPSAltitude
    0x07: (_RATIONAL, 3),  # GPSTimeStamp
    0x09: (_ASCII, 1),  # GPSStatus
    0x0A: (_ASCII, 1),  # GPSMeasureMode
    0x0B: (_RATIONAL, 1),  # GPSDOP
    0x0C: (_ASCII, 1),  # GPSSpeedRef
    0x0D: (_RATIONAL, 1),  # GPSSpeed
    0x0E: (_ASCII, 1),  # GPSTrackRef
    0x0F: (_RATIONAL, 1),  # GPSTrack
    0x10: (_ASCII, 1),  # GPSImgDirectionRef
    0x11: (_RATIONAL, 1),  # GPSImgDirection
    0x12: (_ASCII, 32),  # GPSMapDatum
    0x1D: (_ASCII, 10),  # GPSDateStamp
    0x1F: (_RATIONAL, 1),  # GPSHPositioningError
}


def _exif_value_ok(value: Any, kind: str, most: int) -> bool:
    if kind == _ASCII:
        return (
            isinstance(value, str)
            and 0 < len(value) <= most
            and all(" " <= ch <= "~" for ch in value)
        )
    if kind == _SMALL_BYTES:
        if isinstance(value, bytes):
            return 0 < len(value) <= most
        values = value if isinstance(value, tuple) else (value,)
        return 0 < len(values) <= most and all(type(v) is int and 0 <= v <= 255 for v in values)
    values = value if isinstance(value, tuple) else (value,)
    if not 0 < len(values) <= most:
        return False
    if kind == _UINT:
        return all(type(v) is int and 0 <= v < 2**32 for v in values)
    return all(isinstance(v, (int, float, IFDRational)) and not isinstance(v, bool) for v in values)


def _allowed_tags(tags: Any, allow: dict[int, tuple[str, int]]) -> dict[int, Any]:
    """The tags of ``tags`` (an IFD) that ``allow`` lists, with values of the listed kind."""
    kept: dict[int, Any] = {}
    for tag, (kind, most) in allow.items():
        value = tags.get(tag)
        if value is not None and _exif_value_ok(value, kind, most):
            kept[tag] = value
    return kept


def _sub_ifd(exif: Any, tag: int) -> dict[int, Any]:
    if tag not in exif:
        return {}
    try:
        return dict(exif.get_ifd(tag))
    except Exception:  # a broken sub-IFD is dropped, not worth failing the image for
        return {}


def _exif_bytes(src: DecodedImage, policy: MetadataPolicy, sub_ifds: bool = True) -> bytes | None:
    """The EXIF block to write: the allow-listed tags of IFD0 and, with ``sub_ifds``, of the
    Exif IFD and (with ``keep_gps``) the GPS IFD, orientation reset to 1; None when nothing is
    kept."""
    if not policy.keep_metadata or src.exif is None:
        return None
    exif = Image.Exif()
    try:
        exif.update(_allowed_tags(src.exif, EXIF_IFD0_TAGS))
    except Exception:  # an unreadable IFD0 keeps nothing
        return None
    if EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1  # pixels are already upright
    if not sub_ifds:
        return exif.tobytes() if len(exif) else None
    sub = _allowed_tags(_sub_ifd(src.exif, EXIF_EXIF_IFD), EXIF_SUB_TAGS)
    if sub:
        exif[EXIF_EXIF_IFD] = sub
    if policy.keep_gps:
        gps = _allowed_tags(_sub_ifd(src.exif, EXIF_GPS_IFD), EXIF_GPS_TAGS)
        if gps:
            exif[EXIF_GPS_IFD] = gps
    return exif.tobytes() if len(exif) else None


#: An ICC profile larger than this is dropped (display and camera RGB profiles are a few KiB).
ICC_MAX_BYTES = 64 * 1024
#: ICC tags a kept profile may hold (ICC.1 v2 and v4 tags, and the four tags macOS display
#: profiles add). A profile with any other tag, or with bytes outside its header, tag table and
#: tags, is dropped.
ICC_TAGS = frozenset(
    (
        b"A2B0 A2B1 A2B2 B2A0 B2A1 B2A2 D2B0 D2B1 D2B2 D2B3 B2D0 B2D1 B2D2 B2D3 "
        b"rXYZ gXYZ bXYZ rTRC gTRC bTRC kTRC wtpt bkpt chad chrm lumi meas tech "
        b"cprt desc dmnd dmdd vued view gamt calt targ cicp ciis clro clrt clot "
        b"ncl2 pre0 pre1 pre2 resp rig0 rig2 bfd  devs pseq psid scrd scrn "
        b"dscm mmod ndin vcgt"
    ).split(b" ")
)
#: The ICC colour space (header bytes 16-20) a profile needs for each Pillow output mode.
_ICC_COLOUR_SPACES = {
    "1": b"GRAY",
    "L": b"GRAY",
    "LA": b"GRAY",
    "I": b"GRAY",
    "I;16": b"GRAY",
    "RGB": b"RGB ",
    "RGBA": b"RGB ",
    "CMYK": b"CMYK",
    "LAB": b"Lab ",
}


def _kept_icc(profile: Any, mode: str) -> bytes | None:
    """``profile`` if it is a well-formed ICC profile of at most ``ICC_MAX_BYTES`` for the
    colour space of ``mode``, made only of allow-listed tags, with no embedded image; else None.
    """
    if not isinstance(profile, bytes) or not 132 <= len(profile) <= ICC_MAX_BYTES:
        return None
    if int.from_bytes(profile[:4], "big") != len(profile) or profile[36:40] != b"acsp":
        return None
    if profile[16:20] != _ICC_COLOUR_SPACES.get(mode):
        return None
    count = int.from_bytes(profile[128:132], "big")
    table_end = 132 + 12 * count
    if count > 64 or table_end > len(profile):
        return None
    spans = [(0, table_end)]
    for i in range(132, table_end, 12):
        sig = profile[i : i + 4]
        offset = int.from_bytes(profile[i + 4 : i + 8], "big")
        size = int.from_bytes(profile[i + 8 : i + 12], "big")
        if sig not in ICC_TAGS or offset < table_end or offset + size > len(profile):
            return None
        spans.append((offset, offset + size))
    covered = 0
    for start, stop in sorted(spans):  # only 4-byte alignment padding may lie between tags
        if start - covered > 3:
            return None
        covered = max(covered, stop)
    if len(profile) - covered > 3 or find_media(profile) is not None:
        return None
    return profile


#: Longest JPEG comment --keep-metadata keeps, in bytes.
COMMENT_MAX_BYTES = 256


def _kept_comment(comment: Any) -> bytes | None:
    """``comment`` if it is printable UTF-8 text of at most ``COMMENT_MAX_BYTES`` with no image
    in it (base64), else None."""
    if not isinstance(comment, bytes) or not 0 < len(comment) <= COMMENT_MAX_BYTES:
        return None
    try:
        text = comment.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return None
    return comment if find_media(comment) is None else None


#: Pillow's names of TIFF compressions -> the libtiff codes OpenCV writes 16-bit colour with.
_TIFF_COMPRESSION_CODES = {
    "raw": 1,
    "tiff_lzw": 5,
    "tiff_adobe_deflate": 8,
    "tiff_deflate": 32946,
    "packbits": 32773,
}


def _encode_16bit(pixels: np.ndarray, fmt: str, save_params: dict[str, Any]) -> bytes:
    """16-bit colour PNG / TIFF with OpenCV (Pillow has no 16-bit colour modes). No metadata is
    written. TIFF keeps the source's compression, or Deflate when OpenCV cannot write it."""
    c = pixels.shape[2]
    arr = pixels
    if c == 3:
        arr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif c == 4:
        arr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    elif c == 2:
        raise ImageError("cannot write 16-bit gray+alpha images")
    ext = {"PNG": ".png", "TIFF": ".tiff"}.get(fmt)
    if ext is None:
        raise ImageError(f"cannot write 16-bit {fmt}")
    params: list[int] = []
    if fmt == "TIFF":
        code = _TIFF_COMPRESSION_CODES.get(save_params.get("compression", "raw"), 8)
        params = [cv2.IMWRITE_TIFF_COMPRESSION, code]
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ImageError(f"16-bit {fmt} encoding failed")
    return buf.tobytes()


#: Source modes that are anonymized as RGB or gray and written back in their own mode: mode ->
#: (the mode they are anonymized in, the formats that hold the source mode).
_WRITE_BACK_MODES = {
    "CMYK": ("RGB", ("JPEG", "TIFF")),
    "LAB": ("RGB", ("TIFF",)),
    "1": ("L", ("PNG", "TIFF", "BMP", "PPM")),
}


def encode(src: DecodedImage, pixels: np.ndarray, policy: MetadataPolicy | None = None) -> bytes:
    """Encode ``pixels`` (same layout as ``src.pixels``) in the source's format, mode and
    quality, with only the metadata ``policy`` and the allow-lists keep."""
    policy = policy or MetadataPolicy()
    fmt = src.format
    if pixels.dtype == np.uint16:
        if pixels.shape[2] != 1:
            return _encode_16bit(pixels, fmt, src.save_params)
        gray = np.ascontiguousarray(pixels[:, :, 0])
        if fmt == "PPM" or (fmt == "TIFF" and src.mode == "I"):
            im = Image.fromarray(gray.astype(np.int32))  # mode I: 16-bit PGM, 32-bit TIFF
        elif fmt in ("PNG", "TIFF"):
            im = Image.fromarray(gray.astype("<u2"))
        else:
            raise ImageError(f"cannot write 16-bit {fmt}")
    else:
        arr = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
        im = Image.fromarray(np.ascontiguousarray(arr))
        work_mode, formats = _WRITE_BACK_MODES.get(src.mode, ("", ()))
        if im.mode == work_mode and fmt in formats:
            im = im.convert(src.mode)
    if fmt == "JPEG" and im.mode in ("LA", "RGBA"):
        raise ImageError("JPEG cannot hold alpha")
    if fmt in ("BMP", "PPM") and im.mode == "LA":
        im = im.convert("L")
    if fmt == "PPM" and im.mode == "RGBA":
        im = im.convert("RGB")
    params: dict[str, Any] = dict(src.save_params)
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        icc = _kept_icc(src.icc_profile, im.mode)
        if icc:
            params["icc_profile"] = icc
        # Pillow writes a compressed TIFF with libtiff, which cannot write sub-IFDs
        sub_ifds = fmt != "TIFF" or params.get("compression", "raw") == "raw"
        exif = _exif_bytes(src, policy, sub_ifds)
        if exif:
            params["exif"] = exif
    if policy.keep_metadata and fmt == "JPEG":
        comment = _kept_comment(src.comment)
        if comment:
            params["comment"] = comment
    if fmt == "JPEG" and "qtables" not in params:
        params["quality"] = 95
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt, **params)
    except Exception as exc:
        raise ImageError(f"{fmt} encoding failed: {one_line(exc, with_type=False)}") from None
    return buf.getvalue()


_HEIF_BRANDS = frozenset(
    b"heic heix hevc hevx heim heis mif1 msf1 avif avis".split()  # HEIF / AVIF brands
)


def sniff_format(data: bytes) -> str | None:
    """The image format ``data`` starts with, from magic bytes only, or None.

    Used to find image data where no image is expected (an archive member or a column with a
    non-image name), so it errs towards "image": every format a camera or an image library
    writes that has a signature, including ones we cannot decode (HEIF, JPEG XL, PSD, EXR).
    Formats without a signature (TGA, raw pixel buffers) are not found.
    """
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and head[6:10] == b"\x00\x00\x00\x00"
        and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)
    ):
        return "BMP"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xffO\xffQ"):
        return "JPEG2000"
    if head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n") or head.startswith(b"\xff\x0a"):
        return "JPEG XL"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] == b"v/1\x01":
        return "EXR"
    if head[:4] == b"qoif":
        return "QOI"
    if (
        len(head) >= 4
        and head[0:1] == b"P"
        and head[1:2] in b"1234567"
        and head[2:3] in b" \t\r\n"
        and (head[3:4].isdigit() or head[3:4] in b"#WHDMT")
    ):
        return "PPM"
    return None


#: Signatures of media that can show people but that blurbeam cannot anonymize: video
#: containers, compressed data and archives (which may hold images), PDF and NumPy arrays.
_OPAQUE_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"\x1a\x45\xdf\xa3", "Matroska/WebM video"),
    (b"FLV\x01", "FLV video"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV video"),
    (b"\x00\x00\x01\xba", "MPEG video"),
    (b"\x00\x00\x01\xb3", "MPEG video"),
    (b"OggS", "Ogg media"),
    (b"PK\x03\x04", "zip archive"),
    (b"PK\x05\x06", "zip archive"),
    (b"PK\x07\x08", "zip archive"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "7z archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x04\x22\x4d\x18", "LZ4-compressed"),
    (b"%PDF-", "PDF document"),
    (b"\x93NUMPY", "NumPy array"),
)
#: ISO base media boxes a QuickTime/MP4 file may start with (besides ``ftyp``).
_QUICKTIME_BOXES = frozenset({b"moov", b"mdat", b"wide", b"skip", b"pnot"})
#: How many leading bytes :func:`sniff_opaque` needs (a tar header's ``ustar`` is at 257).
OPAQUE_SNIFF_BYTES = 265


def sniff_opaque(data: bytes) -> str | None:
    """What kind of non-image media ``data`` starts with, from magic bytes only, or None.

    These are media that can show people but that blurbeam cannot look inside: video (MP4 /
    QuickTime, Matroska / WebM, AVI, MPEG, FLV, ASF, Ogg), compressed data and archives (gzip,
    zip, bzip2, xz, zstd, 7z, RAR, LZ4, tar: they may hold images), PDF documents and NumPy
    arrays (a common way to store decoded images). Where no image is expected (a tar member,
    another column or feature), finding one of them fails closed like finding an image: the
    sample gets an error record unless the user allows the field. Pass at least
    ``OPAQUE_SNIFF_BYTES`` bytes to find a nested tar. Not found: formats without a signature
    (raw pixel buffers, MPEG transport streams) and pickles. This looks at offset 0 only;
    :func:`find_media` also finds media further in and written as text.
    """
    head = bytes(data[:OPAQUE_SNIFF_BYTES])
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] not in _HEIF_BRANDS:
        return "MP4/QuickTime video"
    if len(head) >= 8 and head[4:8] in _QUICKTIME_BOXES and int.from_bytes(head[:4], "big") >= 8:
        return "MP4/QuickTime video"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI video"
    # two-byte magics, made stricter so random binary (an embedding column) rarely matches:
    # gzip with deflate (the only method in use) and no reserved flag bits; bzip2 with its level
    if head[:3] == b"\x1f\x8b\x08" and len(head) >= 4 and head[3] & 0xE0 == 0:
        return "gzip-compressed"
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0":
        return "bzip2-compressed"
    for prefix, kind in _OPAQUE_PREFIXES:
        if head.startswith(prefix):
            return kind
    if head[257:262] == b"ustar":
        return "tar archive"
    return None


def sniff_media(data: bytes) -> str | None:
    """What media ``data`` starts with, for messages: ``"<format> image"`` from
    :func:`sniff_format`, else the kind :func:`sniff_opaque` finds, else None."""
    fmt = sniff_format(data)
    return f"{fmt} image" if fmt else sniff_opaque(data)


#: Image formats whose header Pillow parses, by ``sniff_format`` name -> Pillow format id.
_PILLOW_IDS = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "GIF": "GIF",
    "WEBP": "WEBP",
    "TIFF": "TIFF",
    "BMP": "BMP",
    "JPEG2000": "JPEG2000",
    "PSD": "PSD",
    "QOI": "QOI",
    "PPM": "PPM",
}

#: Signatures searched at any offset inside an opaque blob: ``(magic, offset of the magic from
#: the start of the media)``. Each hit is only a candidate; ``_confirm`` decides.
_SIGNATURES: tuple[tuple[bytes, int], ...] = (
    (b"\xff\xd8\xff", 0),
    (b"\x89PNG\r\n\x1a\n", 0),
    (b"GIF87a", 0),
    (b"GIF89a", 0),
    (b"WEBP", 8),
    (b"AVI ", 8),
    (b"II*\x00", 0),
    (b"MM\x00*", 0),
    (b"II+\x00", 0),
    (b"MM\x00+", 0),
    (b"BM", 0),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0),
    (b"\xffO\xffQ", 0),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0),
    (b"ftyp", 4),
    (b"8BPS", 0),
    (b"v/1\x01", 0),
    (b"qoif", 0),
    *((b"P%d%c" % (d, w), 0) for d in range(1, 8) for w in b" \t\r\n"),
    *((prefix, 0) for prefix, _ in _OPAQUE_PREFIXES if prefix[:2] != b"PK"),
    (b"PK\x03\x04", 0),
    (b"\x1f\x8b\x08", 0),
    (b"BZh", 0),
    (b"ustar", 257),
)


def _b64_patterns() -> tuple[tuple[bytes, int, int], ...]:
    """Base64 text of the signatures that start the common image and media formats, at each of
    the three alignments a byte offset can have within a base64 quantum: ``(pattern, characters
    from the start of the media's quantum to the pattern, byte offset of the media in what those
    characters decode to)``. Only
    the characters that the signature's bits fully decide are kept; a pattern shorter than 3
    characters would match too much text to be worth confirming."""
    magics = (
        (b"\xff\xd8\xff", 0),
        (b"\x89PNG\r\n\x1a\n", 0),
        (b"GIF8", 0),
        (b"RIFF", 0),
        (b"II*\x00", 0),
        (b"MM\x00*", 0),
        (b"8BPS", 0),
        (b"qoif", 0),
        (b"\x00\x00\x00\x0cjP  ", 0),
        (b"ftyp", 4),
        (b"\x1a\x45\xdf\xa3", 0),
        (b"%PDF-", 0),
        (b"PK\x03\x04", 0),
        (b"\x1f\x8b\x08", 0),
        (b"\x93NUMPY", 0),
    )
    out: dict[bytes, tuple[int, int]] = {}
    for magic, back in magics:
        for align in range(3):
            lead = align + back
            text = base64.b64encode(bytes(lead) + magic + bytes(3))
            first, end = -(-8 * lead // 6), 8 * (lead + len(magic)) // 6
            if end - first < 3:
                continue
            pattern = text[first:end]
            for variant in (pattern, pattern.translate(_URLSAFE)):
                out.setdefault(variant, (first, align))
    return tuple((p, chars, offset) for p, (chars, offset) in out.items())


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
#: Base64 text as it appears in JSON, URLs and MIME: the alphabet, its URL-safe letters, line
#: breaks and the padding.
_B64_RUN = re.compile(rb"[A-Za-z0-9+/\-_\r\n]*=*")
_B64_PATTERNS = _b64_patterns()
#: Text that declares image or video data outright.
_DATA_URIS = ((b"data:image/", "data-URI image"), (b"data:video/", "data-URI video"))


class _Tail(io.RawIOBase):
    """A read-only file over ``data[start:]`` that copies nothing (Pillow seeks to 0 on open)."""

    def __init__(self, data: memoryview, start: int) -> None:
        super().__init__()
        self._view = data[start:]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buf)]
        buf[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _pillow_header(view: memoryview, start: int, fmt: str) -> bool:
    """Whether Pillow parses an image header of format ``fmt`` at ``start`` (the header only:
    no pixel data is decoded, and only as many bytes as the header takes are read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(_Tail(view, start), formats=[_PILLOW_IDS[fmt]]) as im:
                w, h = im.size
        return w > 0 and h > 0
    except Exception:
        return False


def _gzip_inflates(view: memoryview, start: int) -> bool:
    """Whether a gzip stream at ``start`` inflates without error for its first KiB (or to its
    end): random bytes that happen to start like gzip fail within a few bytes."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(bytes(view[start : start + 65536]), 1024)
    except zlib.error:
        return False
    return len(out) >= 1024 or inflater.eof


def _tar_header(head: bytes) -> bool:
    """Whether ``head`` starts with a tar header whose checksum is right."""
    if len(head) < 512:
        return False
    try:
        stored = int(head[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 8 * 32 + sum(head[156:512])


def _confirm(view: memoryview, start: int) -> str | None:
    """The media that really starts at ``start`` (beyond offset 0 a signature alone is not
    enough: random binary holds short magics by chance), or None. Images must have a header
    that parses; other media must show the structure their format puts after the magic."""
    head = bytes(view[start : start + 512])
    fmt = sniff_format(head)
    if fmt is not None:
        if fmt in _PILLOW_IDS:
            ok = _pillow_header(view, start, fmt)
        elif fmt == "HEIF":
            ok = 12 <= int.from_bytes(head[:4], "big") <= 4096
        elif fmt == "EXR":
            ok = b"chlist\x00" in bytes(view[start : start + 4096])
        else:  # JPEG XL: only its 12-byte container signature is searched beyond offset 0
            ok = head.startswith(b"\x00\x00\x00\x0cJXL ")
        return f"{fmt} image" if ok else None
    kind = sniff_opaque(head)
    if kind is None:
        return None
    b = head + bytes(16)  # the checks below may look a few bytes past a short head
    checks = {
        "MP4/QuickTime video": head[4:8] == b"ftyp"
        and 12 <= int.from_bytes(head[:4], "big") <= 4096
        and all(32 <= c < 127 for c in head[8:12]),
        "Matroska/WebM video": b"webm" in head[:64] or b"matroska" in head[:64],
        "FLV video": b[5:9] == b"\x00\x00\x00\x09",
        "MPEG video": (b[3] == 0xBA and (b[4] & 0xC0 == 0x40 or b[4] & 0xF0 == 0x20))
        or (b[3] == 0xB3 and 1 <= b[7] >> 4 <= 4 and 1 <= b[7] & 15 <= 8),
        "Ogg media": b[4] == 0 and b[5] <= 7,
        "zip archive": head[:4] == b"PK\x03\x04"
        and b[4] <= 63
        and b[5] == 0
        and int.from_bytes(b[8:10], "little") in (0, 8, 9, 12, 14, 93, 95, 98)
        and 0 < int.from_bytes(b[26:28], "little") <= 4096,
        "gzip-compressed": _gzip_inflates(view, start),
        "bzip2-compressed": b[4:10] in (b"1AY&SY", b"\x17rE8P\x90"),
        "zstd-compressed": b[4] & 0x08 == 0,
        "LZ4-compressed": b[4] & 0xC0 == 0x40,
        "PDF document": b[5:6].isdigit() and b[6:7] == b".",
        "tar archive": _tar_header(head),
    }
    return kind if checks.get(kind, True) else None


def _find_binary(data: bytes, view: memoryview) -> str | None:
    """Media (an image or other) confirmed at an offset other than 0, or None."""
    for magic, back in _SIGNATURES:
        pos = data.find(magic, back + 1)
        while pos >= 0:
            found = _confirm(view, pos - back)
            if found:
                return found
            pos = data.find(magic, pos + 1)
    return None


def _find_text(data: bytes) -> str | None:
    """Image or media data written as text: a ``data:image/`` or ``data:video/`` URI, or base64
    (plain or URL-safe, line breaks allowed) that decodes to confirmed media."""
    for marker, kind in _DATA_URIS:
        if marker in data:
            return kind
    for pattern, chars, offset in _B64_PATTERNS:
        pos = data.find(pattern)
        while pos >= 0:
            begin = pos - chars
            if begin >= 0:
                run = _B64_RUN.match(data, begin)
                text = run.group().translate(_FROM_URLSAFE, b"\r\n=") if run else b""
                text = text[: len(text) - (len(text) % 4 == 1)]  # a lone last character: no byte
                try:
                    decoded = base64.b64decode(text + b"=" * (-len(text) % 4))
                except ValueError:
                    decoded = b""
                found = _confirm(memoryview(decoded), offset) if decoded else None
                if found:
                    return f"base64-encoded {found}"
                pos = max(pos, run.end() if run else pos)  # text decoded once, not per pattern
            pos = data.find(pattern, pos + 1)
    return None


def find_media(data: bytes) -> str | None:
    """What image or other media that can show people ``data`` holds anywhere, or None.

    Used on opaque blobs that are copied to the output as they are (a tar member that is not an
    image, another Parquet value, a TFRecord bytes feature). At offset 0 this is
    :func:`sniff_media` (a signature is enough). Beyond it, every signature of
    :func:`sniff_format` and :func:`sniff_opaque` is searched with ``bytes.find`` and a hit counts
    only when the format's header parses there (Pillow's header parse for images, the bytes
    each other format puts after its magic), so random binary such as a float array holding
    ``FF D8 FF`` is not flagged. Text is searched too: ``data:image/`` and ``data:video/`` URIs,
    and base64 (plain, URL-safe or with JSON-escaped slashes) whose decoded bytes start a
    confirmed image or medium. Not found: media whose base64 is split by a line break inside its
    first bytes; beyond offset 0, QuickTime files that do not start with ``ftyp``, a bare JPEG
    XL codestream and an empty zip; formats without a signature.
    """
    data = bytes(data)
    found = sniff_media(data)
    if found:
        return found
    found = _find_binary(data, memoryview(data)) or _find_text(data)
    if found is None and b"\\/" in data:  # JSON may escape "/" as "\/", base64 has slashes
        found = _find_text(data.replace(b"\\/", b"/"))
    return found


def media_hints(data: bytes) -> list[int]:
    """Every position where one of :func:`find_media`'s signatures (binary or base64 text)
    occurs in ``data``, unconfirmed and unsorted. Lets a caller holding many small values in
    one buffer (an Arrow column) run :func:`find_media` only on the values these fall in; a
    value's offset 0 must still be checked on its own (:func:`sniff_media`)."""
    hits: list[int] = []
    patterns = [m for m, _ in _SIGNATURES] + [p for p, _, _ in _B64_PATTERNS]
    patterns += [m for m, _ in _DATA_URIS] + [
        p.replace(b"/", b"\\/") for p in patterns if b"/" in p
    ]
    for pattern in patterns:
        pos = data.find(pattern)
        while pos >= 0:
            hits.append(pos)
            pos = data.find(pattern, pos + 1)
    return hits
