"""Detector configurations against each other: single-thread CPU ms per image, WIDER AP, blur recall.

    python bench/frontier.py run --set pool886 --config default [--config ...] [--every K]
    python bench/frontier.py table --set pool886 [--set dev305]
    python bench/frontier.py plot                      # docs/speed_frontier.png

``run`` detects every image of the set (``../shared/data/widerface/<set>``) once per
configuration of :data:`CONFIGS`, in this process, with one intra-op thread
(``OMP_NUM_THREADS=1``, ``threads=1``), at the WIDER evaluation's low threshold (0.02), and keeps
every prediction and the CPU time of each ``detect`` call (``time.process_time``: this process's
CPU, so other jobs on a shared machine inflate it far less than wall time) in
``bench/out/frontier/<set>/<config>.json``. Images are decoded with ``blurbeam.imageio`` as
``anonymize`` decodes them, before the clock starts.

``table`` scores the saved predictions as ``blurbeam evaluate`` does: easy / medium / hard AP of
the official WIDER tool (keep lists of ``ground_truth/`` beside the set, else the full validation
lists of ``../shared/data/widerface/ground_truth`` restricted to the set's images), and blur
recall (valid faces >= 10 px whose box is >= 80% inside the anonymizer's mask) at the
configuration's anonymize threshold and mask scale, overall and on faces >= 40 px, plus false
positives per image (``--drop-large PX:SCORE`` first removes the faces of at least PX px that
score below SCORE), and the peak RSS of the ``run`` process (the configuration's own when it ran
alone: one ``--config`` per invocation). ``--threshold`` rescans the anonymize threshold of every
configuration.

``plot`` draws CPU ms per image against blur recall for every scored configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "widerface"
OUT = ROOT / "bench" / "out" / "frontier"
AP_MIN_SCORE = 0.02


def _ms(base: dict[str, Any], **multiscale: Any) -> dict[str, Any]:
    # the configurations measured before the 1x pass was tiled keep it whole, those measured
    # while the focus pass ran in fp32 and in tiles of 2048 px by default name them, and
    # every tile overlaps by 96 px unless named (fp32 passes now default to 144)
    opts: dict[str, Any] = {
        "base_options": tuple(sorted(base.items())),
        "full_max_pixels": 0,
        "tile_overlap": 96,
        "upscale_precision": "fp32",
        "upscaled_max_pixels": 0,
    }
    opts.update(multiscale)
    return {
        "detector": "multiscale",
        "options": tuple(sorted(opts.items())),
        "threshold": 0.15,
        "mask": 1.6,
    }


ORT_FP32 = {"runtime": "onnxruntime", "precision": "fp32"}
ORT_INT8 = {"runtime": "onnxruntime", "precision": "int8"}
OV_INT8 = {"runtime": "openvino", "precision": "int8"}

#: The configuration that is the product's default (marked in the plot).
DEFAULT_CONFIG = "int8-all-tiled1.5mp-focus2mp-ort"
#: name -> detector, options, anonymize threshold, mask scale (deface: its 0.2 and 1.3).
CONFIGS: dict[str, dict[str, Any]] = {
    # the multiscale default before int8 (precision=fp32), and since (int8 1x and 0.5x passes,
    # fp32 focus pass: precision auto on a VNNI CPU)
    "default-fp32-ort": _ms(ORT_FP32),
    "int8-focus-fp32-ort": _ms(ORT_INT8),
    "int8-all-passes-ort": _ms(ORT_INT8, upscale_precision="same"),
    # the 1x pass of an image above N pixels in tiles of at most N pixels (bounded memory)
    "tiled1mp-int8-focus-fp32-ort": _ms(ORT_INT8, full_max_pixels=1_000_000),
    "tiled1.5mp-int8-focus-fp32-ort": _ms(ORT_INT8, full_max_pixels=1_500_000),
    # the upscaled (focus) pass in equal tiles of at most N upscaled pixels (bounded memory)
    "focus1mp-tiled1.5mp-int8-focus-fp32-ort": _ms(
        ORT_INT8, full_max_pixels=1_500_000, upscaled_max_pixels=1_000_000
    ),
    "focus1.5mp-tiled1.5mp-int8-focus-fp32-ort": _ms(
        ORT_INT8, full_max_pixels=1_500_000, upscaled_max_pixels=1_500_000
    ),
    "focus2mp-tiled1.5mp-int8-focus-fp32-ort": _ms(
        ORT_INT8, full_max_pixels=1_500_000, upscaled_max_pixels=2_000_000
    ),
    # the focus pass on an int8 model calibrated on the focus pass's own inputs, written by
    # bench/quantize_centerface.py --images .../pool886/images --count 64 --exclude-every 4
    # --inputs focus --output bench/out/quantize_focus/centerface_int8_focus.onnx: not kept
    "focus-calibrated-int8-tiled1.5mp-ort": _ms(
        ORT_INT8,
        full_max_pixels=1_500_000,
        upscale_base="centerface",
        upscale_base_options=(
            ("model_path", str(OUT.parent / "quantize_focus" / "centerface_int8_focus.onnx")),
            ("precision", "int8"),
            ("runtime", "onnxruntime"),
        ),
    ),
    "int8-all-tiled1.5mp-ort": _ms(ORT_INT8, full_max_pixels=1_500_000, upscale_precision="same"),
    **{
        f"int8-all-tiled1.5mp-focus{n}mp-ort": _ms(
            ORT_INT8,
            full_max_pixels=1_500_000,
            upscale_precision="same",
            upscaled_max_pixels=int(float(n) * 1_000_000),
        )
        for n in ("1", "2")
    },
    # what a CPU without VNNI runs (precision auto is fp32 there): every pass in fp32, in the
    # int8 default's tiles and in smaller ones (a worker's memory, docs/BENCHMARKS.md)
    **{
        f"fp32-all-tiled{a}mp-focus{b}mp-ort": _ms(
            ORT_FP32,
            full_max_pixels=int(float(a) * 1_000_000),
            upscale_precision="same",
            upscaled_max_pixels=int(float(b) * 1_000_000),
        )
        for a, b in (("1.5", "2"), ("1", "2"), ("1", "1.5"), ("1", "1"))
    },
    **{
        f"fp32-all-tiled1mp-focus1mp-overlap{n}-ort": _ms(
            ORT_FP32,
            full_max_pixels=1_000_000,
            upscale_precision="same",
            upscaled_max_pixels=1_000_000,
            tile_overlap=n,
        )
        for n in (144, 192)
    },
    "int8-all-tiled1.5mp-focus2mp-overlap144-ort": _ms(
        ORT_INT8,
        full_max_pixels=1_500_000,
        upscale_precision="same",
        upscaled_max_pixels=2_000_000,
        tile_overlap=144,
    ),
    "int8-all-passes-ov": _ms(OV_INT8, upscale_precision="same"),
    # the default's tiles on OpenVINO (pip install openvino)
    "int8-all-tiled1.5mp-focus2mp-ov": _ms(
        OV_INT8,
        full_max_pixels=1_500_000,
        upscale_precision="same",
        upscaled_max_pixels=2_000_000,
    ),
    "margin48-int8-all-ort": _ms(ORT_INT8, upscale_precision="same", focus_margin=48),
    "margin48-int8-focus-fp32-ort": _ms(ORT_INT8, focus_margin=48),
    "no-focus-int8-ort": _ms(ORT_INT8, scales=(0.5, 1.0)),
    "centerface-int8-ort": {
        "detector": "centerface",
        "options": tuple(sorted(ORT_INT8.items())),
        "threshold": 0.2,
        "mask": 1.6,
    },
    "deface-fp32-ort": {
        "detector": "centerface",
        "options": tuple(sorted(ORT_FP32.items())),
        "threshold": 0.2,
        "mask": 1.3,
    },
    # int8 with the four output convolutions left in fp32 (bench/quantize_centerface.py
    # --keep-head-fp32 --output /tmp/F/head/centerface_int8.onnx): not kept, see BENCHMARKS.md
    "head-fp32-int8-all-ort": _ms(
        {"runtime": "onnxruntime", "model_path": "/tmp/F/head/centerface_int8.onnx"},
        upscale_precision="same",
    ),
}


def image_paths(set_name: str) -> list[Path]:
    root = DATA / set_name / "images"
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def run(set_name: str, config: str, every: int) -> Path:
    from blurbeam import imageio
    from blurbeam.detectors import DetectorSpec, create

    cfg = CONFIGS[config]
    spec = DetectorSpec(cfg["detector"], AP_MIN_SCORE, 0.0, cfg["options"])
    det = create(spec, threads=1)
    paths = image_paths(set_name)[:: max(1, every)]
    root = DATA / set_name / "images"
    warm = imageio.to_rgb8(imageio.decode(paths[0].read_bytes()).pixels)
    det.detect(warm)
    images = []
    t_all = time.time()
    for p in paths:
        rgb = imageio.to_rgb8(imageio.decode(p.read_bytes()).pixels)
        c0 = time.process_time()
        faces = det.detect(rgb)
        cpu = (time.process_time() - c0) * 1000
        preds = [[f.x, f.y, f.w, f.h, f.score] for f in sorted(faces, key=lambda f: -f.score)]
        images.append(
            {
                "key": str(p.relative_to(root).with_suffix("")),
                "width": rgb.shape[1],
                "height": rgb.shape[0],
                "cpu_ms": round(cpu, 2),
                "preds": [[round(v, 3) for v in row] for row in preds],
            }
        )
    out = OUT / set_name / f"{config}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "set": set_name,
        "config": config,
        "every": every,
        "detector": cfg["detector"],
        "options": repr(cfg["options"]),
        "model_sha256": det.model_sha256,
        # what the detector resolved, its code defaults included (as a run's config records)
        "settings": det.settings(),
        "threads": 1,
        "wall_s": round(time.time() - t_all, 1),
        # the process's peak RSS: of this configuration alone only when it ran alone (one
        # --config per invocation)
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "images": images,
    }
    out.write_text(json.dumps(record))
    return out


def ground_truth(set_name: str, keys: set[str]) -> Any:
    from blurbeam.lab.detection import wider_ap

    gt_txt = DATA / set_name / "gt.txt"
    images = wider_ap.parse_gt_txt(gt_txt)
    mat_dir = DATA / set_name / "ground_truth"
    if not mat_dir.is_dir():
        mat_dir = DATA / "ground_truth"
    keep = wider_ap.load_keep_lists(mat_dir)
    keep = {lv: {k: keep[lv].get(k, np.zeros(0, np.int64)) for k in keys} for lv in keep}
    return wider_ap.WiderGroundTruth(images={k: images[k] for k in keys}, keep=keep)


def score(
    path: Path, threshold: float | None = None, drop_large: tuple[float, float] | None = None
) -> dict[str, Any]:
    from blurbeam.lab.detection import wider_ap
    from blurbeam.lab.detection.blur_recall import PrivacyConfig, image_privacy, summarise

    rec = json.loads(path.read_text())
    cfg = CONFIGS.get(rec["config"], {"threshold": 0.15, "mask": 1.6})
    thr = cfg["threshold"] if threshold is None else threshold
    keys = {im["key"] for im in rec["images"]}
    gt = ground_truth(rec["set"], keys)
    preds = {
        im["key"]: np.asarray(im["preds"], dtype=np.float64).reshape(-1, 5) for im in rec["images"]
    }
    if drop_large is not None:  # a face this large needs at least this score
        px, min_score = drop_large
        preds = {
            k: p[~((np.maximum(p[:, 2], p[:, 3]) >= px) & (p[:, 4] < min_score))]
            for k, p in preds.items()
        }
    ap = wider_ap.evaluate(preds, gt)
    pc = PrivacyConfig(mask_scale=cfg["mask"])
    per = []
    for im in rec["images"]:
        p = preds[im["key"]]
        per.append(
            image_privacy(gt.images[im["key"]], p[p[:, 4] >= thr], im["width"], im["height"], pc)
        )
    s = summarise(per)
    sizes = np.array([x for im in per for x in im.sizes])
    cov = np.array([c for im in per for c in im.covered], dtype=bool)
    big = sizes >= 40
    cpu = [im["cpu_ms"] for im in rec["images"]]
    return {
        "set": rec["set"],
        "config": rec["config"],
        "images": len(rec["images"]),
        "threshold": thr,
        "mask_scale": cfg["mask"],
        "easy": round(ap["easy"].ap, 4),
        "medium": round(ap["medium"].ap, 4),
        "hard": round(ap["hard"].ap, 4),
        "blur_recall": round(float(s["blur_recall"]), 4),
        "recall_ge40": round(float(cov[big].mean()), 4),
        "faces": int(len(sizes)),
        "faces_ge40": int(big.sum()),
        "fp_per_image": round(float(s["false_positives_per_image"]), 3),
        "cpu_ms_mean": round(float(np.mean(cpu)), 1),
        "cpu_ms_median": round(float(np.median(cpu)), 1),
        "peak_rss_mib": rec.get("peak_rss_mib", rec.get("peak_rss_mb", "")),
        "model_sha256": rec["model_sha256"][:16],
    }


def table(
    sets: list[str], threshold: float | None, drop_large: tuple[float, float] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for s in sets:
        for path in sorted((OUT / s).glob("*.json")):
            rows.append(score(path, threshold, drop_large))
    cols = [
        "set",
        "config",
        "images",
        "threshold",
        "easy",
        "medium",
        "hard",
        "blur_recall",
        "recall_ge40",
        "fp_per_image",
        "cpu_ms_mean",
        "cpu_ms_median",
        "peak_rss_mib",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    (OUT / "table.json").write_text(json.dumps(rows, indent=1))
    return rows


def plot(rows: list[dict[str, Any]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, marker in (("dev305", "o"), ("pool886", "s")):
        sel = [r for r in rows if r["set"] == s]
        if not sel:
            continue
        ax.scatter(
            [r["cpu_ms_mean"] for r in sel], [r["blur_recall"] for r in sel], marker=marker, label=s
        )
        for r in sel:
            # the configurations at >= .94 crowd together: only the default and the fp32
            # default of before issue 22 are named there (the table names them all)
            if r["blur_recall"] >= 0.94 and r["config"] not in (DEFAULT_CONFIG, "default-fp32-ort"):
                continue
            is_default = r["config"] == DEFAULT_CONFIG
            ax.annotate(
                "default" if is_default else r["config"],
                (r["cpu_ms_mean"], r["blur_recall"]),
                fontsize=7,
                xytext=(3, -10 if is_default and s == "pool886" else 3),
                textcoords="offset points",
            )
        ax.scatter(
            [r["cpu_ms_mean"] for r in sel if r["config"] == DEFAULT_CONFIG],
            [r["blur_recall"] for r in sel if r["config"] == DEFAULT_CONFIG],
            marker="*",
            s=140,
            color="black",
            zorder=3,
        )
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    deface = [r for r in rows if r["config"] == "deface-fp32-ort" and r["set"] == "dev305"]
    if deface:  # the detector cost at which blurbeam would run 3x deface's speed
        ax.axvline(deface[0]["cpu_ms_mean"] / 3, color="red", lw=0.8, ls=":")
        ax.annotate(
            "1/3 of deface's detector CPU (dev305)",
            (deface[0]["cpu_ms_mean"] / 3, 0.76),
            fontsize=7,
            rotation=90,
            color="red",
        )
    ax.set_xlabel("detector CPU ms per image (one thread, mean)")
    ax.set_ylabel("blur recall (faces >= 10 px)")
    ax.set_title("blurbeam detector configurations and deface's (CenterFace 1x, 0.2, mask 1.3)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--set", required=True)
    r.add_argument("--config", action="append", required=True, choices=sorted(CONFIGS))
    r.add_argument("--every", type=int, default=1)
    t = sub.add_parser("table")
    t.add_argument("--set", action="append", required=True)
    t.add_argument("--threshold", type=float, default=None)
    t.add_argument(
        "--drop-large",
        type=lambda v: tuple(float(x) for x in v.split(":")),
        default=None,
        metavar="PX:SCORE",
        help="score as if faces whose larger side is at least PX needed a score of SCORE",
    )
    p = sub.add_parser("plot")
    p.add_argument("--set", action="append", default=["pool886", "dev305"])
    p.add_argument("--output", default=str(ROOT / "docs" / "speed_frontier.png"))
    args = ap.parse_args(argv)
    if args.cmd == "run":
        for c in args.config:
            print(run(args.set, c, args.every), file=sys.stderr)
    elif args.cmd == "table":
        table(args.set, args.threshold, args.drop_large)
    else:
        plot(table(args.set, None), Path(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
