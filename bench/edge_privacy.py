"""Re-identification of faces anonymized by the learned edge anonymizer, end to end.

    python bench/edge_privacy.py --out /tmp/edge_privacy [--shared ../shared] \\
        [--rows learned pipeline] [--model PATH] [--no-deblur]

The face set, recognizer, gallery, attackers' code and scores are the privacy audit's
(``blurbeam privacy-audit --sweep``: 365 clear WIDER dev305 + crowd faces >= 40 px, SFace,
top-1 identification and verification under the worst attacker, docs/PRIVACY.md). The
difference is what anonymizes: the sweep blurs the *labelled* boxes (perfect detection); here
each whole image goes through the anonymizer as the product runs it, so a face it misses counts:

* ``learned``: ``blurbeam anonymize --method learned`` (the int8 TFLite network in tiles, no
  detector). Attackers: ``none`` (the output as it is), ``unsharp`` and the blind ``deblur``
  network. These two replace the pixels of an ellipse of 1.6x the face box (the default mask) and
  take the default Gaussian's scale for their strength: the learned method has no mask or kernel
  of its own to tell them.
* ``pipeline``: the default detector + Gaussian 0.25 on the 1.6 ellipse, with every attacker of
  the Gaussian method.

Writes ``summary.json`` under ``--out`` (one summary per row, the privacy audit's fields) and
prints the rows; the features are cached there per row and attacker.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROWS = ("learned", "pipeline")


def _anonymizer(row: str, model: str | None):
    from blurbeam.blur import BlurConfig, anonymize

    if row == "learned":
        from blurbeam.edge.infer import EdgeAnonymizer

        edge = EdgeAnonymizer(model, threads=1)
        return edge.apply, BlurConfig("gaussian", 0.25, mask_scale=1.6)
    from blurbeam.detectors import DetectorSpec, create
    from blurbeam.pipelines.scaffold import DEFAULT_DETECTOR

    det = create(DetectorSpec(DEFAULT_DETECTOR), threads=1)
    cfg = BlurConfig()

    def apply(rgb: np.ndarray) -> np.ndarray:
        return anonymize(rgb, [(f.x, f.y, f.w, f.h) for f in det.detect(rgb)], cfg)

    return apply, cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shared", default=None, help="the shared data folder (default ../shared)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--model", default=None, help="TFLite model (default: the packaged int8)")
    ap.add_argument("--no-deblur", action="store_true", help="leave the deblur attacker out")
    args = ap.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from blurbeam.lab.reid.attackers import attackers_for, load_deblur
    from blurbeam.lab.reid.face_features import attacked_features, original_features
    from blurbeam.lab.reid.faceset import read_rgb, shared_dir
    from blurbeam.lab.reid.recognizer import Recognizer
    from blurbeam.lab.reid.scoring import score_setting
    from blurbeam.lab.reid.sweep import face_ids, prepare_face_set

    shared = shared_dir(args.shared)
    if shared is None:
        print("edge_privacy: the shared data folder was not found (--shared)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = prepare_face_set(out, shared, 40.0, True, print)
    ids = face_ids(images)
    rec = Recognizer()
    orig_path = out / "originals.npy"
    if orig_path.exists() and np.load(orig_path).shape[0] == len(ids):
        originals = np.load(orig_path)
    else:
        originals = np.concatenate(
            [np.stack(original_features(rec, read_rgb(im.path), im.faces)) for im in images]
        )
        np.save(orig_path, originals)
    deblur = None if args.no_deblur else load_deblur()
    summaries = {}
    for row in args.rows:
        apply, cfg = _anonymizer(row, args.model)
        attackers = (
            ["none", "unsharp"] if row == "learned" else attackers_for(cfg.method, deblur=False)
        )
        if deblur is not None:
            attackers.append("deblur")
        feats: dict[str, list[np.ndarray]] = {a: [] for a in attackers}
        t0 = time.time()
        for im in images:
            anon = apply(read_rgb(im.path))
            for r in attacked_features(rec, anon, im.faces, cfg, attackers, deblur):
                for a in attackers:
                    feats[a].append(r.features[a])
        probes = {a: np.stack(v) for a, v in feats.items()}
        for a, v in probes.items():
            np.save(out / f"{row}_{a}.npy", v)
        score = score_setting(row, 0.0, originals, probes, ids, mask_scale=1.6)
        s = score.summary()
        s["top1_per_attacker"] = {a: score.top1[a].value for a in attackers}
        s["reid_per_attacker"] = {a: score.reid_per_attacker[a].value for a in attackers}
        s["seconds"] = round(time.time() - t0, 1)
        summaries[row] = s
        print(
            f"{row}: {s['n_faces']} faces, top-1 worst {s['top1_max']:.3f} ({s['worst_attacker']}), "
            f"verification re-id {s['reid']:.3f}, passes {s['passes']}",
            flush=True,
        )
    (out / "summary.json").write_text(json.dumps(summaries, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
