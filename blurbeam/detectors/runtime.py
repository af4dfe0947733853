"""Inference runtimes for the ONNX detectors: onnxruntime or OpenVINO, chosen at load time.

:func:`resolve` turns the ``runtime`` and ``precision`` options (each may be ``auto``) into what
runs on this CPU: ``precision=auto`` is ``int8`` where the CPU has VNNI (``avx512_vnni``,
``avx_vnni`` or AMX: int8 dot products in one instruction) and ``fp32`` elsewhere, where int8
kernels gain little and fp32 keeps the published model's exact weights. ``runtime=auto`` is
onnxruntime: on the AVX-512 VNNI CPU measured (docs/BENCHMARKS.md, "Detector runtime and
precision") OpenVINO ran the int8 network about 10% faster on a shape it had seen but slower over
real images, each a new input shape that it re-plans, so it is an option
(``runtime=openvino``, ``pip install openvino``), not the default. Both run the model files
packaged with blurbeam; nothing is downloaded or compiled to disk.

Both runtimes run in fp32 arithmetic around the int8 convolutions (OpenVINO's inference
precision is pinned to f32: left to itself it picks bf16 on CPUs that have it, and bf16 moves
scores by up to a few hundredths), with ``threads`` intra-op threads (0: the library's default)
and, for onnxruntime, no spinning of idle threads, which otherwise burns CPU that other workers
could use, and no memory patterns (planned per input shape, and every image is a new shape).

:func:`pin` writes the resolved pair into a detector spec at launch, so that every worker runs
what the launcher chose and the audit's ``detector_params`` say it, whatever CPU a worker has.

A :class:`Session` takes one (1, 3, H, W) float32 blob and returns the network's outputs in the
order of ``outputs``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from blurbeam.detectors.base import DetectorSpec

#: Backends that take the ``runtime`` and ``precision`` options.
BACKENDS = ("centerface", "multiscale")
RUNTIMES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "int8", "fp32")
#: /proc/cpuinfo flags of CPUs with int8 dot-product instructions.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_vnni() -> bool:
    return any(f in cpu_flags() for f in VNNI_FLAGS)


@functools.cache
def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(runtime: str = "auto", precision: str = "auto") -> tuple[str, str]:
    """(runtime, precision) that will run here, from options that may say ``auto``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "int8" if has_vnni() else "fp32"
    if runtime == "auto":
        runtime = "onnxruntime"
    elif runtime == "openvino" and not openvino_available():
        raise RuntimeError("runtime=openvino needs the openvino package: pip install openvino")
    return runtime, precision


def pin(spec: DetectorSpec) -> DetectorSpec:
    """``spec`` with ``runtime`` and ``precision`` resolved here (unchanged for other backends).
    Raises ValueError with a one-line reason for a value that cannot run."""
    if spec.name not in BACKENDS:
        return spec
    opts = dict(spec.options)
    try:
        runtime, precision = resolve(
            str(opts.get("runtime", "auto")), str(opts.get("precision", "auto"))
        )
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    opts.update(runtime=runtime, precision=precision)
    return replace(spec, options=tuple(sorted(opts.items())))


class Session:
    """One loaded network on one runtime."""

    runtime = ""

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def input_shape(self) -> list[object]:
        """The model's declared input shape; a dynamic dimension is a string or None/-1."""
        raise NotImplementedError

    def release_memory(self, blob: np.ndarray) -> None:
        """Give back to the system the buffers the runs so far kept for reuse, by one run on
        ``blob`` (a small input): nothing by default."""


class OnnxRuntimeSession(Session):
    runtime = "onnxruntime"

    def __init__(self, path: Path, input_name: str, outputs: Sequence[str], threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # A memory pattern is planned and kept per input shape, and every image (every tile and
        # focus crop) is a new shape: with it on, a worker's memory grows with the shapes seen
        # (int8 multiscale on pool886: 526 MB peak with, 410 MB without, same CPU).
        so.enable_mem_pattern = False
        self._sess = ort.InferenceSession(
            str(path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        self._input = input_name
        self._outputs = list(outputs)

    def input_shape(self) -> list[object]:
        for i in self._sess.get_inputs():
            if i.name == self._input:
                return list(i.shape)
        return []

    def get_session_options(self) -> object:
        """The onnxruntime session's options (its thread counts)."""
        return self._sess.get_session_options()

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        return list(self._sess.run(self._outputs, {self._input: blob}))

    def release_memory(self, blob: np.ndarray) -> None:
        # onnxruntime's CPU arena keeps every buffer a run needed (a 24 MP photo's tiles leave
        # about 150 MB); a run with arena shrinkage on frees the ones not in use at its end
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._sess.run(self._outputs, {self._input: blob}, options)


class OpenVinoSession(Session):
    runtime = "openvino"

    def __init__(self, path: Path, input_name: str, outputs: Sequence[str], threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._input = input_name
        self._shape = [
            str(d) if d.is_dynamic else d.get_length()
            for d in model.input(input_name).partial_shape
        ]
        by_name = {}
        for port in self._compiled.outputs:
            for name in port.get_names():
                by_name[name] = port
        self._ports = [by_name[n] for n in outputs]

    def input_shape(self) -> list[object]:
        return list(self._shape)

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        result = self._request.infer({self._input: blob})
        return [np.asarray(result[p]) for p in self._ports]


def open_session(
    path: Path, runtime: str, input_name: str, outputs: Sequence[str], threads: int = 0
) -> Session:
    """Load ``path`` on ``runtime`` (``onnxruntime`` or ``openvino``, already resolved)."""
    if runtime == "openvino":
        return OpenVinoSession(path, input_name, outputs, threads)
    if runtime == "onnxruntime":
        return OnnxRuntimeSession(path, input_name, outputs, threads)
    raise ValueError(f"unknown runtime {runtime!r}")
