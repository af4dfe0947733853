"""deploy/flink, deploy/k8s and deploy/airflow: the Flink compose file and its submit script, the
Kubernetes CronJob validated against the Kubernetes schema, and the Airflow DAGs run by a real
Airflow (`airflow dags test`) installed in a venv of its own."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import venv
from pathlib import Path

import apache_beam
import pytest
import yaml
from test_shards import face_image

from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines import report as report_cmd
from blurbeam.pipelines import scaffold

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
FLINK = DEPLOY / "flink"
K8S = DEPLOY / "k8s"
AIRFLOW = DEPLOY / "airflow"


def parser_flags(add_arguments) -> set[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {flag for a in parser._actions for flag in a.option_strings}


# ---------------------------------------------------------------------------------------------
# Flink


def compose() -> dict:
    return yaml.safe_load((FLINK / "docker-compose.yaml").read_text())


def task_managers(services: dict) -> list[str]:
    return [n for n, s in services.items() if s.get("command") == "taskmanager"]


def test_flink_job_server_stages_artifacts_on_a_volume_every_task_manager_mounts():
    services = compose()["services"]
    command = services["job-server"]["command"]
    [artifacts] = [c.split("=", 1)[1] for c in command if c.startswith("--artifacts-dir=")]
    volumes = services["job-server"]["volumes"]
    mounts = [v.split(":") for v in volumes if not v.startswith("$")]  # named volumes
    [(volume, target)] = [(src, dst) for src, dst in mounts if artifacts.startswith(dst)]
    assert volume in compose()["volumes"], "the artifacts dir must be a named (shared) volume"
    for tm in task_managers(services):
        assert f"{volume}:{target}" in services[tm]["volumes"], tm


def test_flink_data_is_at_the_same_path_in_every_container():
    services = compose()["services"]
    data = "${BLURBEAM_DATA:?set BLURBEAM_DATA to an absolute host directory}"
    for name, service in services.items():
        assert f"{data}:{data}" in service["volumes"], name


def test_flink_every_task_manager_has_its_own_worker_pool():
    doc = compose()
    services = doc["services"]
    tms = task_managers(services)
    assert len(tms) >= 2
    pools = {n: s for n, s in services.items() if s.get("command") == ["--worker_pool"]}
    assert sorted(p["network_mode"] for p in pools.values()) == sorted(
        f"service:{tm}" for tm in tms
    )
    launcher = services["launcher"]
    assert all(p["image"] == launcher["image"] for p in pools.values())
    assert launcher["network_mode"] == "service:job-server" and launcher["profiles"] == ["submit"]
    assert set(launcher["depends_on"]) >= set(pools)
    props = dict(
        line.split(": ", 1)
        for line in doc["x-flink-config"]["FLINK_PROPERTIES"].splitlines()
        if line.strip()
    )
    slots = int(props["taskmanager.numberOfTaskSlots"])
    assert int(props["parallelism.default"]) == len(tms) * slots
    submit = (FLINK / "submit.sh").read_text()
    assert f'"${{PARALLELISM:-{len(tms) * slots}}}"' in submit
    assert f'"${{SDK_WORKERS:-{slots}}}"' in submit


@pytest.fixture()
def fake_docker(tmp_path):
    """A `docker` on PATH that records its arguments and exits with $FAKE_DOCKER_RC_<command>."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "cmd = sys.argv[sys.argv.index('launcher') + 1] if 'launcher' in sys.argv else ''\n"
        "sys.exit(int(os.environ.get('FAKE_DOCKER_RC_' + cmd, '0')))\n"
    )
    script.chmod(0o755)
    data = (tmp_path / "data").resolve()
    data.mkdir()

    def run(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list]:
        calls.unlink(missing_ok=True)
        full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        full_env["BLURBEAM_DATA"] = str(data)
        full_env.update(env or {})
        res = subprocess.run(
            ["bash", str(FLINK / "submit.sh"), *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        made = [json.loads(ln) for ln in calls.read_text().splitlines()] if calls.exists() else []
        return res, made

    return data, run


def test_flink_submit_runs_the_launcher_service_then_the_report(fake_docker):
    data, run = fake_docker
    res, calls = run("--input", f"{data}/x/../images", f"--output={data}/out", "--skip-existing")
    assert res.returncode == 0, res.stderr
    prefix = ["compose", "-f", str(FLINK / "docker-compose.yaml"), "run", "--rm", "launcher"]
    anonymize, report = calls
    assert anonymize[: len(prefix)] == prefix and report[: len(prefix)] == prefix
    argv = anonymize[len(prefix) :]
    assert argv[0] == "anonymize"
    opts = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert opts["--runner"] == "PortableRunner" and opts["--environment_type"] == "EXTERNAL"
    assert opts["--environment_config"] == "localhost:50000"
    assert opts["--job_endpoint"] == "localhost:8099"  # the launcher shares the job server's net
    # paths reach the containers canonical, at the same place as on the host
    assert opts["--input"] == f"{data}/images" and opts["--output"] == f"{data}/out"
    assert argv[-1] == "--skip-existing"
    assert report[len(prefix) :] == ["report", "--output", f"{data}/out", "--verify"]
    for flag in re.findall(r"--[a-z][a-z_-]+", " ".join(argv)):
        known = parser_flags(anon.add_arguments)
        assert flag in known or flag in {
            "--runner",
            "--job_endpoint",
            "--environment_type",
            "--environment_config",
            "--parallelism",
            "--sdk_worker_parallelism",
        }, flag
    # object storage passes unchanged
    res, calls = run("--input", "s3://bucket/raw", "--output", "gs://bucket/out")
    assert res.returncode == 0 and calls[0][-4:] == [
        "--input",
        "s3://bucket/raw",
        "--output",
        "gs://bucket/out",
    ]


def test_flink_submit_fails_loudly(fake_docker, tmp_path):
    data, run = fake_docker
    outside = tmp_path / "elsewhere"
    bad = [
        (["--input", str(outside), "--output", f"{data}/out"], {}),
        (["--input", f"{data}/../elsewhere", "--output", f"{data}/out"], {}),
        (["--input", "images", "--output", f"{data}/out"], {}),
        (["--input", "memory://x", "--output", f"{data}/out"], {}),
        (["--input", f"{data}/images"], {}),
        (["--input", f"{data}/images", "--output", f"{data}/out"], {"BLURBEAM_DATA": ""}),
        (["--input", f"{data}/in", "--output", f"{data}/out"], {"BLURBEAM_DATA": f"{data}/.."}),
    ]
    for args, env in bad:
        res, calls = run(*args, env=env)
        assert res.returncode == 2 and calls == [], (args, env, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("deploy/flink/submit.sh: error: "), res.stderr
    # anonymize's failure is the script's, and the report still runs
    res, calls = run(
        "--input", f"{data}/in", "--output", f"{data}/out", env={"FAKE_DOCKER_RC_anonymize": "1"}
    )
    assert res.returncode == 1 and [c[6] for c in calls] == ["anonymize", "report"]
    res, calls = run(
        "--input", f"{data}/in", "--output", f"{data}/out", env={"FAKE_DOCKER_RC_report": "1"}
    )
    assert res.returncode == 1 and len(calls) == 2


# ---------------------------------------------------------------------------------------------
# Kubernetes

K8S_VERSION = "1.31"  # podFailurePolicy is GA from 1.31


def k8s_validate(doc: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def cronjob() -> dict:
    [job] = list(yaml.safe_load_all((K8S / "cronjob.yaml").read_text()))
    return job


def test_kubernetes_manifests_match_the_schema():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            k8s_validate(doc)


def test_cronjob_does_not_retry_data_errors_and_runs_locked_down():
    job = cronjob()
    spec = job["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    jspec = spec["jobTemplate"]["spec"]
    assert 1 <= jspec["backoffLimit"] <= 3
    pod = jspec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy needs it
    [container] = pod["containers"]
    [fail] = [r for r in jspec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail["onExitCodes"] == {
        "containerName": container["name"],
        "operator": "In",
        "values": [1, 2],
    }
    # identity: a ServiceAccount (workload identity), no static keys anywhere
    assert pod["serviceAccountName"] == "blurbeam"
    text = (K8S / "cronjob.yaml").read_text()
    assert "secretRef" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    sa = yaml.safe_load((K8S / "serviceaccount.yaml").read_text())
    assert sa["kind"] == "ServiceAccount" and sa["metadata"]["name"] == "blurbeam"
    # non-root, read-only root filesystem with /tmp on an emptyDir, no capabilities
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    # CPU: WORKERS processes x WORKER_THREADS threads, requested and limited alike
    cpus = int(env["WORKERS"]) * int(env["WORKER_THREADS"])
    res = container["resources"]
    assert int(res["requests"]["cpu"]) == int(res["limits"]["cpu"]) == cpus
    assert res["requests"]["memory"] and res["limits"]["memory"]
    script = " ".join(container["args"])
    assert '--direct_num_workers "$WORKERS"' in script
    assert '--worker-threads "$WORKER_THREADS"' in script
    # the commands' flags are real options (--verify: the report's coverage and chain check)
    anonymize, report = script.split("status=$?;")
    assert "blurbeam anonymize" in anonymize and "--skip-existing" in anonymize
    assert "blurbeam report" in report and "--verify" in report
    known = parser_flags(anon.add_arguments) | {
        "--direct_num_workers",
        "--direct_running_mode",
    }
    for flag in re.findall(r"--[a-z][a-z_-]+", anonymize):
        assert flag in known, flag
    for flag in re.findall(r"--[a-z][a-z_-]+", report):
        assert flag in parser_flags(report_cmd.add_arguments) | {"--verify"}, flag
    # the job exits with anonymize's code when it failed, else the report's
    for anon_rc, report_rc, want in [(0, 0, 0), (1, 0, 1), (0, 1, 1), (137, 1, 137), (2, 0, 2)]:
        fake = 'blurbeam() { if [ "$1" = anonymize ]; then return $A; else return $R; fi; }; '
        res = subprocess.run(
            ["sh", "-c", fake + script],
            env={**os.environ, "A": str(anon_rc), "R": str(report_rc)},
            capture_output=True,
            timeout=30,
        )
        assert res.returncode == want, (anon_rc, report_rc)


def run_deploy_sh(env: dict, *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_ROLE_ARN", "GCP_SERVICE_ACCOUNT")}
    return subprocess.run(
        ["bash", str(K8S / "deploy.sh"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deploy_sh_renders_the_image_build_sh_pushes_and_workload_identity():
    if not shutil.which("kubectl"):
        pytest.skip("kubectl (its built-in kustomize renders the overlay) is not installed")
    build = (DEPLOY / "dataflow" / "build.sh").read_text()
    assert "IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/$REPO/blurbeam:$VERSION}" in build
    image = "europe-west1-docker.pkg.dev/proj/images/blurbeam:0.1.0"
    env = {
        "IMAGE": image,
        "INPUT": "s3://datasets/raw",
        "OUTPUT": "s3://datasets/anonymized",
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/blurbeam",
        "NAMESPACE": "privacy",
    }
    res = run_deploy_sh(env, "--render")
    assert res.returncode == 0, res.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(res.stdout)}
    assert set(docs) == {"ServiceAccount", "ConfigMap", "CronJob"}
    for doc in docs.values():
        k8s_validate(doc)
        assert doc["metadata"]["namespace"] == "privacy"
    sa = docs["ServiceAccount"]["metadata"]["annotations"]
    assert sa == {"eks.amazonaws.com/role-arn": env["AWS_ROLE_ARN"]}
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == image
    [ref] = container["envFrom"]
    assert ref["configMapRef"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert docs["ConfigMap"]["data"] == {
        "INPUT": env["INPUT"],
        "OUTPUT": env["OUTPUT"],
        "MAX_ERROR_RATE": "0.01",
    }
    gke = {**env, "AWS_ROLE_ARN": "", "GCP_SERVICE_ACCOUNT": "bb@proj.iam.gserviceaccount.com"}
    gke["IMAGE"] = "registry.local:5000/blurbeam@sha256:" + "a" * 64
    res = run_deploy_sh(gke, "--render")
    assert res.returncode == 0, res.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(res.stdout)}
    assert docs["ServiceAccount"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": gke["GCP_SERVICE_ACCOUNT"]
    }
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == gke["IMAGE"]
    for broken in (
        {"AWS_ROLE_ARN": ""},  # no identity
        {"IMAGE": "registry.local:5000/blurbeam"},  # no tag
        {"OUTPUT": "/data/out"},  # not object storage
        {"MAX_ERROR_RATE": "5"},
    ):
        res = run_deploy_sh({**env, **broken}, "--render")
        assert res.returncode == 2 and res.stdout == "", broken
        assert res.stderr.startswith("deploy/k8s/deploy.sh: error: "), res.stderr


# ---------------------------------------------------------------------------------------------
# Airflow

AIRFLOW_PINS = (
    "apache-airflow==3.3.2",
    "apache-airflow-core==3.3.2",
    "apache-airflow-task-sdk==1.3.2",
    "apache-airflow-providers-standard==1.21.0",
    "apache-airflow-providers-apache-beam==6.3.1",
    "apache-airflow-providers-google==22.8.0",
)


def load_common():
    spec = importlib.util.spec_from_file_location("blurbeam_common", AIRFLOW / "blurbeam_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airflow_run_id_is_unique_per_run_and_try():
    common = load_common()
    ids = {
        common.blurbeam_run_id(run, attempt)
        for run in ("scheduled__2026-01-02T02:00:00+00:00", "manual__2026-01-02T02:00:00+00:00")
        for attempt in (1, 2, 3)
    }
    assert len(ids) == 6
    long_run = "x" * 300 + "/.."
    for run_id in [*ids, common.blurbeam_run_id(long_run, 1), common.blurbeam_run_id("é", 1)]:
        assert scaffold.RUN_ID_PATTERN.fullmatch(run_id), run_id
    assert common.blurbeam_run_id("a", 1) == common.blurbeam_run_id("a", 1)
    assert common.blurbeam_run_id("a:b", 1) != common.blurbeam_run_id("a-b", 1)


def pypi_reachable(python: Path, tmp: Path) -> bool:
    res = subprocess.run(
        [str(python), "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), AIRFLOW_PINS[3]],
        capture_output=True,
        timeout=300,
    )
    return res.returncode == 0


@pytest.fixture(scope="module")
def airflow_venv(tmp_path_factory) -> Path:
    """Airflow and its providers, pinned, in a venv of their own (cached across runs): it sees
    the system's site-packages (apache-beam 2.77.0 among them) and shadows what Airflow needs
    in other versions, leaving the project's environment alone."""
    key = hashlib.sha256(
        "\n".join([sys.version, *AIRFLOW_PINS, "apache-beam==" + apache_beam.__version__]).encode()
    ).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "blurbeam-test"
    home = cache / f"airflow-venv-{key}"
    if (home / "ready").exists():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f"airflow-venv-{key}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(building)
    python = building / "bin" / "python"
    res = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--progress-bar",
            "off",
            *AIRFLOW_PINS,
            f"apache-beam=={apache_beam.__version__}",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if res.returncode != 0:
        reachable = pypi_reachable(python, tmp_path_factory.mktemp("pypi"))
        shutil.rmtree(building, ignore_errors=True)
        if not reachable:
            pytest.skip("PyPI cannot be reached: Airflow cannot be installed for this test")
        pytest.fail(f"installing Airflow failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    (building / "ready").write_text("\n".join(AIRFLOW_PINS))
    try:
        building.rename(home)
    except OSError:  # another run finished first: use its venv
        shutil.rmtree(building, ignore_errors=True)
    return home


def airflow_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    dags = tmp_path / "dags"
    shutil.copytree(AIRFLOW, dags, ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        BLURBEAM_PYTHON=sys.executable,
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )
    return env


def run_airflow(airflow: Path, env: dict, *args: str, timeout: int = 600):
    return subprocess.run(
        # `python -m airflow`: the venv was built under another name, so its scripts' #! lines
        # name an interpreter path that is gone
        [str(airflow / "bin" / "python"), "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_airflow_dag_run_fails_when_anonymize_fails(airflow_venv, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "face.jpg").write_bytes(face_image(1))
    (src / "corrupt.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    env = airflow_env(
        tmp_path,
        BLURBEAM_AIRFLOW_RETRIES="0",
        AIRFLOW_VAR_BLURBEAM_INPUT=str(src),
        AIRFLOW_VAR_BLURBEAM_OUTPUT=str(out),
        # one image in two fails: anonymize exits 1
        AIRFLOW_VAR_BLURBEAM_MAX_ERROR_RATE="0",
    )
    res = run_airflow(airflow_venv, env, "db", "migrate", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_airflow(airflow_venv, env, "dags", "test", "blurbeam_nightly_direct", "2026-01-02")
    log = res.stdout + res.stderr
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        runs = db.execute("SELECT dag_id, state FROM dag_run").fetchall()
        tasks = dict(db.execute("SELECT task_id, state FROM task_instance").fetchall())
    assert runs == [("blurbeam_nightly_direct", "failed")], log[-5000:]
    assert res.returncode != 0
    assert tasks["anonymize"] == "failed" and tasks["fail_if_any_failed"] == "failed", tasks
    assert tasks["report"] in ("success", "failed"), tasks  # it ran after the failure
    # anonymize really ran the pipeline, under a run id of this try, and failed on the error rate
    assert "exceeds --max-error-rate" in log, log[-5000:]
    [audit] = (out / "audit").glob("run-airflow-*-try1-*.parquet")
    records = anon.read_run_records(str(out), audit.name[4:].split("-00000-")[0]).to_pylist()
    assert sorted(r["status"] for r in records) == ["error", "ok"]
    assert not (out / "corrupt.jpg").exists() and (out / "face.jpg").exists()


DAG_CHECK = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
sys.path.insert(0, sys.argv[1])  # as Airflow puts its DAG folder on sys.path
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        info = {
            "type": type(t).__name__,
            "module": type(t).__module__,
            "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
            "downstream": sorted(t.downstream_task_ids),
            "retries": t.retries,
        }
        for attr in ("runner", "py_file", "py_interpreter", "pipeline_options",
                     "default_pipeline_options", "body", "append_job_name",
                     "wait_until_finished", "cancel_on_kill", "drain_pipeline", "deferrable",
                     "cancel_timeout", "location", "project_id", "bash_command", "env"):
            if hasattr(t, attr):
                info[attr] = getattr(t, attr)
        tasks[t.task_id] = info
    out["dags"][dag_id] = {
        "max_active_runs": dag.max_active_runs, "catchup": dag.catchup, "tasks": tasks
    }
print(json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_airflow_dags_import_and_the_dataflow_operator_cancels_and_names_each_try(
    airflow_venv, tmp_path
):
    env = airflow_env(tmp_path)
    res = subprocess.run(
        [str(airflow_venv / "bin" / "python"), "-c", DAG_CHECK, env["AIRFLOW__CORE__DAGS_FOLDER"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    dags = found["dags"]
    assert set(dags) == {
        "blurbeam_nightly_direct",
        "blurbeam_nightly_dask",
        "blurbeam_nightly_flink",
        "blurbeam_nightly_dataflow",
    }
    common = load_common()
    for dag_id, dag in dags.items():
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False, dag_id
        tasks = dag["tasks"]
        assert set(tasks) == {"anonymize", "report", "fail_if_any_failed"}, dag_id
        assert tasks["anonymize"]["downstream"] == ["fail_if_any_failed", "report"]
        assert tasks["report"]["downstream"] == ["fail_if_any_failed"]
        assert tasks["report"]["trigger_rule"] == "all_done"
        assert tasks["report"]["module"].startswith("airflow.providers.standard.")
        assert "report --output" in tasks["report"]["bash_command"]
        assert "--verify" in tasks["report"]["bash_command"]
        assert tasks["fail_if_any_failed"]["trigger_rule"] == "one_failed"
        assert tasks["fail_if_any_failed"]["downstream"] == []
        anonymize = tasks["anonymize"]
        if dag_id == "blurbeam_nightly_dataflow":
            continue
        assert anonymize["type"] == "BeamRunPythonPipelineOperator"
        assert anonymize["py_file"] == str(
            Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "anonymize_entry.py"
        )
        assert anonymize["py_interpreter"] == sys.executable
        options = {**anonymize["default_pipeline_options"], **anonymize["pipeline_options"]}
        assert options["run_id"] == common.RUN_ID and options["skip_existing"] is True
        known = {f[2:] for f in parser_flags(anon.add_arguments)}
        beam_flags = {
            "direct_num_workers",
            "direct_running_mode",
            "dask_client_address",
            "job_endpoint",
            "environment_type",
            "environment_config",
            "sdk_worker_parallelism",
        }
        assert set(options) <= known | beam_flags, set(options) - known - beam_flags
    flink = dags["blurbeam_nightly_flink"]["tasks"]["anonymize"]
    assert flink["runner"] == "PortableRunner"
    assert flink["default_pipeline_options"]["environment_config"] == "localhost:50000"

    dataflow = dags["blurbeam_nightly_dataflow"]["tasks"]["anonymize"]
    assert dataflow["type"] == "DataflowStartFlexTemplateOperator"
    assert dataflow["module"].startswith("airflow.providers.google.cloud.operators.dataflow")
    assert dataflow["cancel_on_kill"] is True and dataflow["drain_pipeline"] is False
    assert dataflow["wait_until_finished"] is True and dataflow["deferrable"] is False
    assert dataflow["append_job_name"] is True and dataflow["cancel_timeout"] > 0
    launch = dataflow["body"]["launchParameter"]
    assert launch["containerSpecGcsPath"] == "{{ var.value.blurbeam_template }}"
    params = launch["parameters"]
    assert params["run_id"] == common.RUN_ID and params["skip_existing"] == "true"
    meta = json.loads((DEPLOY / "dataflow" / "metadata.json").read_text())
    assert set(params) <= {p["name"] for p in meta["parameters"]}
    assert all(isinstance(v, str) for v in params.values())
    build = (DEPLOY / "dataflow" / "build.sh").read_text()
    assert "gs://$BUCKET/templates/blurbeam-anonymize-$VERSION.json" in build
