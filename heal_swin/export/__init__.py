"""ONNX export, parity checks against PyTorch, and the onnxruntime predictor (no runs or configs:
exporting a trained run is `heal_swin.tools.run_export`)."""

from ._export import (DEFAULT_OPSET, PRECISIONS, ExportError, ExportReport, compare_onnx, convert_fp16,
                      export_checked, export_onnx, quantize_int8, read_metadata)
from ._graphs import FisheyeGraph, SphereGraph
from ._runtime import OnnxPredictor, ProviderError

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportReport", "FisheyeGraph", "OnnxPredictor", "PRECISIONS",
           "ProviderError", "SphereGraph", "compare_onnx", "convert_fp16", "export_checked", "export_onnx",
           "quantize_int8", "read_metadata"]
