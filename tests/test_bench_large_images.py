"""bench/large_images.py: the face sweep over a large canvas and the detector's memory on a
large photo (small sizes here; the figures in docs/BENCHMARKS.md are at 6000x4000)."""

from __future__ import annotations

import json

import pytest
from benchload import load_bench

large = load_bench("large_images")


def test_sweep_finds_a_large_face_at_every_place_of_a_tiled_canvas() -> None:
    # 2400x1600 with a 400,000 px budget: every pass below 2x runs on tiles and the coarse pass
    # runs, so the 9 places cross seams of each
    row = large.sweep((2400, 1600), [400], [("full_max_pixels", 400_000)])
    assert row["size"] == "2400x1600" and set(row["faces"]) == {"400"}
    assert row["faces"]["400"]["worst_iou"] >= 0.5
    assert row["faces"]["400"]["worst_cover"] >= 0.8


def test_memory_reports_the_peak_of_a_fresh_process(
    shared, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (large.SHARED / "crowds").is_dir():
        pytest.skip(f"no crowd photos under {large.SHARED}")
    assert large.main(["memory", "--size", "1200x800", "--detector-option", "precision=int8"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["size"] == "1200x800" and row["precision"] == "int8"
    assert row["options"] == [["precision", "int8"]]
    assert row["faces"] > 0 and row["peak_rss_mib"] >= row["peak_rss_mib_before_detect"] > 0


def test_memory_runs_the_detector_it_is_given(shared, capsys: pytest.CaptureFixture[str]) -> None:
    if not (large.SHARED / "crowds").is_dir():
        pytest.skip(f"no crowd photos under {large.SHARED}")
    args = ["memory", "--size", "640x480", "--detector", "centerface"]
    assert large.main([*args, "--detector-option", "precision=int8"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["detector"] == "centerface" and row["precision"] == "int8"
    assert large.main(["memory", "--size", "640x480", "--detector", "no-such-detector"]) == 1
    assert "no-such-detector" in capsys.readouterr().err


def test_a_bad_size_is_a_clear_error() -> None:
    with pytest.raises(SystemExit):
        large.main(["sweep", "--size", "big"])


def test_stages_reports_the_peak_after_each_stage(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_shards import face_image

    photo = tmp_path / "face.jpg"
    photo.write_bytes(face_image(1))
    assert large.main(["stages", "--photo", str(photo)]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    peaks = row["peak_rss_mib"]
    assert list(peaks) == ["loaded", "decode", "detect", "blur", "encode"]
    values = list(peaks.values())
    assert values[0] > 0 and values == sorted(values)  # a peak never falls
