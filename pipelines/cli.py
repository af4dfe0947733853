"""blurbeam: find and blur every face in an image dataset, with a Parquet audit record per input.

Each subcommand is a module of ``blurbeam.pipelines`` with two functions:
``add_arguments(parser)`` and ``run(args, beam_args) -> int`` (the exit code). ``beam_args`` are
the arguments argparse did not recognise: for a module that sets ``BEAM_OPTIONS = True`` they go
to Beam's PipelineOptions (``--runner``, ``--direct_num_workers`` ...) once every one of them is
known to Beam; anything unknown (a misspelled flag) is an error, exit 2, naming the closest valid
flag. Modules are imported only when their command runs, so ``blurbeam anonymize --detector
yunet`` never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import sys

# name -> (module, one-line help). A new command is a new module plus one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "anonymize": ("blurbeam.pipelines.anonymize", "detect and blur faces in an image dataset"),
    "demo": ("blurbeam.pipelines.demo", "build a small sample dataset and anonymize it"),
    "report": (
        "blurbeam.pipelines.report",
        "per-run totals, errors and input coverage of an output",
    ),
    "privacy-audit": (
        "blurbeam.lab.pipelines.privacy_audit",
        "measure whether anonymized faces can still be recognised (and the defaults sweep)",
    ),
    "evaluate": (
        "blurbeam.lab.pipelines.evaluate_detection",
        "WIDER FACE AP, blur recall and cost of a detector",
    ),
    "train-deblur": (
        "blurbeam.lab.pipelines.train_deblur",
        "train the face-deblurring network on CPU",
    ),
    "train-edge": (
        "blurbeam.lab.pipelines.train_edge",
        "train or export the learned edge anonymizer",
    ),
    "evaluate-deblur": (
        "blurbeam.lab.pipelines.evaluate_deblur",
        "benchmark face deblurring against the baselines",
    ),
    "deblur": ("blurbeam.pipelines.deblur", "detect faces in images and restore (deblur) them"),
    "review": ("blurbeam.pipelines.review", "an HTML review site of an output, with corrections"),
    "stream": ("blurbeam.pipelines.stream", "anonymize a video as a live stream, bounded latency"),
}


class _DropBeamImportNoise(logging.Filter):
    """Beam logs "apitools not found" on import when the GCP extras are absent; that is
    expected here and says nothing about the command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _beam_parser(args: list[str]) -> argparse.ArgumentParser:
    """A parser that knows every flag of every PipelineOptions subclass, as Beam builds it,
    except blurbeam's own: a command's flags are its own parser's, and another command's flag
    is as unknown to it as a misspelled one."""
    from apache_beam.options import pipeline_options as po

    if any("dask" in a.lower() for a in args):
        with contextlib.suppress(ImportError):  # registers DaskOptions
            import apache_beam.runners.dask.dask_runner  # noqa: F401
    parser = po._BeamArgumentParser(allow_abbrev=False)
    subset: dict[str, type] = {}
    for cls in po.PipelineOptions.__subclasses__():
        if not cls.__module__.startswith("blurbeam."):
            subset.setdefault(str(cls), cls)
    for cls in subset.values():
        cls._add_argparse_args(parser)
    return parser


def unknown_flags(
    rest: list[str], beam: bool, own: argparse.ArgumentParser
) -> tuple[list[str], list[str]]:
    """The arguments in ``rest`` that nobody knows, and the flags they could have meant."""
    known = [s for a in own._actions for s in a.option_strings]
    if beam:
        parser = _beam_parser(rest)
        _, unknown = parser.parse_known_args(rest)
        known += [s for a in parser._actions for s in a.option_strings]
    else:
        unknown = list(rest)
    return unknown, known


def _reject(prog: str, unknown: list[str], known: list[str]) -> int:
    flag = next((u for u in unknown if u.startswith("-")), unknown[0])
    name = flag.split("=", 1)[0]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    what = "unrecognized argument" if flag.startswith("-") else "unexpected value"
    print(f"{prog}: error: {what} {name}{hint}", file=sys.stderr)
    return 2


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block): ``prog: error: message``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def console() -> None:
    """The ``blurbeam`` command: ``main``, then the end of the process without the interpreter's
    teardown of extension modules.

    Python's own shutdown steps run as usual and in its order: the threads that are not daemons
    are joined, then the ``atexit`` handlers (temporary directories, logging) run, and the
    output streams are flushed. What is skipped is the C-level finalization after them, where,
    after a run on the local runner's worker processes, a native thread of an extension could
    abort the process ("terminate called without an active exception", exit 134) under heavy
    load, turning a finished run into a failed job."""
    import atexit
    import threading

    code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe or stream: nothing more can reach it
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger().addFilter(_DropBeamImportNoise())
    parser = argparse.ArgumentParser(prog="blurbeam", description=__doc__.splitlines()[0])
    from blurbeam import __version__

    parser.add_argument("--version", action="version", version=f"blurbeam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help / version / the error for an unknown command
        parser.print_help()
        return 2
    name = argv[0]
    from blurbeam.extras import MissingExtra, require_command

    try:
        require_command(name)
        module = importlib.import_module(COMMANDS[name][0])
    except MissingExtra as exc:
        return _missing_extra(name, exc)
    cmd_parser = OneLineParser(
        prog=f"blurbeam {name}", description=COMMANDS[name][1], allow_abbrev=False
    )
    module.add_arguments(cmd_parser)
    try:
        args, beam_args = cmd_parser.parse_known_args(argv[1:])
    except SystemExit as exc:  # --help, or a bad value (already printed on one line)
        return int(exc.code or 0)
    unknown, known = unknown_flags(beam_args, getattr(module, "BEAM_OPTIONS", False), cmd_parser)
    if unknown:
        return _reject(cmd_parser.prog, unknown, known)
    try:
        return int(module.run(args, beam_args) or 0)
    except MissingExtra as exc:  # an optional feature that an argument asked for
        return _missing_extra(name, exc)


def _missing_extra(command: str, exc: Exception) -> int:
    print(f"blurbeam {command}: error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
