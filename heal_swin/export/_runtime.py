"""onnxruntime predictor for exported heal_swin graphs.

    pred = OnnxPredictor("fv.onnx", device="cuda")     # TensorRT -> CUDA -> CPU, as available
    out = pred(images)                                  # numpy (B, ...) in, list of numpy outputs out
    rig = OnnxPredictor("rig.onnx")                     # a RigGraph (export.py --rig)
    out = rig.run_rig({"FV": fv, "MVL": mvl, "MVR": mvr, "RV": rv})   # checked: cameras, order, sizes, dtypes

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

__all__ = ["OnnxPredictor", "ProviderError", "OnnxFileError", "RigInputError", "load_onnx_checked", "check_onnx_file"]

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_PREFIX = "heal_swin."  # the metadata keys export writes
_REEXPORT = "re-export it with export.py (see export.py --help)"


class ProviderError(RuntimeError):
    """The requested device could not be used by onnxruntime."""


class OnnxFileError(ValueError):
    """An ONNX file that cannot be used: the message names the file, what is wrong and the fix."""


class RigInputError(ValueError):
    """Images that do not fit a rig graph (cameras, their order, sizes, dtypes): expected vs given."""


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
    if kind is not None and kind not in ("sphere", "fisheye", "flat", "rig"):
        bad("input", "must be 'sphere', 'fisheye', 'flat' or 'rig'")
    if kind == "rig":
        _check_rig_metadata(model, meta, bad)
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


def _check_rig_metadata(model, meta: dict, bad) -> None:
    """A rig graph: its cameras (names, order, sizes) agree with the graph's inputs."""
    names = [i.name for i in model.graph.input]
    cams = meta.get("cameras")
    if not (isinstance(cams, list) and all(isinstance(c, str) for c in cams)):
        bad("cameras", "must be the list of the rig's camera names")
    if cams != names:
        bad("cameras", f"must name the graph's inputs in order, {names}")
    rig = meta.get("rig")
    if not (isinstance(rig, list) and len(rig) == len(cams) and all(isinstance(r, dict) for r in rig)
            and [r.get("name") for r in rig] == cams):
        bad("rig", f"must hold one entry per camera, in the order {cams}")
    for entry, value in zip(rig, model.graph.input):
        size = entry.get("image_size")
        if not (_is_int_list(size, 2) and min(size) > 0):
            bad("rig", f"camera {entry['name']}: image_size must be [width, height]")
        dims = _dims(value)
        if len(dims) != 4 or dims[1] not in (None, 3) or dims[2:] != [size[1], size[0]]:
            bad("rig", f"camera {entry['name']}: image_size {size[0]}×{size[1]} disagrees with the graph's input "
                       f"{dims}")


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
        feeds = []
        for value in self.inputs:
            shape = [d if isinstance(d, int) else 1 for d in value.shape]
            feeds.append(np.zeros(shape, dtype=np.float16 if "float16" in value.type else np.float32))
        self._run(*feeds)

    def _run(self, *batch: np.ndarray) -> list[np.ndarray]:
        """One onnxruntime call; one array per graph input, in the graph's order."""
        if not self._binding:
            return self.session.run(self.outputs, {i.name: b for i, b in zip(self.inputs, batch)})
        # IO binding: the input is copied to the GPU once, outputs are allocated there and fetched.
        binding = self.session.io_binding()
        for value, b in zip(self.inputs, batch):
            binding.bind_cpu_input(value.name, b)
        for name in self.outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def __call__(self, inputs: np.ndarray) -> list[np.ndarray]:
        """Runs in batches of `batch_size`; returns every output, concatenated over the batch. A rig
        graph takes its cameras as `run_rig` does (here: outputs as a list, in the graph's order)."""
        if self.cameras:
            return list(self.run_rig(inputs).values())
        inputs = np.asarray(inputs)
        if self.inputs[0].type == "tensor(float)" and inputs.dtype != np.float32:
            inputs = inputs.astype(np.float32)
        parts = [self._run(np.ascontiguousarray(inputs[i:i + self.batch_size]))
                 for i in range(0, len(inputs), self.batch_size)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]

    @property
    def cameras(self) -> list[str]:
        """A rig graph's cameras, in the order its inputs take them ([] for other graphs)."""
        return list(self.metadata.get("cameras") or []) if self.metadata.get("input") == "rig" else []

    def check_rig_inputs(self, images) -> list[np.ndarray]:
        """`images` for a rig graph -> one float32 (B, 3, H_c, W_c) array per camera, in the graph's order.

        `images`: a mapping camera name -> (B, 3, H, W) (or one (3, H, W) image), in the graph's camera
        order; a sequence of (name, array) pairs in that order; or one (B, n_cameras, 3, H, W) array
        when all cameras have one size. uint8 or float 0–255. Anything else raises RigInputError naming
        what the graph expects and what was given."""
        names = self.cameras
        if not names:
            raise RigInputError(f"{self.path} is not a rig graph (heal_swin.input={self.metadata.get('input')!r}); "
                                "call the predictor with its one input")
        sizes = {r["name"]: (r["image_size"][1], r["image_size"][0]) for r in self.metadata["rig"]}
        if isinstance(images, np.ndarray):
            if images.ndim != 5 or images.shape[1] != len(names):
                raise RigInputError(f"{self.path}: one array must be (B, {len(names)} cameras, 3, H, W) with the "
                                    f"cameras {names} in that order; given shape {images.shape}")
            pairs = list(zip(names, (images[:, i] for i in range(len(names)))))
        elif hasattr(images, "items"):
            pairs = list(images.items())
        else:
            pairs = list(images)
            if not all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
                raise RigInputError(f"{self.path}: give the images as {{camera: array}} or (camera, array) pairs in "
                                    f"the order {names}; given a sequence of {len(pairs)} unnamed items")
        given = [n for n, _ in pairs]
        if len(given) != len(names):
            raise RigInputError(f"{self.path}: the graph takes {len(names)} cameras {names}; given {len(given)}: "
                                f"{given}")
        if given != names:
            what = "order" if sorted(given) == sorted(names) else "cameras"
            raise RigInputError(f"{self.path}: wrong camera {what}: the graph takes {names} (in that order); "
                                f"given {given}")
        out = []
        for name, array in pairs:
            a = np.asarray(array)
            if a.ndim == 3:
                a = a[None]
            h, w = sizes[name]
            if a.ndim != 4 or a.shape[1:] != (3, h, w):
                raise RigInputError(f"{self.path}: camera {name} takes (B, 3, {h}, {w}) images ({w}×{h}, channels "
                                    f"first); given shape {a.shape}")
            if not (a.dtype == np.uint8 or np.issubdtype(a.dtype, np.floating)):
                raise RigInputError(f"{self.path}: camera {name} takes uint8 or float images (0–255); given "
                                    f"dtype {a.dtype}")
            out.append(a)
        batches = {a.shape[0] for a in out}
        if len(batches) != 1:
            raise RigInputError(f"{self.path}: every camera needs the same batch size; given "
                                f"{dict((n, a.shape[0]) for n, a in zip(names, out))}")
        return [np.ascontiguousarray(a, dtype=np.float32) for a in out]

    def run_rig(self, images) -> dict[str, np.ndarray]:
        """Runs a rig graph on checked inputs (`check_rig_inputs`), in batches of `batch_size`:
        {output name: array}, i.e. `output_<CAM>`, `covered_<CAM>` per camera and `sphere`."""
        arrays = self.check_rig_inputs(images)
        parts = [self._run(*(np.ascontiguousarray(a[i:i + self.batch_size]) for a in arrays))
                 for i in range(0, len(arrays[0]), self.batch_size)]
        return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(self.outputs)}

    def benchmark(self, inputs: np.ndarray, repeats: int = 20) -> dict:
        """Median latency (ms) of one call on `inputs`."""
        self(inputs)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self(inputs)
            times.append(time.perf_counter() - t)
        return {"median_ms": 1e3 * float(np.median(times)), "batch": len(inputs), "providers": self.providers}
