"""Generate the Flex Template's metadata.json from ``blurbeam anonymize``'s options class.

    python deploy/dataflow/make_metadata.py            # rewrite deploy/dataflow/metadata.json
    python deploy/dataflow/make_metadata.py --check    # exit 1 if the committed file is stale

Every flag of ``blurbeam.pipelines.anonymize.AnonymizeOptions`` becomes a template parameter
(its dest as the name, its help as the help text) with a regex the launch is validated against:
booleans ``true``/``false``, choices, non-negative numbers, run ids that name files safely.
A flag whose type has no rule here stops the generator, so a new flag cannot slip through as
free text. tests/test_deploy.py checks that the committed file equals this output.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

from blurbeam.pipelines import anonymize as anon

HERE = Path(__file__).resolve().parent
METADATA = HERE / "metadata.json"

NAME = "blurbeam anonymize"
DESCRIPTION = (
    "Detect and blur every face in an image dataset (plain files, WebDataset tar, Parquet or "
    "TFRecord shards on GCS, S3 or Azure) and write one Parquet audit record per image under "
    "the output. Workers run the image the template was built from."
)
#: Flags that do nothing in a template, with the reason.
EXCLUDED = {
    "progress": "a live progress line on the launcher's terminal: the template launcher returns "
    "once the job is submitted, and Dataflow shows the job's progress itself",
}
#: What a flag does differently when the job runs from the template.
TEMPLATE_NOTES = {
    "max_error_rate": "In the template, the job fails once every audit record is written when "
    "the fraction of error records is higher.",
}
BOOLEAN = r"^(true|false)$"
NON_NEGATIVE_INT = r"^[0-9]+$"
NON_NEGATIVE_FLOAT = r"^[0-9]*\.?[0-9]+$"
#: Regexes by the name of a flag's argparse type (the parsing functions of scaffold.py). A plain
#: float or int is taken as non-negative: no flag of the pipeline takes a negative number.
BY_TYPE = {
    "int": NON_NEGATIVE_INT,
    "non_negative_int": NON_NEGATIVE_INT,
    "positive_int": r"^0*[1-9][0-9]*$",
    "float": NON_NEGATIVE_FLOAT,
    "non_negative": NON_NEGATIVE_FLOAT,
    "finite_float": r"^-?[0-9]*\.?[0-9]+$",
    "fraction": r"^(0*\.[0-9]+|0+(\.[0-9]*)?|1(\.0*)?)$",
}
#: Regexes by flag, for flags whose type alone does not give one.
BY_NAME: dict[str, str | None] = {
    "input": None,
    "output": None,
    "detector": r"^[A-Za-z0-9_.-]+$",
    "video_detector": r"^[A-Za-z0-9_.-]+$",
    "detector_option": r"^[A-Za-z0-9_]+=\S.*$",
    "image_column": None,
    "allow_image_field": r"^\S+$",
    "corrections": None,
}


def _main_module() -> Any:
    spec = importlib.util.spec_from_file_location("flex_template_main", HERE / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    anon.AnonymizeOptions._add_argparse_args(parser)
    return parser


def regex(action: argparse.Action) -> str | None:
    if action.dest == "run_id":
        return _main_module().RUN_ID_PATTERN
    if isinstance(action, argparse._StoreTrueAction):
        return BOOLEAN
    if action.choices:
        return "^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"
    if action.dest in BY_NAME:
        return BY_NAME[action.dest]
    type_name = getattr(action.type, "__name__", None)
    if type_name in BY_TYPE:
        return BY_TYPE[type_name]
    raise SystemExit(
        f"make_metadata.py: no template regex for --{action.dest} (type {type_name}): "
        "add it to BY_TYPE or BY_NAME"
    )


def label(action: argparse.Action) -> str:
    return action.dest.replace("_", " ").capitalize()


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    text = " ".join(text.split())
    if not text:
        if not action.choices:
            raise SystemExit(f"make_metadata.py: --{action.dest} has no help text")
        text = label(action)  # the choices, listed below, say the rest
    if text.split()[0].isalpha():  # not a code name such as cv2.setNumThreads
        text = text[0].upper() + text[1:]
    if not text.endswith("."):
        text += "."
    if isinstance(action, argparse._StoreTrueAction):
        text += " true or false (default false)."
    elif action.choices:
        text += f" One of {', '.join(map(str, action.choices))} (default {action.default})."
    if action.dest in TEMPLATE_NOTES:
        text += " " + TEMPLATE_NOTES[action.dest]
    return text


def metadata() -> dict[str, Any]:
    parser = options_parser()
    params = []
    for action in parser._actions:
        if not action.option_strings or action.dest in EXCLUDED:
            continue
        param: dict[str, Any] = {
            "name": action.dest,
            "label": label(action),
            "helpText": help_text(parser, action),
            "isOptional": action.dest not in anon.COMMAND.required,
        }
        rx = regex(action)
        if rx is not None:
            param["regexes"] = [rx]
        params.append(param)
    return {"name": NAME, "description": DESCRIPTION, "streaming": False, "parameters": params}


def render() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if metadata.json is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if METADATA.read_text() != text:
            print(
                f"{METADATA} is stale: run python deploy/dataflow/make_metadata.py", file=sys.stderr
            )
            return 1
        return 0
    METADATA.write_text(text)
    print(f"wrote {METADATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
