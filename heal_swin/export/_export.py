"""Export to ONNX, check the graph, and compare onnxruntime with PyTorch.

    report = export_run("runs/demo/run", "model.onnx")                       # sphere in, sphere out
    report = export_run(run, "fv.onnx", calibration="calibration/00000_FV.json")   # fisheye in/out

The default (dynamo) exporter is used; the TorchScript exporter only where dynamo fails, and the
report says so. The batch axis is dynamic unless a fixed batch is asked for. Weights go into the
file itself while it stays below ONNX's 2 GB limit, else into one external-data file beside it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._graphs import FisheyeGraph, SphereGraph

__all__ = ["ExportReport", "ExportError", "export_onnx", "export_run", "compare_onnx", "convert_fp16",
           "quantize_int8", "read_metadata", "METADATA_PREFIX"]

METADATA_PREFIX = "heal_swin."
_TWO_GB = 2**31 - 2**20
# Opset 20 has a GELU operator, which onnxruntime fuses with the preceding bias (BiasGelu); the
# opset-18 exporter writes GELU as an Erf pattern that it leaves unfused.
DEFAULT_OPSET = 20


class ExportError(RuntimeError):
    """The export failed, or onnxruntime disagrees with PyTorch beyond the tolerance."""


@dataclass
class ExportReport:
    path: str
    exporter: str
    precision: str
    input_shape: list
    output_shape: list
    seconds: float
    size_mb: float
    max_abs_diff: float = float("nan")
    max_rel_diff: float = float("nan")
    argmax_agreement: float | None = None
    tolerance: str = ""
    passed: bool = False
    notes: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"exported {self.path} ({self.size_mb:.1f} MB, {self.precision}, {self.exporter} exporter, "
                 f"{self.seconds:.1f} s)",
                 f"  input {self.input_shape} -> output {self.output_shape}",
                 f"  onnxruntime (CPU) vs PyTorch: max |diff| = {self.max_abs_diff:.3g}, "
                 f"max relative diff = {self.max_rel_diff:.3g}"]
        if self.argmax_agreement is not None:
            lines.append(f"  argmax agreement: {100 * self.argmax_agreement:.3f} %")
        lines.append(f"  tolerance: {self.tolerance} -> {'PASSED' if self.passed else 'FAILED'}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _dynamic_shapes(example: torch.Tensor, dynamic_batch: bool):
    if not dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=4096)},)


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, output_names=("output",),
                metadata: dict | None = None) -> tuple[str, list[str]]:
    """Write `module` as ONNX; returns (exporter used, notes)."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    notes: list[str] = []
    exporter = "dynamo"
    # no_grad: trace the inference path (the training path's hand-written backward is not needed)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                        dynamic_shapes=_dynamic_shapes(example, dynamic_batch),
                                        input_names=["input"], output_names=list(output_names), verbose=False)
            model = program.model_proto
        except Exception as err:  # the exporter raises many types; fall back and say why
            exporter = "torchscript"
            notes.append(f"the dynamo exporter failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                         "used the TorchScript exporter")
            import io

            buf = io.BytesIO()
            axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in output_names}} if dynamic_batch else None
            torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=list(output_names), dynamic_axes=axes)
            model = onnx.load_from_string(buf.getvalue())
    _set_metadata(model, metadata or {})
    external = model.ByteSize() > _TWO_GB
    if external:
        notes.append(f"weights stored in {path.name}.data beside the graph (over ONNX's 2 GB single-file limit)")
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data" if external else None)
    onnx.checker.check_model(str(path))
    return exporter, notes


def _set_metadata(model, metadata: dict) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        full = METADATA_PREFIX + key
        if full in existing:
            existing[full].value = text
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = full, text


def read_metadata(path) -> dict:
    """The heal_swin.* metadata of an ONNX file, JSON values decoded."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for p in model.metadata_props:
        if p.key.startswith(METADATA_PREFIX):
            try:
                out[p.key[len(METADATA_PREFIX):]] = json.loads(p.value)
            except ValueError:
                out[p.key[len(METADATA_PREFIX):]] = p.value
    return out


def convert_fp16(src, dst) -> None:
    """A half-precision copy: weights and most arithmetic in fp16; normalisation, softmax, reductions,
    exponentials and the input/output types kept in fp32 (numerically sensitive)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    keep = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceL2", "Pow", "Sqrt", "Exp", "Log",
            "Div", "Erf", "Resize", "Range", "CumSum", "Gather", "GatherElements", "ScatterND", "Where",
            "ArgMax", "Max", "Min", "Clip", "Reciprocal"]
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=keep)
    _drop_duplicate_casts(half.graph)  # one Cast per consumer, all with the same output name
    _topological_sort(half.graph)  # the converter appends its input casts after their users
    onnx.save_model(half, str(dst))
    onnx.checker.check_model(str(dst))


