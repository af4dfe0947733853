import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from blurbeam import demo
from blurbeam.imageio import (
    ImageError,
    MetadataPolicy,
    apply_orientation,
    decode,
    encode,
    to_rgb8,
)


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return demo.astronaut()[::4, ::4].copy()  # 128x128


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(rgb, orientation):
    stored = rgb[:, :100]  # non-square so rotations show
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(stored), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(apply_orientation(stored, orientation), expected)
    d = decode(data)
    assert d.orientation == orientation
    assert np.array_equal(d.pixels, expected)


@pytest.mark.parametrize(
    "mode,channels,dtype",
    [
        ("RGB", 3, np.uint8),
        ("RGBA", 4, np.uint8),
        ("L", 1, np.uint8),
        ("LA", 2, np.uint8),
        ("P", 3, np.uint8),
        ("1", 1, np.uint8),
    ],
)
def test_pillow_modes_round_trip_png(rgb, mode, channels, dtype):
    im = Image.fromarray(rgb).convert(mode)
    d = decode(save(im, "PNG"))
    assert d.pixels.shape == (128, 128, channels) and d.pixels.dtype == dtype
    again = decode(encode(d, d.pixels))
    assert np.array_equal(again.pixels, d.pixels)
    assert to_rgb8(d.pixels).shape == (128, 128, 3)


def test_cmyk_jpeg_anonymized_as_rgb_written_as_cmyk(rgb):
    d = decode(save(Image.fromarray(rgb).convert("CMYK"), "JPEG"))
    assert d.mode == "CMYK" and d.pixels.shape[2] == 3
    assert d.format == "JPEG"
    out = encode(d, d.pixels)
    assert Image.open(io.BytesIO(out)).mode == "CMYK"
    assert decode(out).pixels.shape == d.pixels.shape


def test_16bit_png_keeps_depth(rgb):
    data = demo.png16(rgb)
    d = decode(data)
    assert d.pixels.dtype == np.uint16 and d.mode == "RGB;16"
    assert np.array_equal(d.pixels, rgb.astype(np.uint16) * 257)
    back = decode(encode(d, d.pixels))
    assert back.pixels.dtype == np.uint16 and np.array_equal(back.pixels, d.pixels)


def test_16bit_gray_png(rgb):
    g16 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", g16)
    d = decode(buf.tobytes())
    assert d.pixels.dtype == np.uint16 and d.pixels.shape[2] == 1
    back = decode(encode(d, d.pixels))
    assert np.array_equal(back.pixels, d.pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_formats_are_kept(rgb, fmt):
    d = decode(save(Image.fromarray(rgb), fmt))
    out = encode(d, d.pixels)
    assert Image.open(io.BytesIO(out)).format == fmt


def test_jpeg_quality_tables_are_kept(rgb):
    src = save(Image.fromarray(rgb), "JPEG", quality=40)
    out = encode(decode(src), decode(src).pixels)
    assert Image.open(io.BytesIO(src)).quantization == Image.open(io.BytesIO(out)).quantization


def test_metadata_stripped_by_default_and_gps_never_kept_unless_asked(rgb):
    data = demo.exif_rotated_jpeg_with_gps(rgb)
    d = decode(data)
    assert d.orientation == 6
    err_upright = np.abs(d.pixels.astype(int) - rgb).mean()
    err_sideways = np.abs(d.pixels.astype(int) - np.rot90(rgb)).mean()
    assert err_upright < 0.25 * err_sideways  # the viewer's orientation, not the stored one
    plain = Image.open(io.BytesIO(encode(d, d.pixels))).getexif()
    assert len(plain) == 0
    kept = Image.open(io.BytesIO(encode(d, d.pixels, MetadataPolicy(keep_metadata=True)))).getexif()
    assert kept[0x010F] == "blurbeam demo camera"
    assert kept.get(0x0112) == 1  # pixels are upright now
    assert 0x8825 not in kept
    gps = Image.open(io.BytesIO(encode(d, d.pixels, MetadataPolicy(True, True)))).getexif()
    assert gps.get_ifd(0x8825)[1] == "N"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"hello, I am not an image", "not a recognised image"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "image"),
    ],
)
def test_bad_bytes_give_one_line_errors(data, reason):
    with pytest.raises(ImageError) as e:
        decode(data)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg(rgb):
    data = save(Image.fromarray(rgb), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        decode(data[: len(data) // 2])


def test_truncated_png(rgb):
    data = save(Image.fromarray(rgb), "PNG")
    with pytest.raises(ImageError):
        decode(data[: len(data) // 2])


def test_decompression_bomb_rejected_before_decoding():
    # A 20000x20000 PNG of zeros compresses to a few hundred KB: never decode it.
    im = Image.new("L", (20000, 20000))
    data = save(im, "PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(data, max_pixels=50_000_000)


def test_multi_frame_rejected(rgb):
    frames = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    data = save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError, match="multi-frame"):
        decode(data)


def test_jpeg_cannot_hold_alpha(rgb):
    d = decode(save(Image.fromarray(rgb), "JPEG"))
    with pytest.raises(ImageError):
        encode(d, np.dstack([d.pixels, d.pixels[:, :, :1]]))
