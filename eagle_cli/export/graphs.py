"""Run an exported feature graph: onnxruntime for ``onnx``, OpenVINO for ``openvino`` (each imported when used).

OpenVINO is held to float32 throughout: its CPU plugin would otherwise run in bfloat16 where the processor
has it, and its files would store float16 weights — each measured at about 2 % of the features' scale here,
far from the torch expert's scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from eagle_cli.errors import ParameterError
from eagle_cli.export.folder import GRAPHS

#: Tiles ``(N, 3, side, side) float32`` → patch features ``(N, P, D) float32``.
FeatureGraph = Callable[[np.ndarray], np.ndarray]


def open_graph(folder: Path, runtime: str, providers: Sequence[str] = ("CPUExecutionProvider",)) -> FeatureGraph:
    """The feature graph of the export in ``folder``, ready to run."""
    graph = str(Path(folder) / GRAPHS[runtime][0])
    if runtime == "openvino":
        openvino = _engine("openvino", extra="openvino")
        compiled = openvino.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda tiles: compiled(tiles)[0]
    onnxruntime = _engine("onnxruntime", extra="runtime")
    options = onnxruntime.SessionOptions()
    # Idle workers would spin after each run and take the cores faiss and numpy need next: WideResNet-50 per
    # image 115 ms spinning, 97 ms not, on 2 cores (benchmarks/runtime.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(graph, options, providers=list(providers))
    return lambda tiles: session.run(None, {"tiles": tiles})[0]


def to_openvino(onnx_file: Path) -> None:
    """Turn an ONNX graph into OpenVINO's files beside it (float32 weights) and remove the ONNX file."""
    openvino = _engine("openvino", extra="openvino")
    model = openvino.Core().read_model(str(onnx_file))
    openvino.save_model(model, str(onnx_file.with_name(GRAPHS["openvino"][0])), compress_to_fp16=False)
    onnx_file.unlink()


def _engine(module: str, *, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ParameterError(f"{module} is not installed; it comes with pip install 'eagle-cli[{extra}]'.") from None
