"""Hostile inputs that hide a face in metadata, or in a bit depth or pixel mode the encoder could
get wrong. One real `blurbeam anonymize --keep-metadata --keep-gps` run over all of them; every
test checks its own inputs: no output holds the hidden face's bytes, the EXIF kept is exactly the
allow-listed part of the source's, and pixels keep their depth and mode."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational

from blurbeam import demo
from blurbeam.imageio import decode, to_rgb8
from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines.cli import main as cli_main

RUN_ID = "hostile"
MAKE, MODEL, ORIENTATION, EXIF_IFD, GPS_IFD = 0x010F, 0x0110, 0x0112, 0x8769, 0x8825
EXPOSURE_TIME, F_NUMBER, EXIF_VERSION = 0x829A, 0x829D, 0x9000
MAKER_NOTE, USER_COMMENT, INTEROP_IFD = 0x927C, 0x9286, 0xA005


def scene(seed: int = 0) -> np.ndarray:
    """A 320x240 background with the astronaut pasted in: a face the detector finds."""
    img = demo.background(320, 240, seed=seed)
    demo.paste(img, demo.astronaut(), 40 + seed * 7, 10, 200)
    return img


def face_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(demo.astronaut()[20:220, 140:320].copy()).save(buf, "JPEG", quality=85)
    return buf.getvalue()


FACE = face_jpeg()


def save(pixels: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def camera_exif(exif_ifd: dict, gps: dict | None = None, **ifd0) -> Image.Exif:
    """IFD0 with make, model and orientation, the given Exif IFD (allow-listed exposure tags
    plus whatever the caller adds) and optionally a GPS IFD."""
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "Hostile Cam", "HC-1", 1
    for tag, value in ifd0.items():
        exif[int(tag, 16)] = value
    exif[EXIF_IFD] = {
        EXPOSURE_TIME: IFDRational(1, 125),
        F_NUMBER: IFDRational(28, 10),
        EXIF_VERSION: b"0232",
        **exif_ifd,
    }
    if gps is not None:
        exif[GPS_IFD] = gps
    return exif


GPS_ALLOWED = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}


def tiff_with_ifd1_thumbnail(thumbnail: bytes) -> bytes:
    """EXIF (TIFF layout, little-endian) with IFD0 = make + Exif pointer, an Exif IFD whose
    Interop IFD holds ``thumbnail`` in a private UNDEFINED tag, and IFD1 = a JPEG thumbnail."""

    def ifd(entries: list[tuple[int, int, int, bytes]], start: int, next_ifd: int) -> bytes:
        # entries: (tag, type, count, value bytes); values over 4 bytes go after the IFD
        out, data = struct.pack("<H", len(entries)), b""
        data_at = start + 2 + 12 * len(entries) + 4
        for tag, typ, count, value in entries:
            if len(value) <= 4:
                out += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")
            else:
                out += struct.pack("<HHII", tag, typ, count, data_at + len(data))
                data += value + b"\x00" * (len(value) % 2)
        return out + struct.pack("<I", next_ifd) + data

    long_ = 4
    make = b"Hostile Cam\x00"
    ifd0_len = len(ifd([(MAKE, 2, len(make), make), (EXIF_IFD, long_, 1, b"")], 8, 0))
    exif_at = 8 + ifd0_len
    exif_len = len(ifd([(INTEROP_IFD, long_, 1, b"")], exif_at, 0))
    interop_at = exif_at + exif_len
    interop = [(0x0001, 2, 4, b"R98\x00"), (0x0777, 7, len(thumbnail), thumbnail)]
    interop_len = len(ifd(interop, interop_at, 0))
    ifd1_at = interop_at + interop_len
    ifd1_len = len(ifd([(0x0103, 3, 1, b""), (0x0201, 4, 1, b""), (0x0202, 4, 1, b"")], 0, 0))
    thumb_at = ifd1_at + ifd1_len
    blob = b"II*\x00" + struct.pack("<I", 8)
    blob += ifd(
        [(MAKE, 2, len(make), make), (EXIF_IFD, long_, 1, struct.pack("<I", exif_at))],
        8,
        ifd1_at,
    )
    blob += ifd([(INTEROP_IFD, long_, 1, struct.pack("<I", interop_at))], exif_at, 0)
    blob += ifd(interop, interop_at, 0)
    blob += ifd(
        [
            (0x0103, 3, 1, struct.pack("<H", 6)),  # Compression: JPEG
            (0x0201, 4, 1, struct.pack("<I", thumb_at)),  # JPEGInterchangeFormat
            (0x0202, 4, 1, struct.pack("<I", len(thumbnail))),  # ...Length
        ],
        ifd1_at,
        0,
    )
    return b"Exif\x00\x00" + blob + thumbnail


def icc_with_tag(profile: bytes, sig: bytes, payload: bytes) -> bytes:
    """``profile`` rebuilt with one more tag ``sig`` holding ``payload``."""
    count = int.from_bytes(profile[128:132], "big")
    tags = []
    for i in range(132, 132 + 12 * count, 12):
        off, size = struct.unpack(">II", profile[i + 4 : i + 12])
        tags.append((profile[i : i + 4], profile[off : off + size]))
    tags.append((sig, payload))
    table, data = b"", b""
    at = 132 + 12 * len(tags)
    for tag_sig, body in tags:
        table += tag_sig + struct.pack(">II", at + len(data), len(body))
        data += body + b"\x00" * (-len(body) % 4)
    out = bytearray(profile[:128] + struct.pack(">I", len(tags)) + table + data)
    out[:4] = struct.pack(">I", len(out))
    return bytes(out)


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_with_raw_exif_text(pixels: np.ndarray, exif: Image.Exif, zipped: bool) -> bytes:
    """A PNG whose zTXt (or iTXt) chunk "Raw profile type exif" holds ``exif``, as ImageMagick
    and exiftool write it; Pillow reads it as the image's EXIF."""
    raw = exif.tobytes()
    info = PngImagePlugin.PngInfo()
    text = f"\nexif\n{len(raw):8d}\n{raw.hex()}\n"
    if zipped:
        info.add_text("Raw profile type exif", text, zip=True)
    else:
        info.add_itxt("Raw profile type exif", text, zip=True)
    info.add_itxt("Comment", FACE.hex())  # a plain text chunk is never copied either
    return save(pixels, "PNG", pnginfo=info)


