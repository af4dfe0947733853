"""``blurbeam stream --input FILE|URL|DEVICE --output FILE|-``: anonymize a video as a live
stream, at its frame rate, with bounded latency (``blurbeam.video.stream``).

The input file is paced at its timestamps as a camera would deliver it; the detector works on
the newest frame; each frame is written at most ``--latency-ms`` after it arrived, blurred with
its own detection or, when the detector is behind, with the nearest detections enlarged
(``--policy reuse``) or blacked out (``--policy black``). A frame the output cannot start in
time is dropped. Prints the frames written, dropped, reused and blacked out and the p50 / p95 /
max latency. Needs the ``video`` extra. Exit 0; 1 when the stream stopped early (the source or
the detector failed: what was written is kept, every frame of it blurred or black); 2 on bad
arguments or an input that cannot be opened.
"""

from __future__ import annotations

import argparse
import os
import sys

from blurbeam.pipelines.scaffold import (
    add_detector_options,
    detector_spec,
    finite_float,
    non_negative_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blurbeam.blur import DEFAULT_MASK_SCALE, METHODS
    from blurbeam.video.stream import POLICIES, StreamConfig

    defaults = StreamConfig()
    parser.add_argument(
        "--input",
        required=True,
        help="the source: a video file (paced at its frame rate), a URL FFmpeg reads (rtsp://, "
        "http://, udp:// ...) or a device with --input-format (/dev/video0 with v4l2)",
    )
    parser.add_argument(
        "--input-format",
        default=None,
        help="FFmpeg's input format of --input (v4l2 for a Linux camera); default: detected",
    )
    parser.add_argument(
        "--output",
        required=True,
        help="the anonymized video file (its container from its extension), or - for Matroska "
        "on standard output",
    )
    add_detector_options(parser)
    parser.add_argument("--method", default="gaussian", choices=METHODS, help="(default gaussian)")
    parser.add_argument(
        "--mask-scale",
        type=finite_float,
        default=DEFAULT_MASK_SCALE,
        help=f"enlarge each face box by this factor (default {DEFAULT_MASK_SCALE})",
    )
    parser.add_argument(
        "--policy",
        default=defaults.policy,
        choices=POLICIES,
        help="a frame the detector did not reach: reuse the nearest detections' boxes, enlarged, "
        "within --max-age frames (else black), or black it out (default reuse)",
    )
    parser.add_argument(
        "--latency-ms",
        type=finite_float,
        default=defaults.latency_s * 1000,
        help=f"write each frame at most this long after it arrived, else drop it "
        f"(default {defaults.latency_s * 1000:g})",
    )
    parser.add_argument(
        "--max-age",
        type=non_negative_int,
        default=defaults.max_age,
        help=f"frames a detection's boxes may be reused for (default {defaults.max_age}: "
        "the distance at which they reach their largest; a longer reuse keeps that size and a "
        "moving face can leave them)",
    )
    parser.add_argument(
        "--no-pacing",
        action="store_true",
        help="read the input as fast as it decodes instead of at its frame rate",
    )


def _check_paths(source: str, output: str) -> None:
    """A ValueError when writing ``output`` could touch ``source``: the same place however it is
    spelled (``./a.mp4``, a symlink) or the same file under another name (a hard link)."""
    import fsspec

    from blurbeam.shards import canonical
    from blurbeam.video.stream import STDOUT

    if output == STDOUT:
        return
    protocol = fsspec.core.split_protocol(source)[0]
    if protocol not in (None, "file", "local"):
        return  # a stream FFmpeg opens by URL (rtsp, http ...): no file here to overwrite
    same = canonical(source) == canonical(output)
    local = fsspec.core.url_to_fs(source)[1]
    if not same and os.path.exists(local) and os.path.exists(output):
        same = os.path.samefile(local, output)
    if same:
        raise ValueError(
            f"--output {output!r} is the input itself: the original would be replaced; "
            "choose another file"
        )


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.blur import BlurConfig
    from blurbeam.detectors import create
    from blurbeam.errors import one_line
    from blurbeam.extras import MissingExtra
    from blurbeam.video.media import VideoError
    from blurbeam.video.stream import StreamConfig, run_stream

    prog = "blurbeam stream"
    try:
        blur = BlurConfig(method=args.method, mask_scale=args.mask_scale)
        if blur.weakness:
            raise ValueError(f"{blur.weakness}; faces may stay recognisable (docs/PRIVACY.md)")
        config = StreamConfig(
            latency_s=args.latency_ms / 1000.0,
            policy=args.policy,
            max_age=args.max_age,
            realtime=not args.no_pacing,
            max_pixels=args.max_pixels,
            source_format=args.input_format,
        )
        _check_paths(args.input, args.output)
        if args.input_format:
            from blurbeam.video.media import load_av

            if args.input_format not in load_av().formats_available:
                raise ValueError(f"cannot open video: no input format {args.input_format!r}")
        spec = detector_spec(args)
        detector = create(spec)
    except MissingExtra:
        raise
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {one_line(exc, with_type=False)}", file=sys.stderr)
        return 2
    print(
        f"{prog}: {args.input} -> {args.output}, detector {spec.name}, policy {config.policy}, "
        f"latency {args.latency_ms:g} ms",
        file=sys.stderr,
    )
    try:
        stats = run_stream(args.input, args.output, detector, blur, config)
    except VideoError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    s = stats.summary()
    print(
        f"{prog}: {s['frames_in']} frames in, {s['written']} written ({s['fresh']} with their own "
        f"detection, {s['reused']} with reused boxes, {s['blacked']} black), {s['dropped']} "
        f"dropped, {s['detections']} detections; latency p50 {s['latency_p50_ms']:.0f} ms, "
        f"p95 {s['latency_p95_ms']:.0f} ms, max {s['latency_max_ms']:.0f} ms",
        file=sys.stderr,
    )
    if stats.error:
        print(f"{prog}: error: stopped early: {stats.error}", file=sys.stderr)
        return 1
    return 0
