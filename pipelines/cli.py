"""The ``blurbeam`` command.

Each subcommand is a module of ``blurbeam.pipelines`` with two functions:
``add_arguments(parser)`` and ``run(args, beam_args) -> int`` (the exit code). ``beam_args`` are
the arguments argparse did not recognise; they go to Beam's PipelineOptions (``--runner``,
``--direct_num_workers`` ...). Modules are imported only when their command runs, so
``blurbeam anonymize --detector yunet`` never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
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
        "blurbeam.pipelines.privacy_audit",
        "measure whether anonymized faces can still be recognised (and the defaults sweep)",
    ),
    "evaluate": (
        "blurbeam.pipelines.evaluate",
        "WIDER FACE AP, blur recall and cost of a detector",
    ),
    "train-deblur": ("blurbeam.pipelines.train_deblur", "train the face-deblurring network on CPU"),
    "evaluate-deblur": (
        "blurbeam.pipelines.evaluate_deblur",
        "benchmark face deblurring against the baselines",
    ),
    "deblur": ("blurbeam.pipelines.deblur", "detect faces in images and restore (deblur) them"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"blurbeam {name}", description=COMMANDS[name][1])
    module.add_arguments(cmd_parser)
    args, beam_args = cmd_parser.parse_known_args(argv[1:])
    return int(module.run(args, beam_args) or 0)


if __name__ == "__main__":
    sys.exit(main())
