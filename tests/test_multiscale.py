"""The high-recall multiscale detector: fusion, tiling, and a small face single-scale misses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from blurbeam.detectors import DetectorSpec, Face, create
from blurbeam.detectors.multiscale import (
    SOURCE_1X,
    SOURCE_DOWN,
    SOURCE_UP,
    cluster_score,
    focus_regions,
    fuse,
    grid_tiles,
    tiles,
)
from blurbeam.geometry import iou

#: The astronaut's face in skimage's 512x512 picture, as CenterFace and YuNet both box it.
ASTRONAUT_FACE = (180.0, 60.0, 89.0, 117.0)


def small_face_scene(astronaut: np.ndarray, face_px: float) -> tuple[np.ndarray, tuple]:
    """The astronaut shrunk so her face's larger side is ``face_px``, on a grey 640x480 scene;
    returns the image and the face box."""
    r = face_px / ASTRONAUT_FACE[3]
    small = cv2.resize(astronaut, (round(512 * r), round(512 * r)), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    ox, oy = 300, 200
    canvas[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    fx, fy, fw, fh = ASTRONAUT_FACE
    return canvas, (ox + fx * r, oy + fy * r, fw * r, fh * r)


def best_iou(faces: list[Face], box: tuple) -> float:
    return max((iou(box, (f.x, f.y, f.w, f.h)) for f in faces), default=0.0)


def test_fuse_vote_and_nms() -> None:
    a = Face(10, 10, 20, 20, 0.9, ((15, 15),) * 5)
    b = Face(12, 12, 20, 20, 0.3, ((17, 17),) * 5)
    c = Face(100, 100, 20, 20, 0.5)
    nms = fuse([b, c, a], iou=0.4, method="nms")
    assert nms == [a, c]
    vote = fuse([b, c, a], iou=0.4, method="vote")
    assert len(vote) == 2 and vote[1] == c
    merged = vote[0]
    assert merged.score == 0.9
    assert merged.x == pytest.approx((10 * 0.9 + 12 * 0.3) / 1.2)
    assert merged.landmarks[0][0] == pytest.approx((15 * 0.9 + 17 * 0.3) / 1.2)
    assert fuse([], 0.4) == []
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse([a], 0.4, "mean")


def test_score_rules_of_a_fused_face() -> None:
    at_1x = Face(10, 10, 60, 60, 0.6)
    at_half = Face(12, 11, 60, 60, 0.5)  # the same face seen by the 0.5x pass
    at_2x = Face(11, 11, 60, 60, 0.9)
    alone = Face(200, 100, 12, 12, 0.7)  # found by the 2x pass only
    faces = [at_1x, at_half, alone]
    sources = [SOURCE_1X, SOURCE_DOWN, SOURCE_UP]

    def scores(faces: list[Face], sources: list[int], rule: str) -> list[float]:
        return sorted(
            (f.score for f in fuse(faces, 0.4, "vote", 0.05, sources, rule)), reverse=True
        )

    assert scores(faces, sources, "max") == pytest.approx([0.7, 0.6])
    # Two passes at the image's size or smaller agree: noisy-or 1 - 0.4 * 0.5 = 0.8, which now
    # ranks above the face only the 2x pass found; that one keeps its own score.
    assert scores(faces, sources, "agree") == pytest.approx([0.8, 0.7])
    # An upscaled pass does not add evidence, it only competes by its score.
    up = [at_1x, at_2x]
    assert scores(up, [SOURCE_1X, SOURCE_UP], "agree") == pytest.approx([0.9])
    assert cluster_score(np.array([0.9, 0.6, 0.5]), np.array([2, 0, 3]), "agree") == 0.9
    assert cluster_score(np.array([0.9, 0.6, 0.5]), np.array([2, 0, 1]), "agree") == 0.9
    assert cluster_score(np.array([0.6, 0.5]), np.array([0, 1]), "agree") == pytest.approx(0.8)
    # The 1x pass saw the face confidently (0.6 >= 0.5): the 2x pass cannot raise it.
    assert scores(up, [SOURCE_1X, SOURCE_UP], "first") == pytest.approx([0.6])
    assert cluster_score(np.array([0.9, 0.4]), np.array([2, 0]), "first") == 0.9  # 1x unsure
    # agree counts each pass once (its best member), not every overlapping box of one pass.
    assert cluster_score(np.array([0.5, 0.5]), np.array([0, 0]), "agree") == 0.5
    # A cluster below the vote floor keeps its own score: no face is lifted above a threshold
    # it would not reach when the detector runs at that threshold.
    low = [Face(0, 0, 10, 10, 0.04), Face(1, 0, 10, 10, 0.04)]
    assert scores(low, [SOURCE_1X, SOURCE_DOWN], "agree") == [0.04]
    with pytest.raises(ValueError, match="score rule"):
        fuse(faces, 0.4, "vote", 0.05, sources, "mean")
    with pytest.raises(ValueError, match="sources"):
        fuse(faces, 0.4, "vote", 0.05, [0], "agree")


def test_tiles_cover_the_image_with_overlap() -> None:
    assert tiles(500, 400, 0, 0) == [(0, 0, 500, 400)]
    assert tiles(500, 400, 1024, 64) == [(0, 0, 500, 400)]
    ts = tiles(2500, 1100, 1024, 96)
    covered = np.zeros((1100, 2500), bool)
    for x0, y0, x1, y1 in ts:
        assert x1 - x0 <= 1024 and y1 - y0 <= 1024
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({t[0] for t in ts})
    assert all(b - a <= 1024 - 96 for a, b in zip(xs, xs[1:], strict=False))


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (1800, 1350, 1_000_000),
        (1024, 1400, 1_000_000),
        (4000, 3000, 1_000_000),
        (3000, 200, 250_000),
    ],
)
def test_grid_tiles_cover_the_image_within_the_pixel_budget(
    width: int, height: int, max_pixels: int
) -> None:
    ts = grid_tiles(width, height, max_pixels, 96)
    assert len(ts) > 1
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in ts:
        assert (x1 - x0) * (y1 - y0) <= max_pixels
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    # neighbours share at least the overlap, so a face of up to 96 px lies whole in one tile
    for starts, ends in (
        (sorted({t[0] for t in ts}), sorted({t[2] for t in ts})),
        (sorted({t[1] for t in ts}), sorted({t[3] for t in ts})),
    ):
        assert all(end - start >= 96 for start, end in zip(starts[1:], ends, strict=False))
    assert grid_tiles(1024, 700, 1_000_000, 96) == [(0, 0, 1024, 700)]


def test_a_large_image_is_searched_in_tiles_at_1x_and_its_faces_found(
    astronaut: np.ndarray,
) -> None:
    """``full_max_pixels``: the 1x pass of a large image runs on tiles (bounded memory); faces
    on and off the seams are found as without tiles."""
    canvas = np.full((1350, 1800, 3), 90, np.uint8)
    r = 40 / ASTRONAUT_FACE[3]  # 40 px faces
    small = cv2.resize(astronaut, (round(512 * r), round(512 * r)), interpolation=cv2.INTER_AREA)
    fx, fy, fw, fh = (v * r for v in ASTRONAUT_FACE)
    boxes = []
    # 1800x1350 in 1 MP tiles is three strips: x 0-664, 568-1232, 1136-1800. Faces in the
    # middle of a strip and across each strip's edge (x 640-670 and 1120-1150).
    for ox, oy in ((100, 100), (579, 600), (1059, 300), (1500, 1100), (300, 1150)):
        canvas[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
        boxes.append((ox + fx, oy + fy, fw, fh))
    whole = create(DetectorSpec("multiscale")).detect(canvas)
    tiled = create(DetectorSpec("multiscale", options=(("full_max_pixels", 1_000_000),))).detect(
        canvas
    )
    for box in boxes:
        assert best_iou(whole, box) >= 0.5
        assert best_iou(tiled, box) >= 0.5


def test_focus_regions_merge_around_small_faces() -> None:
    faces = [
        Face(100, 100, 10, 12, 0.3),
        Face(130, 100, 10, 12, 0.3),  # overlaps the first once grown: merged
        Face(600, 400, 10, 12, 0.3),
        Face(300, 300, 80, 90, 0.9),  # large: no upscaling needed
    ]
    regions = focus_regions(faces, max_face=24, margin=50, width=700, height=480)
    assert sorted(regions) == [(50, 50, 190, 162), (550, 350, 660, 462)]


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="fusion"):
        create(DetectorSpec("multiscale", options=(("base", "yunet"), ("fusion", "avg"))))
    with pytest.raises(ValueError, match="scales"):
        create(DetectorSpec("multiscale", options=(("base", "yunet"), ("scales", (0.0,)))))
    with pytest.raises(ValueError, match="full_max_pixels"):
        create(DetectorSpec("multiscale", options=(("base", "yunet"), ("full_max_pixels", -1))))
    with pytest.raises(ValueError, match="upscaled_max_pixels"):
        create(
            DetectorSpec("multiscale", options=(("base", "yunet"), ("upscaled_max_pixels", 1000)))
        )
    with pytest.raises(ValueError, match="itself"):
        create(DetectorSpec("multiscale", options=(("base", "multiscale"),)))


def test_upscaled_regions_run_on_tiles_within_their_pixel_budget(astronaut: np.ndarray) -> None:
    """``upscaled_max_pixels``: an upscaled region runs on equal tiles of at most that many
    pixels that together cover it, and a small face in it is still found."""
    scene, box = small_face_scene(astronaut, 10.0)
    budget = 300_000
    det = create(DetectorSpec("multiscale", options=(("upscaled_max_pixels", budget),)))
    crops: list[tuple[int, int]] = []
    up = det._up_base
    real_detect = up.detect

    def recording(crop: np.ndarray) -> list[Face]:
        crops.append(crop.shape[:2])
        return real_detect(crop)

    up.detect = recording  # type: ignore[method-assign]
    h, w = scene.shape[:2]
    faces = det._in_regions(scene, 2.0, [(0, 0, w, h)])
    assert len(crops) > 1 and all(ch * cw <= budget for ch, cw in crops)
    assert sum(ch * cw for ch, cw in crops) >= 4 * h * w  # together they cover the region
    assert best_iou(faces, box) >= 0.5


@pytest.mark.parametrize(
    ("base", "face_px"),
    [
        ("yunet", 12.0),
        ("centerface", 10.0),
    ],
)
def test_high_recall_finds_a_small_face_single_scale_misses(
    astronaut: np.ndarray, base: str, face_px: float
) -> None:
    scene, box = small_face_scene(astronaut, face_px)
    single = create(DetectorSpec(base)).detect(scene)
    multi = create(DetectorSpec("multiscale", options=(("base", base),))).detect(scene)
    assert best_iou(single, box) < 0.5
    assert best_iou(multi, box) >= 0.5
    hit = max(multi, key=lambda f: iou(box, (f.x, f.y, f.w, f.h)))
    assert hit.landmarks is not None and len(hit.landmarks) == 5  # kept for alignment


def test_upscaled_pass_keeps_only_small_faces(astronaut: np.ndarray) -> None:
    only_up = create(
        DetectorSpec(
            "multiscale", options=(("base", "yunet"), ("scales", (2.0,)), ("focus", False))
        )
    ).detect(astronaut)
    assert only_up == []  # the 117 px face is found at 2x but is not small
    both = create(DetectorSpec("multiscale", options=(("base", "yunet"),))).detect(astronaut)
    assert len(both) == 1 and best_iou(both, ASTRONAUT_FACE) > 0.7


def test_downscaled_pass_keeps_only_large_faces(astronaut: np.ndarray) -> None:
    def half_only(min_face: float) -> list[Face]:
        opts = (("base", "yunet"), ("scales", (0.5,)), ("downscaled_min_face", min_face))
        return create(DetectorSpec("multiscale", options=opts)).detect(astronaut)

    found = half_only(48)  # the 117 px face is 58 px at 0.5x, mapped back to image pixels
    assert len(found) == 1 and best_iou(found, ASTRONAUT_FACE) > 0.7
    assert half_only(200) == []  # smaller than downscaled_min_face: left to the 1x pass


def test_ensemble_fuses_the_same_face_once(astronaut: np.ndarray) -> None:
    det = create(
        DetectorSpec("multiscale", options=(("base", "centerface"), ("ensemble", "yunet")))
    )
    faces = det.detect(astronaut)
    assert len(faces) == 1 and best_iou(faces, ASTRONAUT_FACE) > 0.7
    assert "+" in det.model_sha256


def test_faces_above_a_score_do_not_depend_on_the_threshold(shared: Path) -> None:
    """evaluate runs with a low threshold for AP; anonymize must keep exactly the same faces."""
    crowd = shared / "crowds" / "ppl.jpg"
    if not crowd.is_file():
        pytest.skip(f"{crowd} not found")
    rgb = cv2.cvtColor(cv2.imread(str(crowd)), cv2.COLOR_BGR2RGB)
    opts = (("base", "yunet"),)
    low = create(DetectorSpec("multiscale", 0.02, options=opts)).detect(rgb)
    high = create(DetectorSpec("multiscale", 0.5, options=opts)).detect(rgb)
    assert len(high) >= 5
    assert sorted((f.x, f.y, f.w, f.h, f.score) for f in low if f.score >= 0.5) == sorted(
        (f.x, f.y, f.w, f.h, f.score) for f in high
    )


def test_runtime_and_precision_reach_the_centerface_bases() -> None:
    from blurbeam.detectors import centerface as cf

    fp32 = create(
        DetectorSpec("multiscale", options=(("precision", "fp32"), ("runtime", "onnxruntime")))
    )
    assert (fp32.precision, fp32.runtime) == ("fp32", "onnxruntime")
    assert fp32.model_sha256 == cf.SOURCE_SHA256 and fp32._up_base is fp32._base
    # int8 in every pass unless upscale_precision says otherwise: one session, one model id
    same = create(DetectorSpec("multiscale", options=(("precision", "int8"),)))
    assert same.precision == "int8"
    assert same.model_sha256 == cf.INT8_SHA256 and same._up_base is same._base
    # the focus pass in fp32: the audit's model id names both files
    int8 = create(
        DetectorSpec("multiscale", options=(("precision", "int8"), ("upscale_precision", "fp32")))
    )
    assert int8.precision == "int8, upscaled fp32"
    assert int8.model_sha256 == f"{cf.INT8_SHA256}+{cf.SOURCE_SHA256}"
    assert (int8._base.precision, int8._up_base.precision) == ("int8", "fp32")
    # the base's own options win over the shared ones
    det = create(
        DetectorSpec(
            "multiscale",
            options=(("base_options", (("precision", "fp32"),)), ("precision", "int8")),
        )
    )
    assert det.model_sha256 == cf.SOURCE_SHA256
    with pytest.raises(ValueError, match="unknown upscale_precision 'fp16'"):
        create(DetectorSpec("multiscale", options=(("upscale_precision", "fp16"),)))


def test_each_pass_is_tiled_by_the_precision_it_runs_in() -> None:
    """fp32 activations take four times int8's memory: an fp32 pass runs on smaller tiles
    (``FP32_TILES``) unless the options name the tiling."""
    from blurbeam.detectors.multiscale import FP32_TILES, TILES

    def tiling(det: object) -> tuple:
        return (det._full_max_pixels, det._overlap, det._up_max_pixels, det._up_overlap)

    def of(t: dict) -> tuple:
        return (t["full_max_pixels"], t["tile_overlap"])

    fp32 = create(DetectorSpec("multiscale", options=(("precision", "fp32"),)))
    assert tiling(fp32)[:2] == of(FP32_TILES)
    assert tiling(fp32)[2:] == (FP32_TILES["upscaled_max_pixels"], FP32_TILES["tile_overlap"])
    int8 = create(DetectorSpec("multiscale", options=(("precision", "int8"),)))
    assert tiling(int8)[:2] == of(TILES)
    assert tiling(int8)[2:] == (TILES["upscaled_max_pixels"], TILES["tile_overlap"])
    assert FP32_TILES["full_max_pixels"] < TILES["full_max_pixels"]
    mixed = create(
        DetectorSpec("multiscale", options=(("precision", "int8"), ("upscale_precision", "fp32")))
    )
    assert tiling(mixed) == (*of(TILES), FP32_TILES["upscaled_max_pixels"], 144)
    named = create(
        DetectorSpec(
            "multiscale",
            options=(
                ("full_max_pixels", 2_000_000),
                ("precision", "fp32"),
                ("tile_overlap", 64),
                ("upscaled_max_pixels", 0),
            ),
        )
    )
    assert tiling(named) == (2_000_000, 64, 0, 64)


def test_the_downscaled_pass_of_a_large_image_stays_within_the_budget_and_finds_large_faces(
    astronaut: np.ndarray,
) -> None:
    """When the 0.5x image is larger than ``full_max_pixels`` it runs on tiles of that budget,
    and the whole image once more at a coarser scale for faces larger than the tiles' overlap:
    no network input exceeds the budget, and large faces across the 0.5x seams are found."""
    budget = 400_000
    w, h = 2400, 1600
    det = create(
        DetectorSpec(
            "multiscale",
            options=(
                ("full_max_pixels", budget),
                ("precision", "int8"),
                ("upscaled_max_pixels", budget),
            ),
        )
    )
    inputs: list[tuple[int, int]] = []
    real_detect = det._base.detect

    def recording(crop: np.ndarray) -> list[Face]:
        inputs.append(crop.shape[:2])
        return real_detect(crop)

    det._base.detect = recording  # type: ignore[method-assign]
    half = grid_tiles(w // 2, h // 2, budget, 96)
    assert len(half) == 3  # three strips: x 0-464, 368-832, 736-1200
    # 400 px faces (200 px at 0.5x, more than the overlap) centred on both seams
    seams = [(half[i][0] + half[i - 1][2]) for i in (1, 2)]  # twice each overlap's middle
    r = 400 / ASTRONAUT_FACE[3]
    fx, fy, fw, fh = (v * r for v in ASTRONAUT_FACE)
    head = cv2.resize(astronaut, (round(512 * r), round(512 * r)), interpolation=cv2.INTER_AREA)
    head = head[int(fy - 0.3 * fh) : int(fy + 1.3 * fh), int(fx - 0.3 * fw) : int(fx + 1.3 * fw)]
    boxes = []
    canvas = np.full((h, w, 3), 90, np.uint8)
    for cx, cy in ((seams[0], 500), (seams[1], 1100)):
        ox, oy = int(cx - head.shape[1] / 2), int(cy - head.shape[0] / 2)
        canvas[oy : oy + head.shape[0], ox : ox + head.shape[1]] = head
        boxes.append((ox + 0.3 * fw, oy + 0.3 * fh, fw, fh))
    faces = det.detect(canvas)
    assert inputs and all(ih * iw <= budget for ih, iw in inputs)
    assert len(inputs) > len(grid_tiles(w, h, budget, 96)) + len(half)  # the coarse pass ran
    for box in boxes:
        assert best_iou(faces, box) >= 0.5


def test_after_a_large_image_the_bases_give_back_their_memory(astronaut: np.ndarray) -> None:
    """Above ``LARGE_IMAGE_BUDGETS`` 1x budgets the detector asks its CenterFace to free the
    inference buffers the tiles left (onnxruntime's arena); a smaller image does not. The faces
    stay the same, and the next detection works as before."""
    from blurbeam.detectors.multiscale import LARGE_IMAGE_BUDGETS

    scene, box = small_face_scene(astronaut, 40.0)  # 640x480
    budget = 65_536
    assert scene.shape[0] * scene.shape[1] > LARGE_IMAGE_BUDGETS * budget
    det = create(DetectorSpec("multiscale", options=(("full_max_pixels", budget),)))
    calls: list[int] = []
    real_release = det._base.release_memory

    def counting() -> None:
        calls.append(1)
        real_release()

    det._base.release_memory = counting  # type: ignore[method-assign]
    first = det.detect(scene)
    assert calls == [1]
    assert det.detect(scene) == first and best_iou(first, box) >= 0.5
    det.detect(np.ascontiguousarray(scene[:200, :300]))  # 60,000 px: not large
    assert calls == [1, 1]