def rgb16(seed: int) -> np.ndarray:
    """A 16-bit scene using all 16 bits (the low byte is not a copy of the high one)."""
    return scene(seed).astype(np.uint16) * 257 + np.uint16(7)


def tiff16(pixels: np.ndarray) -> bytes:
    if pixels.shape[2] == 3:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    else:
        bgr = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".tiff", bgr, [cv2.IMWRITE_TIFF_COMPRESSION, 5])  # LZW
    assert ok
    return buf.tobytes()


def build_inputs(root: Path) -> dict[str, bytes]:
    img = scene(0)
    makernote = camera_exif({MAKER_NOTE: FACE, USER_COMMENT: b"ASCII\x00\x00\x00" + FACE})
    inputs = {
        "makernote.jpg": save(img, "JPEG", exif=makernote.tobytes()),
        "makernote.webp": save(img, "WEBP", exif=makernote.tobytes(), lossless=True),
        "makernote.tif": save(img, "TIFF", exif=makernote.tobytes()),
        # a preview in other UNDEFINED / BYTE tags: IFD0 PrintIM and XPComment, an unknown
        # Exif tag, GPSProcessingMethod
        "undefined_tags.jpg": save(
            img,
            "JPEG",
            exif=camera_exif(
                {0xA500: FACE},
                {**GPS_ALLOWED, 0x1B: b"ASCII\x00\x00\x00" + FACE},
                C4A5=FACE,
                **{"9C9C": FACE},
            ).tobytes(),
        ),
        "ifd1_interop.jpg": save(img, "JPEG", exif=tiff_with_ifd1_thumbnail(FACE)),
        "exif_chunk.png": save(img, "PNG", exif=makernote.tobytes()),
        "ztxt_exif.png": png_with_raw_exif_text(img, makernote, zipped=True),
        "itxt_exif.png": png_with_raw_exif_text(img, makernote, zipped=False),
        "icc_big.jpg": save(img, "JPEG", icc_profile=icc_with_tag(SRGB, b"zzzz", FACE * 12)),
        "icc_small.png": save(img, "PNG", icc_profile=icc_with_tag(SRGB, b"desc", FACE)),
        "icc_plain.png": save(img, "PNG", icc_profile=SRGB),
        "comment_blob.jpg": save(img, "JPEG", comment=FACE),
        "comment_text.jpg": save(img, "JPEG", comment=b"Holiday 2024, beach"),
        "rgb16.tif": tiff16(rgb16(1)),
        "rgba16.tif": tiff16(np.dstack([rgb16(2), np.full((240, 320), 50000, np.uint16)])),
    }
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([img, np.full((240, 320), 255, np.uint8)])
    rgba[:8, :8, 3] = 0
    palette = Image.fromarray(rgba).quantize(255)
    palette.info["transparency"] = 0
    ppm16 = io.BytesIO()
    Image.fromarray(gray.astype(np.int32)).save(ppm16, "PPM")
    inputs.update(
        {
            "cmyk.jpg": save(Image.fromarray(img).convert("CMYK"), "JPEG", quality=95),
            "cmyk.tif": save(Image.fromarray(img).convert("CMYK"), "TIFF"),
            "lab.tif": save(Image.fromarray(img).convert("LAB"), "TIFF"),
            "palette_alpha.png": save(palette, "PNG", transparency=0),
            # thresholded: YuNet misses the face in a dithered one
            "bilevel.png": save(
                Image.fromarray(gray).convert("1", dither=Image.Dither.NONE), "PNG"
            ),
            "gray16be.tif": save(
                Image.frombytes("I;16B", (320, 240), (gray.astype(">u2") * 257).tobytes()), "TIFF"
            ),
            # 32-bit integer samples holding 8-bit values
            "int32.tif": save(Image.fromarray(gray.astype(np.int32)), "TIFF"),
            # 16-bit PGM holding 8-bit values
            "gray16.pgm": ppm16.getvalue(),
            "float32.tif": save(Image.fromarray(gray.astype(np.float32)), "TIFF"),
        }
    )
    for name, data in inputs.items():
        (root / name).write_bytes(data)
    return inputs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    src = tmp_path_factory.mktemp("hostile-in")
    out = tmp_path_factory.mktemp("hostile-out")
    inputs = build_inputs(src)
    argv = ["anonymize", "--input", str(src), "--output", str(out), "--run-id", RUN_ID]
    cli_main([*argv, "--detector", "yunet", "--keep-metadata", "--keep-gps"])
    records = anon.read_run_records(str(out), RUN_ID).to_pylist()
    by_name = {Path(r["source_uri"]).name: r for r in records}
    assert sorted(by_name) == sorted(inputs)  # one record per input
    return src, out, by_name


