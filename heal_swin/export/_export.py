"""Export a module to ONNX, check the graph, and compare onnxruntime with PyTorch.

    exporter, notes = export_onnx(SphereGraph(model, "segmentation"), example, "model.onnx")
    report = export_checked(module, [x1, x2], "model.onnx", "segmentation", precision="fp16")

Nothing here knows about runs or configs: exporting a trained run directory is
`heal_swin.tools.run_export.export_run` (the `export.py` CLI). The default (dynamo) exporter is used; the TorchScript exporter only where dynamo fails, and the
report says so. The batch axis is dynamic unless a fixed batch is asked for. Weights go into the
file itself while it stays below ONNX's 2 GB limit, else into one external-data file beside it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._runtime import check_onnx_file

__all__ = ["ExportReport", "ExportError", "export_onnx", "export_checked", "compare_onnx", "convert_fp16",
           "quantize_int8", "read_metadata", "METADATA_PREFIX", "PRECISIONS"]

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
    compared: str = ""          # the sample the parity was judged on: inputs, batch sizes, output values

    def __str__(self) -> str:
        lines = [f"exported {self.path} ({self.size_mb:.1f} MB, {self.precision}, {self.exporter} exporter, "
                 f"{self.seconds:.1f} s)",
                 f"  input {self.input_shape} -> output {self.output_shape}",
                 f"  onnxruntime (CPU) vs PyTorch: max |diff| = {self.max_abs_diff:.3g}, "
                 f"max relative diff = {self.max_rel_diff:.3g}"]
        if self.argmax_agreement is not None:
            lines.append(f"  argmax agreement: {100 * self.argmax_agreement:.3f} %")
        if self.compared:
            lines.append(f"  compared on: {self.compared}")
        lines.append(f"  tolerance: {self.tolerance} -> {'PASSED' if self.passed else 'FAILED'}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def _as_tuple(example) -> tuple:
    """A graph's example input(s): one tensor, or a tuple of tensors (one per graph input)."""
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _dynamic_shapes(example, dynamic_batch: bool):
    if not dynamic_batch:
        return None
    batch = torch.export.Dim("batch", min=1, max=4096)
    if not isinstance(example, (tuple, list)):
        return ({0: batch},)
    # several inputs arrive as the one variadic argument of forward(*images): one nested tuple
    return (tuple({0: batch} for _ in example),)


