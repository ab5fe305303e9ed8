"""Write ``.tflite`` files without TensorFlow: the flatbuffer schema the TFLite runtime ships.

``ai_edge_litert/schema_py_generated.py`` (installed with ``edge-runtime[tflite]``) has the object
API of the TFLite schema (``ModelT``, ``SubGraphT``, ``TensorT``, ...); ``flatbuffers`` packs it.
:class:`Graph` collects one subgraph's tensors, constant buffers and operators and packs the model.
Used by make_tflite_test_models.py (layout test models) and qdq_to_tflite.py (a quantised ONNX
network as an int8 ``.tflite``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

TYPES = {
    np.dtype(np.float32): tfl.TensorType.FLOAT32,
    np.dtype(np.int8): tfl.TensorType.INT8,
    np.dtype(np.uint8): tfl.TensorType.UINT8,
    np.dtype(np.int32): tfl.TensorType.INT32,
    np.dtype(np.int64): tfl.TensorType.INT64,
}


@dataclass(frozen=True)
class Quant:
    """Quantisation of a tensor: one scale and zero point, or one per slice along ``dim``."""

    scale: Sequence[float]
    zero_point: Sequence[int]
    dim: int = 0

    @classmethod
    def of(cls, quant: Quant | tuple[float, int]) -> Quant:
        if isinstance(quant, Quant):
            return quant
        return cls([float(quant[0])], [int(quant[1])])


@dataclass
class Graph:
    """One subgraph being built: tensors, constant buffers, operators and their codes."""

    tensors: list[Any] = field(default_factory=list)
    buffers: list[Any] = field(default_factory=lambda: [tfl.BufferT()])  # buffer 0: the empty one
    operators: list[Any] = field(default_factory=list)
    codes: list[tuple[int, str | None, int]] = field(default_factory=list)

    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any = np.float32,
        data: np.ndarray | None = None,
        quant: Quant | tuple[float, int] | None = None,
    ) -> int:
        """Add a tensor (a constant when ``data`` is given); return its index."""
        t = tfl.TensorT()
        t.name, t.shape, t.type = name, [int(d) for d in shape], TYPES[np.dtype(dtype)]
        if data is not None:
            buffer = tfl.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data, dtype).tobytes(), np.uint8)
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            qp = Quant.of(quant)
            q = tfl.QuantizationParametersT()
            q.scale = [float(s) for s in qp.scale]
            q.zeroPoint = [int(z) for z in qp.zero_point]
            q.quantizedDimension = int(qp.dim)
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        *,
        options: tuple[int, Any] | None = None,
        custom: str | None = None,
        custom_options: bytes = b"",
        version: int = 1,
    ) -> None:
        """Add an operator (``inputs`` -1: an optional input left out)."""
        key = (code, custom, version)
        if key not in self.codes:
            self.codes.append(key)
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(key), inputs, outputs
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options
        if custom_options:
            o.customOptions = list(custom_options)
        self.operators.append(o)

    def model(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        """The whole ``.tflite`` file."""
        sub = tfl.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators = self.tensors, inputs, outputs, self.operators
        sub.name = "main"
        m = tfl.ModelT()
        m.version, m.description, m.subgraphs, m.buffers = 3, description, [sub], self.buffers
        m.operatorCodes = []
        for code, custom, version in self.codes:
            oc = tfl.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode = code, min(code, 127)
            oc.customCode, oc.version = custom, version
            m.operatorCodes.append(oc)
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
