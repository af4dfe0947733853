"""Optional features and the pip extras that install them.

``pip install blurbeam`` runs ``anonymize``, ``demo``, ``report`` and ``review`` with the default
detector. TensorFlow, mtcnn, matplotlib and onnx come with extras (pyproject.toml); a feature
whose extra is missing fails with :class:`MissingExtra`, whose message is one line naming the
extra, e.g. ``the mtcnn detector needs TensorFlow: pip install 'blurbeam[mtcnn]'``. The checks
look modules up with ``importlib.util.find_spec``, which imports nothing.
"""

from __future__ import annotations

import importlib.util

#: How a message names a module.
DISPLAY_NAMES = {"tensorflow": "TensorFlow", "av": "PyAV"}

#: Commands that need an extra whatever their arguments: command -> (extra, modules).
COMMAND_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "deblur": ("deblur", ("tensorflow",)),
    "evaluate": ("lab", ("matplotlib",)),
    "privacy-audit": ("lab", ("matplotlib",)),
    "train-deblur": ("lab", ("tensorflow",)),
    "evaluate-deblur": ("lab", ("tensorflow",)),
    "train-edge": ("lab", ("tensorflow",)),
}


class MissingExtra(ImportError):
    """A feature's optional dependency is not installed; the message names the extra."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def require(module: str, extra: str, feature: str) -> None:
    """Raise :class:`MissingExtra` unless ``module`` is installed; ``feature`` names what needs
    it (``"the mtcnn detector"``), ``extra`` the pip extra that installs it."""
    if not installed(module):
        name = DISPLAY_NAMES.get(module, module)
        raise MissingExtra(f"{feature} needs {name}: pip install 'blurbeam[{extra}]'")


def require_command(command: str) -> None:
    """Raise :class:`MissingExtra` when ``blurbeam COMMAND`` cannot run without an extra."""
    extra, modules = COMMAND_EXTRAS.get(command, ("", ()))
    for module in modules:
        require(module, extra, f"blurbeam {command}")