def export_onnx(module: torch.nn.Module, example, path, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, output_names=("output",),
                metadata: dict | None = None, input_names=("input",)) -> tuple[str, list[str]]:
    """Write `module` as ONNX; returns (exporter used, notes). `example`: one tensor, or a tuple of
    tensors for a graph of several inputs (`input_names`, one each; all share the batch axis)."""
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
            program = torch.onnx.export(module, _as_tuple(example), dynamo=True, opset_version=opset,
                                        dynamic_shapes=_dynamic_shapes(example, dynamic_batch),
                                        input_names=list(input_names), output_names=list(output_names),
                                        verbose=False)
            model = program.model_proto
        except Exception as err:  # the exporter raises many types; fall back and say why
            exporter = "torchscript"
            notes.append(f"the dynamo exporter failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                         "used the TorchScript exporter")
            import io

            buf = io.BytesIO()
            axes = {n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else None
            torch.onnx.export(module, _as_tuple(example), buf, dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names), dynamic_axes=axes)
            model = onnx.load_from_string(buf.getvalue())
    _set_metadata(model, metadata or {})
    _drop_debug_text(model)
    external = model.ByteSize() > _TWO_GB
    if external:
        notes.append(f"weights stored in {path.name}.data beside the graph (over ONNX's 2 GB single-file limit)")
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data" if external else None)
    onnx.checker.check_model(str(path))
    return exporter, notes


def _drop_debug_text(model) -> None:
    """The exporter writes each node's stack trace and module scope into the file (about 1 MB for a
    small model); onnxruntime reads none of it."""
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in g.node:
            node.doc_string = ""
            del node.metadata_props[:]


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
    """The heal_swin.* metadata of an ONNX file, JSON values decoded; OnnxFileError naming the file and
    the fix when the file is damaged or its metadata disagrees with the graph (`check_onnx_file`)."""
    return check_onnx_file(path)


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


def compare_onnx(path, module: torch.nn.Module, inputs: list, task: str, precision: str = "fp32"):
    """Runs onnxruntime (CPU) and PyTorch on the same inputs: (max abs diff, max rel diff, argmax
    agreement or None, passed, tolerance text). Each input is one tensor, or a tuple of tensors for a
    graph of several inputs (fed by the graph's input names, in order). Every floating output counts
    (finite values only, relative to that output's largest magnitude); boolean outputs (`covered`)
    must be equal."""
    if precision not in _TOLERANCE:
        raise ValueError(f"precision={precision!r} must be one of {sorted(_TOLERANCE)}")
    session = _ort_session(path)
    names = [i.name for i in session.get_inputs()]
    out_names = [o.name for o in session.get_outputs()]
    worst_abs, worst_rel, agree, total = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for x in inputs:
            xs = _as_tuple(x)
            if len(xs) != len(names):
                raise ExportError(f"{path}: the graph has inputs {names}; {len(xs)} tensors were given")
            refs = module(*xs)
            refs = list(refs) if isinstance(refs, (tuple, list)) else [refs]
            gots = session.run(None, {n: t.numpy() for n, t in zip(names, xs)})
            for name, ref, got in zip(out_names, refs, gots):
                ref = ref.numpy()
                if got.shape != ref.shape:
                    raise ExportError(f"{path}: onnxruntime output {name} {got.shape} differs from PyTorch "
                                      f"{ref.shape}")
                if ref.dtype == np.bool_:
                    if not np.array_equal(got, ref):
                        raise ExportError(f"{path}: onnxruntime and PyTorch disagree on the boolean output {name}")
                    continue
                ref, got = ref.astype(np.float32), got.astype(np.float32)
                both = np.isfinite(ref) & np.isfinite(got)
                if not np.array_equal(np.isfinite(ref), np.isfinite(got)):
                    raise ExportError(f"{path}: onnxruntime and PyTorch disagree on which values of {name} "
                                      "are finite")
                diff = np.abs(got - ref)[both]
                worst_abs = max(worst_abs, float(diff.max(initial=0.0)))
                scale = np.abs(ref)[both].max(initial=0.0)
                worst_rel = max(worst_rel, float(diff.max(initial=0.0) / max(scale, 1e-12)))
                if task != "depth":      # class scores: per pixel (segmentation) or per sample (classification)
                    agree += int((got.argmax(1) == ref.argmax(1)).sum())
                    total += got.shape[0] * int(np.prod(got.shape[2:]))
    agreement = agree / total if task != "depth" else None
    rule, limit = _TOLERANCE[precision][task != "depth"]
    value = {"abs": worst_abs, "rel": worst_rel, "argmax": agreement}[rule]
    passed = value >= limit if rule == "argmax" else value <= limit
    text = {"abs": "max |diff| <= {}", "rel": "max |diff| / max |output| <= {}",
            "argmax": "argmax agreement >= {} %"}[rule]
    tolerance = f"{precision}: " + text.format(f"{100 * limit:g}" if rule == "argmax" else f"{limit:g}")
    return worst_abs, worst_rel, agreement, passed, tolerance


# precision -> ((rule, limit) for depth, (rule, limit) for class scores: segmentation, classification).
# fp32 logits are compared
# relative to their largest magnitude: a trained model's logits reach tens, where onnxruntime's and
# PyTorch's kernels differ by a few float32 roundings (1.4e-4 absolute at 2.9e-5 relative, seen).
_TOLERANCE = {"fp32": (("rel", 1e-4), ("rel", 1e-4)),
              "fp16": (("rel", 2e-2), ("argmax", 0.995)),
              "int8": (("rel", 5e-2), ("argmax", 0.99))}
PRECISIONS = tuple(_TOLERANCE)


def export_checked(module: torch.nn.Module, inputs: list, out, task: str, *,
                   precision: str = "fp32", opset: int | None = None, dynamic_batch: bool = True,
                   output_names=("output",), metadata: dict | None = None, notes=(),
                   input_names=("input",)) -> ExportReport:
    """Export `module` (traced on `inputs[0]`) at a precision and compare onnxruntime with PyTorch
    on every input; the report says whether the tolerance of `compare_onnx` was met. Each input is
    one tensor, or a tuple of tensors for a graph of several inputs (`input_names`).

    precision: "fp32"; "fp16" (`convert_fp16`) or "int8" (`quantize_int8`) write the fp32 graph
    first, convert it and remove it. `notes` start the report's notes (e.g. how inputs were made).
    Nothing is written half: the graph is built and compared in a scratch folder beside `out` and
    moved into place only when that succeeded (a parity miss is still written, and reported); an
    error leaves `out` as it was.
    """
    if precision not in _TOLERANCE:
        raise ValueError(f"precision={precision!r} must be one of {sorted(_TOLERANCE)}")
    out = Path(out)
    notes = list(notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        start = time.perf_counter()
        final = scratch / out.name      # the final name: an external-data file keeps its reference
        target = final.with_suffix(".fp32.onnx") if precision != "fp32" else final
        exporter, export_notes = export_onnx(module, inputs[0], target, opset or DEFAULT_OPSET, dynamic_batch,
                                             output_names, {**(metadata or {}), "precision": precision},
                                             input_names)
        notes += export_notes
        if precision != "fp32":
            (convert_fp16 if precision == "fp16" else quantize_int8)(target, final)
            target.unlink()
        seconds = time.perf_counter() - start
        max_abs, max_rel, agreement, passed, tolerance = compare_onnx(final, module, inputs, task, precision)
        size_mb = sum(f.stat().st_size for f in scratch.iterdir()) / 2**20
        for f in scratch.iterdir():
            os.replace(f, out.parent / f.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with torch.no_grad():
        first = module(*_as_tuple(inputs[0]))
    out_shape = list((first[0] if isinstance(first, tuple) else first).shape)
    xs = _as_tuple(inputs[0])
    in_shape = list(xs[0].shape) if len(xs) == 1 else [list(x.shape) for x in xs]
    sizes = [int(_as_tuple(x)[0].shape[0]) for x in inputs]
    values = sum(sizes) * math.prod(out_shape[2:])
    compared = (f"{sum(sizes)} input(s) in {len(sizes)} batch(es) of {'/'.join(map(str, sorted(set(sizes))))}, "
                f"{values:,} output {'pixels' if len(out_shape) > 2 else 'samples'}")
    return ExportReport(str(out), exporter, precision, in_shape, out_shape, seconds,
                        size_mb, max_abs, max_rel, agreement, tolerance, passed, notes, compared)
