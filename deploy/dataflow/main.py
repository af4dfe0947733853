"""Dataflow Flex Template entry point: builds the anonymize pipeline and submits it.

The launcher passes every template parameter as ``--name=value`` (see metadata.json). Boolean flags
arrive as ``--skip_existing=true``/``false`` and are turned into the bare flag here. Unlike
``blurbeam anonymize``, this does not wait for the job: a Flex Template launcher must return once
the job is submitted. ``blurbeam report --output ...`` gives the run's totals afterwards.
"""

from __future__ import annotations

import argparse
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from blurbeam.pipelines import anonymize as anon

TRUE = ("true", "1", "yes")


def boolean_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of the store_true flags (both --a-b and --a_b spellings)."""
    return {
        s
        for a in parser._actions
        if isinstance(a, argparse._StoreTrueAction)
        for s in a.option_strings
    }


def normalize(argv: list[str], flags: set[str]) -> list[str]:
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name in flags:
            if value.strip().lower() in TRUE:
                out.append(name)
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blurbeam-flex-template")
    anon.add_arguments(parser)
    argv = normalize(list(sys.argv[1:] if argv is None else argv), boolean_flags(parser))
    args, beam_args = parser.parse_known_args(argv)
    beam_args, slices = anon.prepare_runner(beam_args, args.input_slices)
    options = PipelineOptions(beam_args, **vars(args))
    rp = anon.plan(options.view_as(anon.AnonymizeOptions))
    rp.input_slices = slices
    p = beam.Pipeline(options=options)
    anon.build(p, rp)
    result = p.run()
    print(f"submitted run {rp.run_id}: audit under {rp.output}/audit, state {result.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
