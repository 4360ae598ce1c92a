"""ONNX export, parity checks against PyTorch, and the onnxruntime predictor."""

from ._export import (DEFAULT_OPSET, ExportError, ExportReport, compare_onnx, convert_fp16, export_onnx,
                      export_run, quantize_int8, read_metadata)
from ._graphs import FisheyeGraph, SphereGraph
from ._runtime import OnnxPredictor, ProviderError

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportReport", "FisheyeGraph", "OnnxPredictor", "ProviderError",
           "SphereGraph", "compare_onnx", "convert_fp16", "export_onnx", "export_run", "quantize_int8",
           "read_metadata"]
