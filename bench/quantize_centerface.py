"""Write the int8 CenterFace model: static QDQ quantization calibrated on real photos.

    python bench/quantize_centerface.py --images ../shared/data/widerface/pool886/images \
        [--output blurbeam/detectors/models/centerface_int8.onnx] [--count 96] [--method minmax]

The packaged fp32 model (``blurbeam/detectors/models/centerface.onnx``, opset 9) is upgraded to
opset 13 (per-channel QDQ needs an axis on QuantizeLinear/DequantizeLinear), then quantized by
``onnxruntime.quantization.quantize_static``: QDQ format, int8 weights per output channel, uint8
activations (the U8S8 pairing that VNNI and OpenVINO run fastest). Activation ranges come from
``--count`` photos of ``--images`` (sorted, evenly spaced), each fed as the detector's passes feed
it: the whole photo at its own size, the photo at 0.5x, and a 2x-upscaled crop around its centre,
every input padded to multiples of 32 with zeros as ``CenterFaceDetector.detect_raw`` pads.

``--inputs focus`` calibrates on the default detector's focus-pass inputs instead (the 2x regions
around the small faces its 1x and 0.5x passes find), and ``--exclude-every K`` keeps the subset
that ``bench/frontier.py --every K`` scores out of calibration; that experiment is in
docs/BENCHMARKS.md and its model was not kept.

Calibrate on pool886 only, never on the images the accuracy is reported on (dev305), and never
commit the calibration photos: the script records only their count, the directory's name and the
sha256 of the sorted list of file names in ``<output>.json`` beside the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blurbeam.detectors.base import file_sha256  # noqa: E402
from blurbeam.detectors.centerface import INPUT_NAME, MODEL_FILE, SOURCE_SHA256  # noqa: E402

DEFAULT_OUTPUT = MODEL_FILE.with_name("centerface_int8.onnx")
#: The network's four output convolutions (before the heatmap's sigmoid).
HEAD_OUTPUTS = {"536", "538", "539", "540"}


def padded_blob(rgb: np.ndarray) -> np.ndarray:
    """(1, 3, H32, W32) float32, the image in the top-left corner, zeros elsewhere."""
    ih, iw = rgb.shape[:2]
    ph, pw = -(-ih // 32) * 32, -(-iw // 32) * 32
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :ih, :iw] = rgb.transpose(2, 0, 1)
    return blob


def calibration_inputs(paths: list[Path]) -> Iterator[np.ndarray]:
    """Per photo: the photo at 1x, at 0.5x, and a 2x upscale of its central 320x320 px."""
    for p in paths:
        bgr = cv2.imread(str(p))
        if bgr is None:
            raise SystemExit(f"quantize_centerface: cannot read {p}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        yield padded_blob(rgb)
        half = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        yield padded_blob(half)
        cy, cx, r = h // 2, w // 2, 160
        crop = rgb[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r]
        big = cv2.resize(
            crop, (crop.shape[1] * 2, crop.shape[0] * 2), interpolation=cv2.INTER_LINEAR
        )
        yield padded_blob(big)


def focus_inputs(paths: list[Path], max_pixels: int) -> Iterator[np.ndarray]:
    """Per photo: what the default detector's focus pass feeds the network, the 2x-upscaled
    regions around the small faces its 1x and 0.5x passes find, in tiles of at most
    ``max_pixels`` (calibration keeps every activation of a batch in memory)."""
    from blurbeam.detectors import DetectorSpec, create
    from blurbeam.detectors.multiscale import grid_tiles

    det = create(DetectorSpec("multiscale", 0.15, 0.0, (("precision", "int8"),)), threads=0)
    seen: list[np.ndarray] = []

    class Recorder:
        def detect(self, crop: np.ndarray) -> list:
            seen.append(crop)
            return []

    det._up_base = Recorder()  # the focus pass runs last: recording it changes no seed
    for p in paths:
        bgr = cv2.imread(str(p))
        if bgr is None:
            raise SystemExit(f"quantize_centerface: cannot read {p}")
        seen.clear()
        det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        for big in list(seen):
            h, w = big.shape[:2]
            for x0, y0, x1, y1 in grid_tiles(w, h, max_pixels, 96):
                yield padded_blob(np.ascontiguousarray(big[y0:y1, x0:x1]))


def flush_every(inputs: int) -> int:
    """How many calibration outputs the calibrator holds before reducing them to ranges: a few
    (memory), and not a divisor of ``inputs`` (onnxruntime's MinMax calibrator fails with "No
    data is collected" when the last flush leaves nothing)."""
    return next(k for k in (8, 7, 6, 5, 9, 11, 13) if inputs % k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="calibration photos (pool886, never dev305)")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT))
    ap.add_argument("--count", type=int, default=96, help="photos used for calibration")
    ap.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax")
    ap.add_argument(
        "--exclude-every",
        type=int,
        default=0,
        help="leave out every K-th photo (sorted, from the first), the subset that "
        "bench/frontier.py --every K scores, so that it stays unseen by calibration",
    )
    ap.add_argument(
        "--inputs",
        choices=("passes", "focus"),
        default="passes",
        help="passes: each photo at 1x, 0.5x and a 2x central crop; focus: the default "
        "detector's focus-pass inputs (2x regions around small faces) only",
    )
    ap.add_argument(
        "--max-pixels",
        type=int,
        default=1_000_000,
        help="--inputs focus: calibration tiles of at most this many pixels",
    )
    ap.add_argument(
        "--keep-head-fp32",
        action="store_true",
        help="leave the four output convolutions (heatmap, sizes, offsets, landmarks) in fp32",
    )
    args = ap.parse_args(argv)

    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src_dir = Path(args.images)
    if "dev305" in src_dir.resolve().parts:
        print("quantize_centerface: calibrate on pool886, not on dev305", file=sys.stderr)
        return 2
    every = sorted(p for p in src_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(every) < args.count:
        print(f"quantize_centerface: {len(every)} images under {src_dir}", file=sys.stderr)
        return 2
    pool = [
        p for i, p in enumerate(every) if not (args.exclude_every and i % args.exclude_every == 0)
    ]
    idx = np.linspace(0, len(pool) - 1, args.count).round().astype(int)
    paths = [pool[i] for i in idx]

    if args.inputs == "focus":  # the count sets the flush interval, so gather them first
        blobs = list(focus_inputs(paths, args.max_pixels))
        n_inputs = len(blobs)
        source: Iterator[np.ndarray] = iter(blobs)
    else:
        n_inputs = 3 * len(paths)
        source = calibration_inputs(paths)
    print(f"quantize_centerface: {n_inputs} calibration inputs", file=sys.stderr)

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            blob = next(source, None)
            return None if blob is None else {INPUT_NAME: blob}

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        opset13 = Path(tmp) / "opset13.onnx"
        prepped = Path(tmp) / "prepped.onnx"
        model = version_converter.convert_version(onnx.load(str(MODEL_FILE)), 13)
        onnx.save(model, str(opset13))
        quant_pre_process(str(opset13), str(prepped), skip_symbolic_shape=True)
        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[args.method]
        exclude = []
        if args.keep_head_fp32:  # the converted model's nodes have no names: name them to exclude
            named = onnx.load(str(prepped))
            for i, n in enumerate(named.graph.node):
                n.name = n.name or f"{n.op_type}_{i}"
            onnx.save(named, str(prepped))
            exclude = [n.name for n in named.graph.node if set(n.output) & HEAD_OUTPUTS]
        quantize_static(
            str(prepped),
            args.output,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=exclude,
            extra_options={"CalibMaxIntermediateOutputs": flush_every(n_inputs)},
        )
    names = "\n".join(p.name for p in every).encode()
    record = {
        "model": Path(args.output).name,
        "sha256": file_sha256(args.output),
        "source_model_sha256": SOURCE_SHA256,
        "packaged_fp32_sha256": file_sha256(MODEL_FILE),
        "opset": 13,
        "fp32_nodes": exclude,
        "format": "QDQ, weights int8 per channel, activations uint8",
        "calibration": {
            "method": args.method,
            "directory": src_dir.name if src_dir.name != "images" else src_dir.parent.name,
            "photos": len(paths),
            "inputs": n_inputs,
            "of": len(every),
            "excluded": f"every {args.exclude_every}th photo from the first"
            if args.exclude_every
            else "none",
            "file_list_sha256": hashlib.sha256(names).hexdigest(),
            "inputs_per_photo": "1x, 0.5x, 2x of the central 320x320 crop"
            if args.inputs == "passes"
            else f"the default detector's focus-pass inputs, in tiles of <= {args.max_pixels} px",
        },
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.output).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
