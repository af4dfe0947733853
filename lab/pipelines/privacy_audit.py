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
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from blurbeam.pipelines.scaffold import Command, Launch, Outcome, option

DEFAULT_MIN_FACE = 40.0


class PrivacyAuditOptions(PipelineOptions):
    """The flags of ``blurbeam privacy-audit`` (audit and sweep modes)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        from blurbeam.blur import METHODS
        from blurbeam.lab.reid.attackers import ATTACKERS

        option(parser, "output", help="directory for the report and Parquet")
        option(parser, "original", help="folder of the original images (audit: to re-map paths)")
        option(
            parser,
            "anonymized",
            help="the anonymize run's output directory (holds audit/*.parquet)",
        )
        option(parser, "audit", help="audit Parquet file, glob or directory (default: ANONYMIZED)")
        option(parser, "run-id", help="only this anonymize run's records")
        option(
            parser,
            "no-audit-record",
            action="store_true",
            help="pair images by relative path and re-detect faces on the originals",
        )
        option(parser, "method", choices=METHODS, default="gaussian", help="with --no-audit-record")
        option(parser, "strength", type=float, default=None, help="with --no-audit-record")
        option(
            parser,
            "min-face-size",
            type=float,
            default=DEFAULT_MIN_FACE,
            help=f"audit faces whose larger side is at least this (default {DEFAULT_MIN_FACE:g} px)",
        )
        option(
            parser,
            "attackers",
            default=None,
            help=f"comma-separated subset of {','.join(ATTACKERS)} (default: all that apply)",
        )
        option(
            parser,
            "deblur",
            action="store_true",
            help="add the deblur-model attacker (needs its packaged weights)",
        )
        option(parser, "title", default="Privacy audit", help="report title")
        sweep = parser.add_argument_group("sweep")
        option(sweep, "sweep", action="store_true", help="run the methods x strengths sweep")
        option(sweep, "shared", help="the shared data folder (default ../shared)")
        option(
            sweep,
            "settings",
            default=None,
            help="comma-separated METHOD:STRENGTH[:MASK_SCALE] list (mask scale default: the "
            "anonymize default; default list: the built-in grid)",
        )
        option(
            sweep,
            "all-faces",
            action="store_true",
            help="also WIDER faces labelled blurry or heavily occluded (default: clear faces only)",
        )
        option(sweep, "workers", type=int, default=1, help="sweep worker processes (DirectRunner)")
        option(
            sweep,
            "report-only",
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


@dataclass(frozen=True)
class AuditPlan:
    """The image pairs an audit compares and how (``reid_audit.build`` reads these fields)."""

    tasks: list[Any]
    skipped: list[Any]
    attackers: list[str] | None
    min_face_size: float
    deblur: bool
    output: str
    title: str


class PrivacyAudit(Command[AuditPlan]):
    name = "privacy-audit"
    options_class = PrivacyAuditOptions
    required = ("output",)

    def run(self, args: argparse.Namespace, beam_args: list[str]) -> int:
        if not args.sweep:
            return super().run(args, beam_args)
        try:
            return run_sweep_command(args, self._attackers(args), beam_args)
        except ValueError as exc:
            return _fail(" ".join(str(exc).split()))

    @staticmethod
    def _attackers(opts: Any) -> list[str] | None:
        attackers = _attackers(opts.attackers)
        if opts.deblur:
            from blurbeam.lab.reid.attackers import load_deblur

            if load_deblur() is None:
                raise ValueError(
                    "--deblur: the deblur model or its packaged weights are not available"
                )
        return attackers

    def plan(self, opts: PrivacyAuditOptions, launch: Launch) -> AuditPlan:
        from blurbeam.blur import BlurConfig
        from blurbeam.lab.reid.image_pairs import (
            AuditInputError,
            read_audit,
            tasks_from_audit,
            tasks_from_folders,
        )

        attackers = self._attackers(opts)
        if opts.no_audit_record:
            if not (opts.original and opts.anonymized):
                raise AuditInputError("--no-audit-record needs --original and --anonymized")
            cfg = BlurConfig(opts.method, opts.strength)
            tasks, skipped = [], []
            for t in tasks_from_folders(opts.original, opts.anonymized, cfg):
                (skipped if isinstance(t, tuple) else tasks).append(t)
        else:
            source = opts.audit or opts.anonymized
            if not source:
                raise AuditInputError("give --anonymized (the anonymize output) or --audit")
            records = read_audit(source, opts.run_id)
            tasks, skipped = tasks_from_audit(records, opts.original, opts.anonymized)
        if not tasks:
            raise AuditInputError(
                f"nothing to audit ({len(skipped)} image(s) skipped"
                + (f"; first: {skipped[0][1]}" if skipped else "")
                + ")"
            )
        return AuditPlan(
            tasks, skipped, attackers, opts.min_face_size, opts.deblur, opts.output, opts.title
        )

    def announce(self, ap: AuditPlan, launch: Launch) -> list[str]:
        return [f"auditing {len(ap.tasks)} image(s)"]

    def build(self, p: Any, ap: AuditPlan, progress_dir: str | None) -> Any:
        from blurbeam.lab.transforms.reid_audit import build

        return build(p, ap.tasks, ap.skipped, ap)

    def finish(self, ap: AuditPlan, launch: Launch, result: Any, wall_s: float) -> Outcome:
        from blurbeam.lab.reid.audit_report import OUTPUT_FILES
        from blurbeam.shards import join_output

        return Outcome({}, None, (f"report: {join_output(ap.output, OUTPUT_FILES['report'])}",))


COMMAND = PrivacyAudit()
#: Arguments the command does not declare go to Beam (runner flags); unknown ones are an error.
BEAM_OPTIONS = True
add_arguments = COMMAND.add_arguments
run = COMMAND.run
