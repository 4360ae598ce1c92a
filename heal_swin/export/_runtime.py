"""onnxruntime predictor for exported heal_swin graphs.

    pred = OnnxPredictor("fv.onnx", device="cuda")     # TensorRT -> CUDA -> CPU, as available
    out = pred(images)                                  # numpy (B, ...) in, list of numpy outputs out

onnxruntime-gpu falls back to the CPU silently when it cannot use the GPU (no driver, missing
CUDA/cuDNN libraries). Asking for `device="cuda"` therefore checks the providers the session
really got and raises with the reason instead of running slowly on the CPU.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["OnnxPredictor", "ProviderError", "OnnxFileError", "load_onnx_checked", "check_onnx_file"]

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_PREFIX = "heal_swin."  # the metadata keys export writes
_REEXPORT = "re-export it with export.py (see export.py --help)"


class ProviderError(RuntimeError):
    """The requested device could not be used by onnxruntime."""


class OnnxFileError(ValueError):
    """An ONNX file that cannot be used: the message names the file, what is wrong and the fix."""


def load_onnx_checked(path):
    """The ModelProto of an ONNX file (external weights not loaded), or OnnxFileError naming the file
    when it is missing, empty, not ONNX (text, random bytes), truncated or has no graph."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"{path}: no such ONNX file")
    size = path.stat().st_size
    if size == 0:
        raise OnnxFileError(f"{path}: the ONNX file is empty (0 bytes; the export or copy was cut short): "
                            f"{_REEXPORT}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as err:
        raise OnnxFileError(f"{path}: not a readable ONNX model ({type(err).__name__}: {str(err)[:200]}); it is "
                            f"truncated, damaged or another kind of file: {_REEXPORT}") from None
    graph = model.graph
    if not graph.node or not graph.input or not graph.output:
        raise OnnxFileError(f"{path}: holds no complete ONNX graph ({len(graph.node)} nodes, {len(graph.input)} "
                            f"inputs, {len(graph.output)} outputs; {size:,} bytes): the file is truncated or not a "
                            f"model: {_REEXPORT}")
    return model


def _decode_metadata(model) -> dict:
    out = {}
    for p in model.metadata_props:
        if p.key.startswith(_PREFIX):
            try:
                out[p.key[len(_PREFIX):]] = json.loads(p.value)
            except ValueError:
                out[p.key[len(_PREFIX):]] = p.value
    return out


def _dims(value_info) -> list:
    """A graph input's or output's dimensions: ints where fixed, None where symbolic."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _is_int_list(v, n=None) -> bool:
    return (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and (n is None or len(v) == n))


def _check_metadata(path: Path, model, meta: dict) -> None:
    """The heal_swin.* values that are present agree with their types and with the graph's shapes."""
    def bad(key, rule):
        raise OnnxFileError(f"{path}: metadata heal_swin.{key}={meta.get(key)!r} {rule}; the metadata was edited "
                            f"or damaged: {_REEXPORT}")

    if "task" in meta and meta["task"] not in ("segmentation", "depth", "classification"):
        bad("task", "must be 'segmentation', 'depth' or 'classification'")
    kind = meta.get("input")
    if kind is not None and kind not in ("sphere", "fisheye", "flat"):
        bad("input", "must be 'sphere', 'fisheye' or 'flat'")
    for key in ("mean", "std"):
        if key in meta and not (isinstance(meta[key], list) and len(meta[key]) == 3
                                and all(isinstance(x, (int, float)) for x in meta[key])):
            bad(key, "must be 3 numbers")
    if "class_names" in meta and not (isinstance(meta["class_names"], list)
                                      and all(isinstance(n, str) for n in meta["class_names"])):
        bad("class_names", "must be a list of names")
    if "nside" in meta and not (isinstance(meta["nside"], int) and meta["nside"] > 0
                                and meta["nside"] & (meta["nside"] - 1) == 0):
        bad("nside", "must be a power of two")
    if "base_pixels" in meta and not (_is_int_list(meta["base_pixels"]) and meta["base_pixels"]
                                      and all(0 <= f < 12 for f in meta["base_pixels"])):
        bad("base_pixels", "must be a list of faces 0–11")
    if "image_size" in meta and not (_is_int_list(meta["image_size"], 2) and min(meta["image_size"]) > 0):
        bad("image_size", "must be [width, height]")
    dims = _dims(model.graph.input[0])
    if kind == "sphere" and "nside" in meta and "base_pixels" in meta and dims:
        n = len(meta["base_pixels"]) * meta["nside"] ** 2
        if dims[-1] is not None and dims[-1] != n:
            bad("nside", f"with {len(meta['base_pixels'])} faces means {n} sphere pixels, but the graph's input "
                         f"has {dims[-1]}")
    if kind in ("fisheye", "flat") and "image_size" in meta and len(dims) >= 2:
        w, h = meta["image_size"]
        if (dims[-1] is not None and dims[-1] != w) or (dims[-2] is not None and dims[-2] != h):
            bad("image_size", f"says {w}×{h} but the graph's input is {dims[-1]}×{dims[-2]}")
    if meta.get("task") in ("segmentation", "classification") and meta.get("class_names"):
        out = _dims(model.graph.output[0])
        if len(out) >= 2 and out[1] is not None and out[1] != len(meta["class_names"]):
            bad("class_names", f"lists {len(meta['class_names'])} classes but the graph outputs {out[1]} channels")


def check_onnx_file(path, require_metadata: bool = False) -> dict:
    """The heal_swin.* metadata of an ONNX file, decoded (JSON values as values), after checking the
    file (`load_onnx_checked`) and the metadata (types, and agreement with the graph's input and
    output shapes). `require_metadata`: a file without heal_swin metadata (stripped, or not written
    by export.py) is an error too. Raises OnnxFileError naming the file, the problem and the fix."""
    path = Path(path)
    model = load_onnx_checked(path)
    meta = _decode_metadata(model)
    if require_metadata:
        missing = [k for k in ("task", "input") if k not in meta]
        if missing:
            raise OnnxFileError(f"{path}: the heal_swin metadata ({', '.join('heal_swin.' + k for k in missing)}) is "
                                f"missing: the file was not written by export.py, or its metadata was stripped: "
                                f"{_REEXPORT}")
    _check_metadata(path, model, meta)
    return meta


class OnnxPredictor:
    def __init__(self, path, device: str = "cpu", providers=None, threads: int | None = None,
                 tensorrt: bool = True, warmup: int = 1, batch_size: int = 8):
        import onnxruntime as ort

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'")
        self.path = str(path)
        self.device = device
        self.batch_size = int(batch_size)
        self.metadata = check_onnx_file(path)
        available = ort.get_available_providers()
        if providers is None:
            wanted = ["CPUExecutionProvider"]
            if device == "cuda":
                wanted = (["TensorrtExecutionProvider"] if tensorrt else []) + ["CUDAExecutionProvider"] + wanted
            providers = [p for p in wanted if p in available]
        if device == "cuda" and hasattr(ort, "preload_dlls"):
            # Load the CUDA/cuDNN libraries of the nvidia-* wheels (as torch installs them) first.
            try:
                ort.preload_dlls()
            except Exception:  # missing libraries surface as the provider check below
                pass
        if device == "cuda" and not any(p in available for p in _GPU_PROVIDERS):
            raise ProviderError(f"device='cuda' but this onnxruntime build has no GPU provider (available: "
                                f"{available}); install onnxruntime-gpu (not onnxruntime) on a CUDA machine")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Shared cores (a data loader, a second model): use the cores we are given, not all of them.
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        opts.inter_op_num_threads = 1
        # Softmax under the paper variant's −100 masks yields subnormal probabilities (≈ e^-100), which
        # make the following MatMul up to 20× slower on x86 CPUs; flushing them to zero changes no
        # result above 1.2e-38.
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        try:
            self.session = ort.InferenceSession(self.path, opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf types
            if type(err).__module__.startswith("onnxruntime"):
                raise OnnxFileError(f"{self.path}: onnxruntime cannot load the graph ({type(err).__name__}: "
                                    f"{str(err).splitlines()[0][:200]}): {_REEXPORT}") from None
            raise
        got = self.session.get_providers()
        if device == "cuda" and not any(p in got for p in _GPU_PROVIDERS):
            raise ProviderError(
                f"device='cuda' was requested but the onnxruntime session for {self.path} runs on {got}: "
                "onnxruntime-gpu could not load CUDA (no NVIDIA driver or GPU, or the CUDA/cuDNN libraries "
                "it needs are missing). Use device='cpu' deliberately, or fix the CUDA installation.")
        self.providers = got
        self.inputs = self.session.get_inputs()
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._binding = device == "cuda"
        for _ in range(warmup):
            self._warmup()

    def __repr__(self) -> str:
        return f"OnnxPredictor({self.path!r}, providers={self.providers}, input={self.metadata.get('input')})"

    def _warmup(self) -> None:
        shape = [d if isinstance(d, int) else 1 for d in self.inputs[0].shape]
        dtype = np.float16 if "float16" in self.inputs[0].type else np.float32
        self._run(np.zeros(shape, dtype=dtype))

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self._binding:
            return self.session.run(self.outputs, {self.inputs[0].name: batch})
        # IO binding: the input is copied to the GPU once, outputs are allocated there and fetched.
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.inputs[0].name, batch)
        for name in self.outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def __call__(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Runs in batches of `batch_size`; returns every output, concatenated over the batch."""
        inputs = np.asarray(inputs)
        if self.inputs[0].type == "tensor(float)" and inputs.dtype != np.float32:
            inputs = inputs.astype(np.float32)
        parts = [self._run(np.ascontiguousarray(inputs[i:i + self.batch_size]))
                 for i in range(0, len(inputs), self.batch_size)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]

    def benchmark(self, inputs: np.ndarray, repeats: int = 20) -> dict:
        """Median latency (ms) of one call on `inputs`."""
        self(inputs)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self(inputs)
            times.append(time.perf_counter() - t)
        return {"median_ms": 1e3 * float(np.median(times)), "batch": len(inputs), "providers": self.providers}
