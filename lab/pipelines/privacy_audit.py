"""``blurbeam privacy-audit``: can a face recognizer still identify the anonymized faces?

Audit mode (a Beam pipeline)::

    blurbeam privacy-audit --anonymized OUT --output REPORT [--original IN]

reads the anonymize run's audit Parquet (``OUT/audit/*.parquet``: original and output paths,
settings, faces with landmarks), compares every face >= ``--min-face-size`` px with its region of
the anonymized image under every attacker, and writes per-face rows, a summary per method and
strength, a Markdown report and a plot. Without an audit record (``--no-audit-record``), images are
paired by relative path under ``--original`` and ``--anonymized`` and faces are re-detected with
YuNet; ``--method``/``--strength`` give the settings.

Sweep mode (``--sweep``): methods x strengths over the WIDER dev305 + crowd face set in
``../shared`` (or ``--shared``), the table that sets the anonymize defaults (docs/PRIVACY.md);
what is not cached under ``--output`` yet runs as one Beam pipeline (DirectRunner with
``--workers`` processes unless Beam flags say otherwise).
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_MIN_FACE = 40.0


#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blurbeam.blur import METHODS
    from blurbeam.lab.reid.attackers import ATTACKERS

    parser.add_argument("--output", required=True, help="directory for the report and Parquet")
    parser.add_argument("--original", help="folder of the original images (audit: to re-map paths)")
    parser.add_argument(
        "--anonymized", help="the anonymize run's output directory (holds audit/*.parquet)"
    )
    parser.add_argument(
        "--audit", help="audit Parquet file, glob or directory (default: ANONYMIZED)"
    )
    parser.add_argument("--run-id", help="only this anonymize run's records")
    parser.add_argument(
        "--no-audit-record",
        action="store_true",
        help="pair images by relative path and re-detect faces on the originals",
    )
    parser.add_argument(
        "--method", choices=METHODS, default="gaussian", help="with --no-audit-record"
    )
    parser.add_argument("--strength", type=float, default=None, help="with --no-audit-record")
    parser.add_argument(
        "--min-face-size",
        type=float,
        default=DEFAULT_MIN_FACE,
        help=f"audit faces whose larger side is at least this (default {DEFAULT_MIN_FACE:g} px)",
    )
    parser.add_argument(
        "--attackers",
        default=None,
        help=f"comma-separated subset of {','.join(ATTACKERS)} (default: all that apply)",
    )
    parser.add_argument(
        "--deblur",
        action="store_true",
        help="add the deblur-model attacker (needs its packaged weights)",
    )
    parser.add_argument("--title", default="Privacy audit", help="report title")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--sweep", action="store_true", help="run the methods x strengths sweep")
    sweep.add_argument("--shared", help="the shared data folder (default ../shared)")
    sweep.add_argument(
        "--settings",
        default=None,
        help="comma-separated METHOD:STRENGTH[:MASK_SCALE] list (mask scale default: the "
        "anonymize default; default list: the built-in grid)",
    )
    sweep.add_argument(
        "--all-faces",
        action="store_true",
        help="also WIDER faces labelled blurry or heavily occluded (default: clear faces only)",
    )
    sweep.add_argument(
        "--workers", type=int, default=1, help="sweep worker processes (DirectRunner)"
    )
    sweep.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: report the settings and attackers already cached in --output",
    )


def _fail(msg: str) -> int:
    print(f"blurbeam privacy-audit: error: {msg}", file=sys.stderr)
    return 2


def _attackers(text: str | None) -> list[str] | None:
    from blurbeam.lab.reid.attackers import ATTACKERS

    if not text:
        return None
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in ATTACKERS]
    if bad:
        raise ValueError(
            f"unknown attacker(s) {', '.join(bad)}; choose from {', '.join(ATTACKERS)}"
        )
    return names


def run_sweep_command(
    args: argparse.Namespace, attackers: list[str] | None, beam_args: list[str]
) -> int:
    from blurbeam.lab.reid.audit_report import write_outputs
    from blurbeam.lab.reid.faceset import shared_dir
    from blurbeam.lab.reid.scoring import score_setting
    from blurbeam.lab.reid.sweep import DEFAULT_GRID, face_ids, parse_setting, run_sweep

    shared = shared_dir(args.shared)
    if shared is None:
        return _fail("no shared data folder (../shared or --shared or $BLURBEAM_SHARED)")
    grid = (
        [parse_setting(s) for s in args.settings.split(",") if s.strip()]
        if args.settings
        else list(DEFAULT_GRID)
    )
    images, results, originals = run_sweep(
        args.output,
        shared,
        grid,
        attackers,
        with_deblur=args.deblur,
        workers=max(1, args.workers),
        min_size=args.min_face_size,
        clear_only=not args.all_faces,
        log=lambda m: print(m, flush=True),
        compute=not args.report_only,
        pipeline_args=beam_args,
    )
    ids = face_ids(images)
    sizes = {
        fid: f.size for fid, f in zip(ids, (f for im in images for f in im.faces), strict=True)
    }
    scores = [
        score_setting(m, s, originals, feats, ids, mask_scale=ms)
        for (m, s, ms), feats in results.items()
        if feats
    ]
    n_wider = sum(len(im.faces) for im in images if im.key.startswith("widerface/"))
    notes = [
        f"Face set: {len(ids)} faces >= {args.min_face_size:g} px ({n_wider} WIDER FACE dev305 "
        f"ground-truth faces{'' if args.all_faces else ' labelled clear and not heavily occluded'}, "
        f"with YuNet landmarks; {len(ids) - n_wider} faces of the crowd photos). "
        "Gallery = all their originals."
    ]
    paths = write_outputs(
        args.output,
        scores,
        sizes,
        args.title if args.title != "Privacy audit" else "Privacy sweep",
        notes,
    )
    for s in sorted(scores, key=lambda s: (s.method, s.mask_scale, s.strength)):
        print(
            f"{s.method:9s} {s.label:16s}  top-1 worst {s.top1_max.fmt()} ({s.worst_attacker})"
            f"  re-id {s.reid.fmt()}  impostor {s.impostor.fmt(2)}  {'pass' if s.passes else 'fail'}"
        )
    print(f"report: {paths['report']}")
    return 0


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from blurbeam.lab.reid.image_pairs import AuditInputError

    try:
        attackers = _attackers(args.attackers)
        if args.deblur:
            from blurbeam.lab.reid.attackers import load_deblur

            if load_deblur() is None:
                return _fail("--deblur: the deblur model or its packaged weights are not available")
        if args.sweep:
            return run_sweep_command(args, attackers, beam_args)
        return run_audit(args, beam_args, attackers)
    except (AuditInputError, ValueError) as exc:
        return _fail(" ".join(str(exc).split()))


def run_audit(args: argparse.Namespace, beam_args: list[str], attackers: list[str] | None) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from blurbeam.blur import BlurConfig
    from blurbeam.lab.reid.image_pairs import (
        AuditInputError,
        read_audit,
        tasks_from_audit,
        tasks_from_folders,
    )
    from blurbeam.lab.transforms.reid_audit import build

    if args.no_audit_record:
        if not (args.original and args.anonymized):
            raise AuditInputError("--no-audit-record needs --original and --anonymized")
        cfg = BlurConfig(args.method, args.strength)
        tasks, skipped = [], []
        for t in tasks_from_folders(args.original, args.anonymized, cfg):
            (skipped if isinstance(t, tuple) else tasks).append(t)
    else:
        source = args.audit or args.anonymized
        if not source:
            raise AuditInputError("give --anonymized (the anonymize output) or --audit")
        records = read_audit(source, args.run_id)
        tasks, skipped = tasks_from_audit(records, args.original, args.anonymized)
    if not tasks:
        raise AuditInputError(
            f"nothing to audit ({len(skipped)} image(s) skipped"
            + (f"; first: {skipped[0][1]}" if skipped else "")
            + ")"
        )
    args.attackers = attackers
    print(f"auditing {len(tasks)} image(s)", flush=True)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        build(p, tasks, skipped, args)
    from blurbeam.lab.reid.audit_report import OUTPUT_FILES
    from blurbeam.shards import join_output

    print(f"report: {join_output(args.output, OUTPUT_FILES['report'])}")
    return 0
