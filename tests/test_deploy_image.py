"""The worker image, emulated without a container engine.

No docker daemon or registry is reachable here, so ``image`` rebuilds deploy/Dockerfile's file
layout in a temp dir, following the Dockerfile itself: its COPY lines (container paths mapped
under a temp root), its RUN line (the same install script, same arguments), its WORKDIR, ARG and
ENV. The Python is a ``python -m venv --system-site-packages`` virtualenv: it stands for Beam's
SDK image, which already has apache-beam and the heavy dependencies (TensorFlow, onnxruntime,
OpenCV); an editable install of this checkout, which no image has, is hidden from it. The RUN
step installs from the package index like ``docker build`` does.

Then, from that layout: the Flex Template launcher (``python main.py`` in the working
directory) runs a job, and a real portable job runs on Beam's job service with an EXTERNAL
environment served by Beam's worker pool, started from the image's working directory with the
image's Python: the Flink topology (job server + SDK worker pool sidecar) minus the Flink JVM.
Only loopback addresses are used; every process is killed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_shards import face_image

from blurbeam.pipelines import anonymize as anon

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
#: What build.sh passes as the image's own reference.
IMAGE_REF = "registry.invalid/blurbeam:emulated"

#: Run in the virtualenv at start-up: drop the import hooks of editable installs (this
#: checkout's), so the virtualenv sees only what the image's install step put there.
HIDE_EDITABLE = """import sys
sys.meta_path[:] = [
    f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")
]
"""


@dataclass
class Image:
    root: Path  # stands for the container's /
    python: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)  # the image's ENV, plus the venv on PATH
    site_packages: Path | None = None

    def host(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile line after the last FROM, continuations
    joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    return [tuple(ln.split(None, 1)) for ln in lines[last_from + 1 :]]  # type: ignore[misc]


def allowed_by_dockerignore(source: str) -> bool:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return f"!{source}" in patterns or f"!{source}/" in patterns


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
        shutil.copy2(src, dst)


def _expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], value)


def build_image(base: Path, build_args: dict[str, str]) -> Image:
    """deploy/Dockerfile's layout under ``base``: the same COPY, RUN, WORKDIR, ARG and ENV."""
    venv = base / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "sitecustomize.py").write_text(HIDE_EDITABLE)
    image = Image(root=base / "root", python=python, workdir=base / "root", site_packages=site)
    image.root.mkdir()
    variables: dict[str, str] = {}
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env["VIRTUAL_ENV"] = str(venv)
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            for source in sources:
                assert allowed_by_dockerignore(source), f"{source} is left out of the context"
                target = image.host(dest)
                if dest.endswith("/") or len(sources) > 1:
                    target = target / Path(source).name
                _copy(ROOT / source, target)
        elif instruction == "RUN":
            # container paths in the command point into the emulated root
            command = re.sub(r"(?<![\w.])(/[\w.-]+)+", lambda m: str(image.host(m.group(0))), args)
            res = subprocess.run(
                ["bash", "-c", command],
                cwd=image.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert res.returncode == 0, f"RUN {args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        elif instruction == "WORKDIR":
            image.workdir = image.host(args)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "ARG":
            name, _, default = args.partition("=")
            variables[name] = build_args.get(name, default)
        elif instruction == "ENV":
            name, _, value = args.partition("=")
            value = _expand(value, variables)
            image.env[name] = str(image.host(value)) if value.startswith("/") else value
    image.env = {**env, **image.env}
    return image


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    return build_image(tmp_path_factory.mktemp("image"), {"BLURBEAM_IMAGE": IMAGE_REF})


def _run(image: Image, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=image.workdir, env=image.env, capture_output=True, text=True, timeout=timeout
    )


def test_image_installs_the_package_and_the_default_model_with_nothing_shadowing_it(image):
    assert not image.host("/tmp/src").exists()  # the throwaway source copy is gone
    assert not (image.workdir / "blurbeam").exists()
    assert image.env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == str(image.workdir / "main.py")
    assert image.env["BLURBEAM_WORKER_IMAGE"] == IMAGE_REF
    probe = (
        "import importlib.util, blurbeam.pipelines.anonymize as a, blurbeam.transforms.write as w;"
        "from blurbeam.detectors.centerface import MODEL_FILE;"
        "print(a.__file__); print(w.__file__); print(MODEL_FILE)"
    )
    res = _run(image, [str(image.python), "-c", probe])
    assert res.returncode == 0, res.stderr[-2000:]
    files = res.stdout.split()
    # the installed package and its packaged model, in the image's own environment
    assert all(Path(f).is_relative_to(image.site_packages) for f in files), files
    assert files[2].endswith("blurbeam/detectors/models/centerface.onnx")
    assert Path(files[2]).is_file()


def test_flex_template_launcher_runs_from_the_image(image, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    original = face_image(1)
    (src / "a.jpg").write_bytes(original)
    out = tmp_path / "out"
    py_file = image.env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    argv = [f"--input={src}", f"--output={out}", "--skip_existing=true", "--run_id=flex"]
    res = _run(image, [str(image.python), py_file, *argv])
    assert res.returncode == 0, res.stderr[-3000:]
    # the template's default worker image is the image's own reference
    assert f"workers {IMAGE_REF}" in res.stdout
    [record] = anon.read_run_records(str(out), "flex").to_pylist()
    assert record["status"] == "ok" and record["num_faces"] >= 1
    assert record["detector"] == "multiscale"  # the default detector, CenterFace inside
    assert (src / "a.jpg").read_bytes() == original
    written = (out / "a.jpg").read_bytes()
    assert hashlib.sha256(written).digest() != hashlib.sha256(original).digest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path) -> Iterator:
    """Starts processes in their own process group; kills every group at the end."""
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], log: Path, port: int, **kw) -> subprocess.Popen:
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )
        procs.append(proc)
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc
            except OSError:
                assert time.monotonic() < deadline, f"port {port} never opened: {log}"
                time.sleep(0.5)

    try:
        yield start
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_portable_job_runs_on_a_worker_pool_started_from_the_image(image, service, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        (src / f"face{i}.jpg").write_bytes(face_image(i))
    out = tmp_path / "out"
    job_port, pool_port = _free_port(), _free_port()
    # the job server stands for Flink's: this checkout's Python, outside the image
    service(
        [
            sys.executable,
            "-m",
            "apache_beam.runners.portability.local_job_service_main",
            "--port",
            str(job_port),
        ],
        tmp_path / "job_service.log",
        job_port,
    )
    # the SDK worker pool sidecar: the image's Python in the image's working directory
    pool_log = tmp_path / "worker_pool.log"
    service(
        [
            str(image.python),
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            "--service_port",
            str(pool_port),
        ],
        pool_log,
        pool_port,
        cwd=image.workdir,
        env=image.env,
    )
    blurbeam = str(image.python.parent / "blurbeam")
    res = _run(
        image,
        [
            blurbeam,
            "anonymize",
            "--input",
            str(src),
            "--output",
            str(out),
            "--run-id",
            "portable",
            "--runner",
            "PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{pool_port}",
        ],
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    records = anon.read_run_records(str(out), "portable").to_pylist()
    assert sorted(r["status"] for r in records) == ["ok", "ok"]
    assert all((out / f"face{i}.jpg").is_file() for i in range(2))
    # the worker pool started the SDK harness as `python -c ...`: the image's Python on its PATH
    started = [ln for ln in pool_log.read_text().splitlines() if "Starting worker" in ln]
    assert started, pool_log.read_text()[-2000:]
    assert all("command ['python', '-c'" in ln and "SdkHarness" in ln for ln in started), started
    assert shutil.which("python", path=image.env["PATH"]) == str(image.python)
