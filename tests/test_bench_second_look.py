"""bench/second_look.py: the crop around a detection, the second detectors' scores on it, and
the table of what each rule would drop."""

from __future__ import annotations

import numpy as np
import pytest
from benchload import load_bench

look = load_bench("second_look")


def test_the_crop_puts_the_box_in_its_centre_at_the_verified_size() -> None:
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[50:70, 100:140] = 255  # the box (100, 50, 40, 20)
    out, (x, y, w, h) = look.crop(rgb, (100, 50, 40, 20))
    assert out.shape == (look.SIDE, look.SIDE, 3)
    assert (w, h) == (look.FACE_PX, look.FACE_PX / 2)
    assert (x + w / 2, y + h / 2) == (look.SIDE / 2, look.SIDE / 2)
    inside = out[int(y) + 2 : int(y + h) - 2, int(x) + 2 : int(x + w) - 2]
    assert inside.min() == 255 and out[: int(y) - 2].max() == 0


def test_a_face_gets_a_second_score_and_a_flat_patch_none(astronaut: np.ndarray) -> None:
    dets = look.verifiers()
    faces = dets["centerface"].detect(astronaut)
    face = max(faces, key=lambda f: f.score)
    box = (face.x, face.y, face.w, face.h)
    flat = np.full_like(astronaut, 128)
    for name, det in dets.items():
        c, expected = look.crop(astronaut, box)
        assert look.second_score(det, c, expected) > 0.5, name
        c, expected = look.crop(flat, box)
        assert look.second_score(det, c, expected) == 0.0, name


def test_summarise_counts_the_faces_a_rule_drops_and_the_area_it_keeps() -> None:
    rows = [
        # a labelled 50 px face only YuNet sees again
        {"box": [0, 0, 50, 50], "score": 0.2, "label_iou": 0.6, "centerface": 0.0, "yunet": 0.4},
        # an unlabelled 100 px detection neither sees again
        {"box": [0, 0, 100, 100], "score": 0.2, "label_iou": 0.0, "centerface": 0.0, "yunet": 0.0},
        # an unlabelled 20 px one both see again
        {"box": [0, 0, 20, 20], "score": 0.2, "label_iou": 0.1, "centerface": 0.3, "yunet": 0.3},
    ]
    table = {(s["verifier"], s["min_size"], s["threshold"]): s for s in look.summarise(rows)}
    either = table[("either", 0, 0.05)]
    assert either["faces_dropped"] == 0
    assert either["unlabelled_area_kept"] == pytest.approx(400 / 10400, abs=1e-3)
    cf = table[("centerface", 0, 0.05)]
    assert (
        cf["faces_dropped"] == 1 and cf["faces_dropped_ge40"] == 1 and cf["dropped_sizes"] == [50]
    )
    # a rule applied from 64 px up leaves the 50 px face alone
    assert table[("centerface", 64, 0.05)]["faces_dropped"] == 0


def test_missing_predictions_are_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert look.main(["--set", "no-such-set"]) == 2
    assert "frontier.py run --set no-such-set" in capsys.readouterr().err