def outputs(out: Path) -> list[bytes]:
    return [p.read_bytes() for p in out.rglob("*") if p.is_file() and "audit" not in p.parts]


def output_of(run, name: str) -> bytes:
    _, out, recs = run
    r = recs[name]
    assert r["status"] == "ok" and r["num_faces"] >= 1, (name, r["status"], r["error"])
    return Path(r["output_uri"]).read_bytes()


def face_changed(src: np.ndarray, out: np.ndarray, faces) -> float:
    """Fraction of the central half of the first face box whose pixels changed."""
    f = faces[0]
    x0, y0, x1, y1 = int(f["x"]), int(f["y"]), int(f["x"] + f["w"]), int(f["y"] + f["h"])
    cx0, cy0, cx1, cy1 = (
        x0 + (x1 - x0) // 4,
        y0 + (y1 - y0) // 4,
        x1 - (x1 - x0) // 4,
        y1 - (y1 - y0) // 4,
    )
    a = to_rgb8(src)[cy0:cy1, cx0:cx1].astype(int)
    b = to_rgb8(out)[cy0:cy1, cx0:cx1].astype(int)
    return float((np.abs(a - b).max(axis=2) > 2).mean())


def assert_face_bytes_nowhere(run) -> None:
    _, out, _ = run
    for data in outputs(out):
        assert FACE not in data
        assert FACE[-600:-2] not in data  # not even a piece of its entropy-coded data


def exif_of(data: bytes) -> tuple[dict, dict, dict]:
    exif = Image.open(io.BytesIO(data)).getexif()
    return dict(exif), dict(exif.get_ifd(EXIF_IFD)), dict(exif.get_ifd(GPS_IFD))


@pytest.mark.parametrize("name", ["makernote.jpg", "makernote.webp", "makernote.tif"])
def test_makernote_preview_dropped(run, name):
    data = output_of(run, name)
    assert_face_bytes_nowhere(run)
    ifd0, exif_ifd, gps = exif_of(data)
    kept = {k: v for k, v in ifd0.items() if k in (MAKE, MODEL, ORIENTATION, EXIF_IFD)}
    if name.endswith(".tif"):  # the encoder's own TIFF structure tags besides the EXIF ones
        assert {MAKER_NOTE, USER_COMMENT} & set(ifd0) == set()
        ifd0 = kept
    assert set(ifd0) == {MAKE, MODEL, ORIENTATION, EXIF_IFD}
    assert ifd0[MAKE] == "Hostile Cam" and ifd0[ORIENTATION] == 1
    assert set(exif_ifd) == {EXPOSURE_TIME, F_NUMBER, EXIF_VERSION}
    assert exif_ifd[EXIF_VERSION] == b"0232" and float(exif_ifd[F_NUMBER]) == 2.8
    assert gps == {}


