"""The run scaffold's options classes and the audit layout: several pipelines' options in one
process (Beam parses every PipelineOptions subclass in one parser), each command's flags its own,
and the layout's names for what the writers write."""

from __future__ import annotations

import argparse
import fnmatch

from apache_beam.options.pipeline_options import PipelineOptions

from blurbeam.lab.pipelines import evaluate_detection, privacy_audit
from blurbeam.pipelines import anonymize, deblur, scaffold
from blurbeam.pipelines.cli import main as cli_main
from blurbeam.schemas import layout

COMMANDS = (anonymize, deblur, evaluate_detection, privacy_audit)


def own_parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser


def test_every_pipeline_has_an_options_class_beam_can_parse_with_the_others():
    classes = {m.COMMAND.options_class for m in COMMANDS}
    assert len(classes) == len(COMMANDS) and all(issubclass(c, PipelineOptions) for c in classes)
    # shared flags (--output, --detector, --min-face-size ...) do not clash in Beam's one parser
    everything = PipelineOptions(["--runner", "DirectRunner"]).get_all_options()
    assert {"output", "detector", "images", "attackers", "whole_image"} <= set(everything)


def test_a_shared_flag_keeps_each_commands_own_default_and_check():
    argv = ["--input", "in", "--output", "out"]
    anon = PipelineOptions(argv).view_as(anonymize.AnonymizeOptions)
    audit = PipelineOptions(["--output", "out"]).view_as(privacy_audit.PrivacyAuditOptions)
    assert anon.min_face_size == 0.0 and audit.min_face_size == privacy_audit.DEFAULT_MIN_FACE
    assert own_parser(anonymize).parse_args([*argv, "--feather", "0.5"]).feather == 0.5
    for module in (anonymize, deblur):
        parser = own_parser(module)
        required = {a.dest for a in parser._actions if a.required}
        assert required == {"input", "output"}, module.__name__


def test_another_commands_flag_is_unknown_to_a_command(tmp_path, capsys):
    argv = ["anonymize", "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    assert cli_main([*argv, "--whole-image"]) == 2  # deblur's flag, deblur imported above
    err = capsys.readouterr().err
    assert "unrecognized argument --whole-image" in err and len(err.strip().splitlines()) == 1


def test_audit_glob_names_what_the_audit_writer_writes_and_only_that_run():
    prefix = layout.audit_prefix("/out", "a")
    part = layout.part_files(prefix, 0, 2)
    assert part == "/out/audit/run-a-00000-of-00002.parquet"
    assert fnmatch.fnmatch(part, layout.audit_glob("/out", "a"))
    assert fnmatch.fnmatch(part, layout.audit_glob("/out"))
    other = layout.part_files(layout.audit_prefix("/out", "ab"), 0, 1)
    assert not fnmatch.fnmatch(other, layout.audit_glob("/out", "a"))
    assert layout.attestation("memory://b/out/", "a") == "memory://b/out/runs/a.json"
    assert all(f.startswith(layout.OWN_FILES) for f in (
        layout.attestation("", "a"), layout.done_index(""), layout.corrections("", "a"),
        layout.review_site("") + "/", layout.run_summary(""), *layout.report_files(""),
        layout.audit_glob(""),
    ))  # fmt: skip


def test_run_ids_are_checked_and_fresh_ones_match_the_rule():
    fresh = {scaffold.new_run_id() for _ in range(3)}
    assert len(fresh) == 3 and all(scaffold.RUN_ID_PATTERN.fullmatch(r) for r in fresh)
    for bad in ("../x", "a/b", "", "-x", "x" * 129):
        try:
            scaffold.check_run_id(bad)
        except ValueError as exc:
            assert "--run-id" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    scaffold.check_run_id(None)
    scaffold.check_run_id("nightly-2026.12.04_1")
