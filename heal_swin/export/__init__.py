"""ONNX export, parity checks against PyTorch, and the onnxruntime predictor (no runs or configs:
exporting a trained run is `heal_swin.tools.run_export`)."""

from ._export import (DEFAULT_OPSET, PRECISIONS, ExportError, ExportReport, compare_onnx, convert_fp16,
                      export_checked, export_onnx, quantize_int8, read_metadata)
from ._graphs import FUSION_RULE, FisheyeGraph, RigGraph, SphereGraph
from ._runtime import (OnnxFileError, OnnxPredictor, ProviderError, RigInputError, check_onnx_file,
                       load_onnx_checked)

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportReport", "FUSION_RULE", "FisheyeGraph", "OnnxFileError", "OnnxPredictor",
           "PRECISIONS", "ProviderError", "SphereGraph", "check_onnx_file", "compare_onnx", "convert_fp16",
           "export_checked", "export_onnx", "load_onnx_checked", "quantize_int8", "read_metadata", "RigGraph", "RigInputError"]