def test_preview_in_other_undefined_tags_dropped(run):
    data = output_of(run, "undefined_tags.jpg")
    assert_face_bytes_nowhere(run)
    ifd0, exif_ifd, gps = exif_of(data)
    assert set(ifd0) == {MAKE, MODEL, ORIENTATION, EXIF_IFD, GPS_IFD}
    assert set(exif_ifd) == {EXPOSURE_TIME, F_NUMBER, EXIF_VERSION}
    assert gps == GPS_ALLOWED  # --keep-gps keeps the allow-listed GPS tags, not the blob


def test_ifd1_thumbnail_and_interop_blob_dropped(run):
    data = output_of(run, "ifd1_interop.jpg")
    assert_face_bytes_nowhere(run)
    exif = Image.open(io.BytesIO(data)).getexif()
    assert dict(exif) == {MAKE: "Hostile Cam"}  # no Exif IFD: its only tag was the Interop IFD
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {}


@pytest.mark.parametrize("name", ["exif_chunk.png", "ztxt_exif.png", "itxt_exif.png"])
def test_png_exif_in_chunks_keeps_only_allowed_tags(run, name):
    data = output_of(run, name)
    assert_face_bytes_nowhere(run)
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.text == {}  # no tEXt / zTXt / iTXt chunk is written
    ifd0, exif_ifd, _ = exif_of(data)
    assert set(ifd0) == {MAKE, MODEL, ORIENTATION, EXIF_IFD}
    assert set(exif_ifd) == {EXPOSURE_TIME, F_NUMBER, EXIF_VERSION}


def test_icc_profile_carrying_a_jpeg_dropped(run):
    for name in ("icc_big.jpg", "icc_small.png"):
        data = output_of(run, name)
        assert Image.open(io.BytesIO(data)).info.get("icc_profile") is None, name
    assert_face_bytes_nowhere(run)
    # a plain profile is kept byte for byte (colour fidelity)
    plain = Image.open(io.BytesIO(output_of(run, "icc_plain.png")))
    assert plain.info.get("icc_profile") == SRGB


def test_jpeg_comment_only_printable_text_kept(run):
    assert "comment" not in Image.open(io.BytesIO(output_of(run, "comment_blob.jpg"))).info
    assert_face_bytes_nowhere(run)
    kept = Image.open(io.BytesIO(output_of(run, "comment_text.jpg")))
    assert kept.info["comment"] == b"Holiday 2024, beach"


@pytest.mark.parametrize("name,mode", [("rgb16.tif", "RGB;16"), ("rgba16.tif", "RGBA;16")])
def test_16bit_colour_tiff_keeps_depth_and_reports_mode(run, name, mode):
    src_dir, _, recs = run
    data = output_of(run, name)
    assert recs[name]["mode"] == mode
    tags = Image.open(io.BytesIO(data)).tag_v2
    assert set(tags[258]) == {16} and tags[259] == 5  # 16 bits per sample, LZW kept
    src = decode((src_dir / name).read_bytes()).pixels
    out = decode(data).pixels
    assert out.dtype == np.uint16 and out.shape == src.shape
    assert face_changed(src, out, recs[name]["faces"]) > 0.9
    # pixels away from the face keep all 16 bits
    assert np.array_equal(out[200:, 260:], src[200:, 260:])


@pytest.mark.parametrize(
    "name,out_mode",
    [
        ("cmyk.jpg", "CMYK"),
        ("cmyk.tif", "CMYK"),
        ("lab.tif", "LAB"),
        ("palette_alpha.png", "RGBA"),  # a blurred face needs more than the palette's colours
        ("bilevel.png", "1"),
        ("gray16be.tif", "I;16"),
        ("int32.tif", "I"),
        ("gray16.pgm", "I"),
    ],
)
def test_odd_modes_anonymized_in_their_mode(run, name, out_mode):
    src_dir, _, recs = run
    data = output_of(run, name)
    assert Image.open(io.BytesIO(data)).mode == out_mode
    src = decode((src_dir / name).read_bytes())
    out = decode(data)
    assert out.pixels.dtype == src.pixels.dtype and out.pixels.shape == src.pixels.shape
    assert recs[name]["mode"] == src.mode
    # a blurred 1-bit face is dithered back to black and white: its solid areas stay solid
    assert face_changed(src.pixels, out.pixels, recs[name]["faces"]) > (
        0.2 if src.mode == "1" else 0.9
    )


def test_float_tiff_is_a_one_line_error(run):
    _, out, recs = run
    r = recs["float32.tif"]
    assert r["status"] == "error" and r["error_stage"] == "decode" and r["output_uri"] is None
    assert "unsupported pixel mode" in r["error"] and "\n" not in r["error"]
    assert not (out / "float32.tif").exists()
