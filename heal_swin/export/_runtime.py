"""onnxruntime predictor for exported heal_swin graphs.

    pred = OnnxPredictor("fv.onnx", device="cuda")     # TensorRT -> CUDA -> CPU, as available
    out = pred(images)                                  # numpy (B, ...) in, list of numpy outputs out

onnxruntime-gpu falls back to the CPU silently when it cannot use the GPU (no driver, missing
CUDA/cuDNN libraries). Asking for `device="cuda"` therefore checks the providers the session
really got and raises with the reason instead of running slowly on the CPU.
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["OnnxPredictor", "ProviderError"]

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class ProviderError(RuntimeError):
    """The requested device could not be used by onnxruntime."""


class OnnxPredictor:
    def __init__(self, path, device: str = "cpu", providers=None, threads: int | None = None,
                 tensorrt: bool = True, warmup: int = 1, batch_size: int = 8):
        import onnxruntime as ort

        from ._export import read_metadata

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'")
        self.path = str(path)
        self.device = device
        self.batch_size = int(batch_size)
        self.metadata = read_metadata(path)
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
        self.session = ort.InferenceSession(self.path, opts, providers=providers)
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
