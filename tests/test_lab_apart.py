"""The product never imports the research code (``blurbeam.lab``).

The product is every module of ``blurbeam`` outside ``blurbeam.lab``, of ``blurbeam.pipelines``,
``blurbeam.transforms`` and ``blurbeam.schemas``, and the deploy entry points. The CLI's command
table names the lab's pipelines as strings and imports one only when its command runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# folder -> package it is installed as
PRODUCT = {
    "blurbeam": "blurbeam",
    "pipelines": "blurbeam.pipelines",
    "transforms": "blurbeam.transforms",
    "schemas": "blurbeam.schemas",
}
# The one product file allowed to name lab modules: as strings in its command table.
COMMAND_TABLE = ROOT / "pipelines" / "cli.py"


def _product_files() -> list[Path]:
    files = [p for folder in PRODUCT for p in (ROOT / folder).rglob("*.py")]
    files += list((ROOT / "deploy").rglob("*.py"))
    return sorted(files)


def _product_modules() -> list[str]:
    names = []
    for folder, package in PRODUCT.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            names.append(".".join([package, *parts]))
    return sorted(names)


def test_the_product_tree_holds_no_lab_folder():
    # the installed mapping puts lab/ at blurbeam.lab; a blurbeam/lab folder would shadow it
    assert not (ROOT / "blurbeam" / "lab").exists()
    assert (ROOT / "lab" / "__init__.py").is_file()


def test_importing_every_product_module_imports_no_lab_module():
    modules = _product_modules()
    assert "blurbeam.pipelines.cli" in modules and "blurbeam.stages" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('blurbeam'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(modules) <= set(loaded)
    assert [m for m in loaded if m == "blurbeam.lab" or m.startswith("blurbeam.lab.")] == []


def _names_lab(text: str) -> bool:
    return text == "blurbeam.lab" or text.startswith("blurbeam.lab.")


def _lab_references(path: Path) -> list[str]:
    """Imports of blurbeam.lab, and strings that name a lab module (an importlib target), in
    one source file; docstrings may mention the lab."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno}" for a in node.names if _names_lab(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and _names_lab(node.module):
            found.append(f"{path}:{node.lineno}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and _names_lab(node.value.strip())
        ):
            found.append(f"{path}:{node.lineno}: {node.value!r}")
    return found


def test_no_product_source_imports_the_lab():
    found = []
    for path in _product_files():
        if path != COMMAND_TABLE:
            found += _lab_references(path)
    assert found == []


def test_the_command_table_names_lab_modules_only_as_strings():
    refs = _lab_references(COMMAND_TABLE)
    assert refs, "the research commands are no longer in the command table"
    assert all(": '" in r for r in refs), refs  # strings only, never an import


def test_the_reference_check_sees_imports_and_module_strings(tmp_path):
    src = tmp_path / "x.py"
    src.write_text(
        '"""Mentions blurbeam.lab in a docstring."""\n'
        "import importlib\n"
        "from blurbeam.lab.reid import sweep\n"
        "import blurbeam.lab.detection\n"
        "importlib.import_module('blurbeam.lab.pipelines.privacy_audit')\n"
    )
    assert [r.split(":")[1] for r in _lab_references(src)] == ["3", "4", "5"]
