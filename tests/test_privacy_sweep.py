"""The privacy sweep's machinery on synthetic faces (no shared data): worker processes give the
same features in the same row order as one process, and the per-setting cache makes a rerun
compute nothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from blurbeam.lab.reid.faceset import crowd_faces
from blurbeam.lab.reid.sweep import face_ids, run_sweep, save_faces, setting_name

GRID = (("gaussian", 0.05), ("pixelate", 8.0))


def _scene(astronaut: np.ndarray, scales: list[float], mirror: bool) -> np.ndarray:
    """The astronaut pasted side by side at ``scales`` on a grey canvas (BGR for cv2.imwrite)."""
    src = astronaut[:, ::-1] if mirror else astronaut
    tiles = [cv2.resize(src, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) for s in scales]
    h = max(t.shape[0] for t in tiles) + 40
    w = sum(t.shape[1] for t in tiles) + 20 * (len(tiles) + 1)
    canvas = np.full((h, w, 3), 128, np.uint8)
    x = 20
    for t in tiles:
        canvas[20 : 20 + t.shape[0], x : x + t.shape[1]] = t
        x += t.shape[1] + 20
    return np.ascontiguousarray(canvas[..., ::-1])


@pytest.fixture(scope="module")
def face_set(tmp_path_factory, astronaut: np.ndarray) -> tuple[Path, list]:
    """Six photos, seven faces of different sizes and sides, cached as the sweep would cache
    them (faces.json), so that every sweep below starts from the same face set."""
    root = tmp_path_factory.mktemp("sweep")
    crowds = root / "crowds"
    crowds.mkdir()
    rgb = np.ascontiguousarray(astronaut[:, :, :3])
    layouts = [([0.5], False), ([0.7], True), ([0.9], False), ([1.1], True), ([1.3], False)]
    layouts.append(([0.55, 0.8], False))  # two faces in one photo
    for i, (scales, mirror) in enumerate(layouts):
        cv2.imwrite(str(crowds / f"p{i}.jpg"), _scene(rgb, scales, mirror))
    images = list(crowd_faces(crowds, min_size=40.0))
    assert len(images) == len(layouts) and sum(len(im.faces) for im in images) == 7
    return root, images


def _sweep(face_set, name: str, workers: int, log=lambda m: None):
    root, images = face_set
    out = root / name
    out.mkdir(exist_ok=True)
    if not (out / "faces.json").exists():
        save_faces(out / "faces.json", images, {"min_size": 40.0, "clear_only": True})
    return run_sweep(out, root, grid=GRID, workers=workers, log=log)


def test_workers_give_the_same_rows_as_one_process(face_set) -> None:
    images1, res1, orig1 = _sweep(face_set, "one", workers=1)
    images2, res2, orig2 = _sweep(face_set, "two", workers=2)
    assert face_ids(images1) == face_ids(images2) and len(face_ids(images1)) == 7
    assert orig1.shape[0] == orig2.shape[0] == 7
    # the same faces in the same order: each row matches its own row, not merely some row
    sim = (orig1 / np.linalg.norm(orig1, axis=1, keepdims=True)) @ (
        orig2 / np.linalg.norm(orig2, axis=1, keepdims=True)
    ).T
    assert np.all(np.argmax(sim, axis=1) == np.arange(7)) and np.diag(sim).min() > 0.999
    assert set(res1) == set(res2) and len(res1) == len(GRID)
    for setting, feats in res1.items():
        assert set(feats) == set(res2[setting]) and feats
        for attacker, f in feats.items():
            assert f.shape == orig1.shape, (setting, attacker)
            np.testing.assert_allclose(f, res2[setting][attacker], atol=1e-3, rtol=1e-3)


def test_a_rerun_computes_nothing_and_report_only_needs_a_cache(face_set, tmp_path) -> None:
    first: list[str] = []
    _, res1, orig1 = _sweep(face_set, "cached", workers=1, log=first.append)
    names = [setting_name(m, s) for m, s in GRID]
    assert all(any(line.startswith(f"{n}:") for line in first) for n in names)
    again: list[str] = []
    _, res2, orig2 = _sweep(face_set, "cached", workers=1, log=again.append)
    assert again == []  # every feature came from the cache
    assert np.array_equal(orig1, orig2)
    for setting, feats in res1.items():
        for attacker, f in feats.items():
            assert np.array_equal(f, res2[setting][attacker])
    with pytest.raises(ValueError, match="no sweep results"):
        run_sweep(tmp_path / "empty", tmp_path, grid=GRID, compute=False, log=lambda m: None)
