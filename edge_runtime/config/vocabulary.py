"""Words the config and the command line accept, shared with the stages that act on them.

A leaf without imports, so ``inference/`` (and the CLI's ``--help``) can use the names without
loading the config's pydantic models.
"""

from __future__ import annotations

# Accelerator names users can write in config / on the command line.
ONNX_ACCELERATORS = (
    "tensorrt",
    "cuda",
    "openvino",
    "rocm",
    "migraphx",
    "qnn",
    "dml",
    "coreml",
    "acl",
    "armnn",
    "xnnpack",
    "cpu",
)
TFLITE_ACCELERATORS = ("edgetpu", "gpu", "external", "xnnpack", "cpu")
ACCELERATORS = ("auto", *sorted(set(ONNX_ACCELERATORS) | set(TFLITE_ACCELERATORS)))
