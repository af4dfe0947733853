"""The core install: the default path imports no TensorFlow, mtcnn, matplotlib or onnx, and a
feature whose extra is missing stops with one line naming the extra (exit 2, no traceback).

Each check runs the CLI in a fresh interpreter where those modules cannot be imported: a finder
first in ``sys.meta_path`` refuses them, as an environment without the extras would, and records
every attempt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blurbeam.extras import MissingExtra, require, require_command

#: What the core install leaves to extras.
OPTIONAL = ("tensorflow", "keras", "mtcnn", "matplotlib", "onnx", "ai_edge_litert")

_RUNNER = """
import contextlib, io, json, sys

OPTIONAL = set(json.loads(sys.argv[1]))
attempts = []


class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Missing())
from blurbeam.pipelines.cli import main

results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append({"code": code, "stderr": err.getvalue()})
print(json.dumps({"results": results, "attempts": attempts}))
"""


def run_cli(*argvs: list[str], cwd: Path) -> tuple[list[dict], list[str]]:
    res = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(OPTIONAL), json.dumps(list(argvs))],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["results"], out["attempts"]


def test_demo_and_default_anonymize_run_without_the_extras(tmp_path: Path) -> None:
    from blurbeam.demo import _jpeg, astronaut

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(_jpeg(astronaut()))
    argvs = (
        ["demo", str(tmp_path / "demo")],
        ["anonymize", "--input", str(photos), "--output", str(tmp_path / "out")],
        ["report", "--output", str(tmp_path / "out")],
        ["review", "--output", str(tmp_path / "out")],
    )
    results, attempts = run_cli(*argvs, cwd=tmp_path)
    for argv, r in zip(argvs, results, strict=True):
        assert r["code"] == 0, (argv, r["stderr"][-2000:])
    assert attempts == []  # not even tried
    assert (tmp_path / "demo" / "contact_sheet.png").is_file()
    assert (tmp_path / "out" / "a.jpg").is_file()
    assert (tmp_path / "out" / "review" / "index.html").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["anonymize", "--detector", "mtcnn"],
            "the mtcnn detector needs TensorFlow: pip install 'blurbeam[mtcnn]'",
        ),
        (
            ["anonymize", "--method", "learned", "--allow-weak-anonymization"],
            "the learned method needs TensorFlow: pip install 'blurbeam[edge]'",
        ),
        (["deblur"], "blurbeam deblur needs TensorFlow: pip install 'blurbeam[deblur]'"),
        (["evaluate"], "blurbeam evaluate needs matplotlib: pip install 'blurbeam[lab]'"),
        (["privacy-audit"], "blurbeam privacy-audit needs matplotlib: pip install 'blurbeam[lab]'"),
        (["train-deblur"], "blurbeam train-deblur needs TensorFlow: pip install 'blurbeam[lab]'"),
        (["train-edge"], "blurbeam train-edge needs TensorFlow: pip install 'blurbeam[lab]'"),
        (
            ["evaluate-deblur"],
            "blurbeam evaluate-deblur needs TensorFlow: pip install 'blurbeam[lab]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, argv: list[str], message: str):
    (tmp_path / "in").mkdir()
    io_args = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    [r], _ = run_cli(
        [*argv, *io_args] if argv[0] in ("anonymize", "deblur") else argv, cwd=tmp_path
    )
    assert r["code"] == 2, r["stderr"]
    [line] = r["stderr"].splitlines()
    assert line.startswith(f"blurbeam {argv[0]}: error: ") and line.endswith(message), line
    assert not (tmp_path / "out").exists()


def test_require_looks_up_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"^x needs TensorFlow: pip install 'blurbeam\[y\]'$"):
        require("tensorflow", "y", "x")
    require("numpy", "y", "x")  # installed: no error
    with pytest.raises(MissingExtra, match=r"blurbeam deblur needs TensorFlow"):
        require_command("deblur")
    require_command("anonymize")  # the core commands need no extra