def quantize_int8(src, dst) -> None:
    """A CPU deployment copy with int8 weights: every MatMul with a constant weight becomes a
    dynamically quantised product (activations quantised per call, weights per tensor, signed), run
    by onnxruntime's VNNI/AMX integer kernels. Everything else stays fp32. Check the result with
    `compare_onnx(..., precision="int8")`: quantisation error depends on the trained weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=False)
    model = onnx.load(str(dst))
    if not any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in model.graph.node):
        raise ExportError(f"{src}: no MatMul with a constant weight to quantise")
    onnx.checker.check_model(str(dst))


def _drop_duplicate_casts(graph) -> None:
    """Keep one of several identical nodes writing the same output (the converter's repeated Casts)."""
    seen = {}
    keep = []
    for node in graph.node:
        key = tuple(node.output)
        if key in seen:
            first = seen[key]
            if (first.op_type, list(first.input), first.attribute) != (node.op_type, list(node.input), node.attribute):
                raise ExportError(f"the fp16 graph writes {key} from two different nodes")
            continue
        seen[key] = node
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _topological_sort(graph) -> None:
    """Reorder graph.node so every node follows the producers of its inputs (Kahn's algorithm)."""
    produced_by = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            produced_by[name] = i
    deps = [{produced_by[n] for n in node.input if n in produced_by} for node in graph.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    missing = [len(d) for d in deps]
    ready = [i for i, m in enumerate(missing) if m == 0]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for u in users.get(i, []):
            missing[u] -= 1
            if missing[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):
        raise ExportError("the fp16 graph has a cycle; cannot order its nodes")
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


def _ort_session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")  # as OnnxPredictor runs it
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare_onnx(path, module: torch.nn.Module, inputs: list[torch.Tensor], task: str, precision: str = "fp32"):
    """Runs onnxruntime (CPU) and PyTorch on the same inputs: (max abs diff, max rel diff, argmax
    agreement or None, passed, tolerance text). Only finite values of the first output count."""
    if precision not in _TOLERANCE:
        raise ValueError(f"precision={precision!r} must be one of {sorted(_TOLERANCE)}")
    session = _ort_session(path)
    name = session.get_inputs()[0].name
    worst_abs, worst_rel, agree, total = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for x in inputs:
            ref = module(x)
            ref = (ref[0] if isinstance(ref, tuple) else ref).float().numpy()
            got = session.run(None, {name: x.numpy()})[0].astype(np.float32)
            if got.shape != ref.shape:
                raise ExportError(f"{path}: onnxruntime output {got.shape} differs from PyTorch {ref.shape}")
            both = np.isfinite(ref) & np.isfinite(got)
            if not np.array_equal(np.isfinite(ref), np.isfinite(got)):
                raise ExportError(f"{path}: onnxruntime and PyTorch disagree on which outputs are finite")
            diff = np.abs(got - ref)[both]
            worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
            scale = np.abs(ref)[both].max(initial=0.0)
            worst_rel = max(worst_rel, float(diff.max(initial=0.0) / max(scale, 1e-12)))
            if task == "segmentation":
                agree += int((got.argmax(1) == ref.argmax(1)).sum())
                total += got.shape[0] * int(np.prod(got.shape[2:]))
    agreement = agree / total if task == "segmentation" else None
    rule, limit = _TOLERANCE[precision][task == "segmentation"]
    value = {"abs": worst_abs, "rel": worst_rel, "argmax": agreement}[rule]
    passed = value >= limit if rule == "argmax" else value <= limit
    text = {"abs": "max |diff| <= {} on logits", "rel": "max relative diff <= {} on depth",
            "argmax": "argmax agreement >= {} %"}[rule]
    tolerance = f"{precision}: " + text.format(f"{100 * limit:g}" if rule == "argmax" else f"{limit:g}")
    return worst_abs, worst_rel, agreement, passed, tolerance


# precision -> ((rule, limit) for depth, (rule, limit) for segmentation)
_TOLERANCE = {"fp32": (("rel", 1e-4), ("abs", 1e-4)),
              "fp16": (("rel", 2e-2), ("argmax", 0.995)),
              "int8": (("rel", 5e-2), ("argmax", 0.99))}


def export_run(run_dir, out, opset: int | None = None, batch="dynamic", fp16: bool = False, calibration=None,
               weights: str = "best", check_inputs: int = 2, int8: bool = False) -> ExportReport:
    """Export a trained run; `calibration` (a WoodScape JSON) bakes the projection in (fisheye in,
    fisheye out); `fp16` writes a half-precision graph, `int8` one with int8 MatMul weights for
    CPUs (`quantize_int8`). Compares onnxruntime with PyTorch on real samples of the run's data
    when available (else random inputs); the report says whether the tolerance was met."""
    if fp16 and int8:
        raise ValueError("fp16 and int8 exclude each other: choose one precision")
    from ..cameras import load_calibration
    from ..engine import load_model
    from ..engine.evaluation import load_run_config
    from ..engine.trainer import _faces, is_flat_model

    cfg = load_run_config(run_dir)
    model = load_model(run_dir, weights=weights)
    out = Path(out)
    dynamic = batch == "dynamic"
    batch_size = 2 if dynamic else int(batch)
    notes: list[str] = []
    class_names = _class_names(cfg)
    meta = {"task": cfg.task, "model": cfg.model.name, "class_names": class_names,
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "depth_target": cfg.loss.depth_target,
            "run": str(run_dir)}
    flat = is_flat_model(cfg.model.name)
    if calibration is not None:
        if flat:
            raise ExportError("--with-projection bakes the HEALPix projection in; the flat baseline "
                              f"({cfg.model.name}) takes resized images: export it without --with-projection")
        cam = load_calibration(calibration)
        module = FisheyeGraph(model, cam, cfg.data.nside, _faces(cfg), cfg.data.orientation, cfg.data.mean,
                              cfg.data.std, cfg.task, cfg.loss.depth_target).eval()
        example_shape = (batch_size, 3, cam.height, cam.width)
        output_names = ("output", "covered")
        meta.update(input="fisheye", calibration_hash=cam.fingerprint(), calibration=cam.to_dict(),
                    camera=cam.name, image_size=[cam.width, cam.height], nside=cfg.data.nside,
                    base_pixels=list(_faces(cfg)), orientation=cfg.data.orientation)
        samples = _fisheye_samples(cfg, cam, check_inputs * batch_size, notes)
    else:
        module = SphereGraph(model, cfg.task, cfg.loss.depth_target).eval()
        output_names = ("output",)
        if flat:
            example_shape = (batch_size, 3, *cfg.data.flat_size)
            meta.update(input="flat", image_size=[cfg.data.flat_size[1], cfg.data.flat_size[0]])
        else:
            n = len(_faces(cfg)) * cfg.data.nside**2
            example_shape = (batch_size, 3, n)
            meta.update(input="sphere", nside=cfg.data.nside, base_pixels=list(_faces(cfg)),
                        orientation=cfg.data.orientation)
        samples = _dataset_samples(cfg, check_inputs * batch_size, notes)
    if samples is None:
        gen = torch.Generator().manual_seed(0)
        scale = 255.0 if calibration is not None else 1.0
        samples = torch.rand((check_inputs * batch_size,) + example_shape[1:], generator=gen) * scale
    inputs = list(samples.split(batch_size))
    if dynamic and len(inputs) > 1:  # a different batch size than the one exported with
        inputs[-1] = inputs[-1][:1]
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    meta["precision"] = precision
    start = time.perf_counter()
    target = out.with_suffix(".fp32.onnx") if precision != "fp32" else out
    exporter, export_notes = export_onnx(module, inputs[0], target, opset or DEFAULT_OPSET, dynamic,
                                         output_names, meta)
    notes += export_notes
    if precision != "fp32":
        (convert_fp16 if fp16 else quantize_int8)(target, out)
        target.unlink()
    seconds = time.perf_counter() - start
    max_abs, max_rel, agreement, passed, tolerance = compare_onnx(out, module, inputs, cfg.task, precision)
    with torch.no_grad():
        out_shape = module(inputs[0])
    out_shape = list((out_shape[0] if isinstance(out_shape, tuple) else out_shape).shape)
    report = ExportReport(str(out), exporter, meta["precision"], list(inputs[0].shape), out_shape, seconds,
                          out.stat().st_size / 2**20, max_abs, max_rel, agreement, tolerance, passed, notes)
    return report


def _class_names(cfg) -> list[str]:
    if cfg.task != "segmentation":
        return []
    if cfg.data.class_names:
        return list(cfg.data.class_names)
    from ..data import WoodScapeTree

    try:
        return list(WoodScapeTree(cfg.data.root).class_names)
    except Exception:
        from ..data import WOODSCAPE_CLASSES

        return list(WOODSCAPE_CLASSES)


def _dataset_samples(cfg, count: int, notes: list):
    """Real model inputs from the run's validation data, when the data is there."""
    from ..engine.trainer import build_datasets

    try:
        ds = build_datasets(cfg, (cfg.eval.split,))[cfg.eval.split]
        return torch.stack([ds[i % len(ds)]["image"] for i in range(count)])
    except Exception as err:
        notes.append(f"compared on random inputs: the run's data is not readable ({str(err)[:120]})")
        return None


def _fisheye_samples(cfg, cam, count: int, notes: list):
    """Raw fisheye images of the exported camera from the run's data, when sizes match."""
    from ..data import WoodScapeTree

    try:
        tree = WoodScapeTree(cfg.data.root)
        images = [tree.load(s, labels=False)["image"] for s in tree.samples]
        images = [im for im in images if im.shape[:2] == (cam.height, cam.width)][:count]
        if not images:
            raise ValueError(f"no {cam.width}×{cam.height} images")
        while len(images) < count:
            images.append(images[len(images) % len(images)])
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    except Exception as err:
        notes.append(f"compared on random images: no matching images in the run's data ({str(err)[:120]})")
        return None


def report_dict(report: ExportReport) -> dict:
    return asdict(report)
