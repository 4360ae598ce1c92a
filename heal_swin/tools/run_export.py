"""Export a trained run directory to ONNX: the orchestration above `engine` and `export`.

    report = export_run("runs/demo/run", "model.onnx")                            # sphere in, sphere out
    report = export_run(run, "fv.onnx", calibration="calibration/00000_FV.json")   # fisheye in/out

Loads the run (its config and weights, `heal_swin.engine`), wraps the model in the graph to export
(`heal_swin.export.SphereGraph` or `FisheyeGraph`), writes the metadata a deployment needs (task,
classes, normalisation, camera, sphere settings), and checks onnxruntime against PyTorch on real
samples of the run's data where they can be read (else on random inputs, said in the report).
The `export.py` CLI calls `export_run`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cameras import load_calibration
from ..data import WOODSCAPE_CLASSES, WoodScapeTree
from ..engine import build_datasets, config_faces, load_model, load_run_config, model_domain
from ..export import ExportError, ExportReport, FisheyeGraph, SphereGraph, export_checked

__all__ = ["export_run"]


def export_run(run_dir, out, opset: int | None = None, batch="dynamic", fp16: bool = False, calibration=None,
               weights: str = "best", check_inputs: int = 2, int8: bool = False) -> ExportReport:
    """Export a trained run; `calibration` (a WoodScape JSON) bakes the projection in (fisheye in,
    fisheye out); `fp16` writes a half-precision graph, `int8` one with int8 MatMul weights for
    CPUs (`quantize_int8`). Compares onnxruntime with PyTorch on real samples of the run's data
    when available (else random inputs); the report says whether the tolerance was met."""
    if fp16 and int8:
        raise ValueError("fp16 and int8 exclude each other: choose one precision")
    cfg = load_run_config(run_dir)
    model = load_model(run_dir, weights=weights)
    dynamic = batch == "dynamic"
    batch_size = 2 if dynamic else int(batch)
    notes: list[str] = []
    meta = {"task": cfg.task, "model": cfg.model.name, "class_names": _class_names(cfg),
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "depth_target": cfg.loss.depth_target,
            "run": str(run_dir)}
    flat = model_domain(cfg) == "flat"
    if calibration is not None:
        if flat:
            raise ExportError("--with-projection bakes the HEALPix projection in; the flat baseline "
                              f"({cfg.model.name}) takes resized images: export it without --with-projection")
        cam = load_calibration(calibration)
        faces = config_faces(cfg)
        module = FisheyeGraph(model, cam, cfg.data.nside, faces, cfg.data.orientation, cfg.data.mean,
                              cfg.data.std, cfg.task, cfg.loss.depth_target).eval()
        example_shape = (batch_size, 3, cam.height, cam.width)
        output_names = ("output", "covered")
        meta.update(input="fisheye", calibration_hash=cam.fingerprint(), calibration=cam.to_dict(),
                    camera=cam.name, image_size=[cam.width, cam.height], nside=cfg.data.nside,
                    base_pixels=list(faces), orientation=cfg.data.orientation)
        samples = _fisheye_samples(cfg, cam, check_inputs * batch_size, notes)
    else:
        module = SphereGraph(model, cfg.task, cfg.loss.depth_target).eval()
        output_names = ("output",)
        if flat:
            example_shape = (batch_size, 3, *cfg.data.flat_size)
            meta.update(input="flat", image_size=[cfg.data.flat_size[1], cfg.data.flat_size[0]])
        else:
            faces = config_faces(cfg)
            example_shape = (batch_size, 3, len(faces) * cfg.data.nside**2)
            meta.update(input="sphere", nside=cfg.data.nside, base_pixels=list(faces),
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
    return export_checked(module, inputs, out, cfg.task, precision=precision, opset=opset, dynamic_batch=dynamic,
                          output_names=output_names, metadata=meta, notes=notes)


def _class_names(cfg) -> list[str]:
    if cfg.task == "depth":
        return []
    if cfg.data.source == "digits":
        from ..data.digits import CLASS_NAMES, DIGIT_NAMES

        return list(DIGIT_NAMES if cfg.task == "classification" else CLASS_NAMES)
    if cfg.data.class_names:
        return list(cfg.data.class_names)
    try:
        return list(WoodScapeTree(cfg.data.root).class_names)
    except Exception:  # noqa: BLE001 - no readable tree: the class table of the default
        return list(WOODSCAPE_CLASSES)


def _dataset_samples(cfg, count: int, notes: list):
    """Real model inputs from the run's validation data, when the data is there."""
    try:
        ds = build_datasets(cfg, (cfg.eval.split,))[cfg.eval.split]
        return torch.stack([ds[i % len(ds)]["image"] for i in range(count)])
    except Exception as err:  # noqa: BLE001 - any unreadable data falls back to random inputs, said so
        notes.append(f"compared on random inputs: the run's data is not readable ({str(err)[:120]})")
        return None


def _fisheye_samples(cfg, cam, count: int, notes: list):
    """Raw fisheye images of the exported camera from the run's data, when sizes match."""
    try:
        tree = WoodScapeTree(cfg.data.root)
        images = [tree.load(s, labels=False)["image"] for s in tree.samples]
        images = [im for im in images if im.shape[:2] == (cam.height, cam.width)][:count]
        if not images:
            raise ValueError(f"no {cam.width}×{cam.height} images")
        while len(images) < count:
            images.append(images[len(images) % len(images)])
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    except Exception as err:  # noqa: BLE001 - as above
        notes.append(f"compared on random images: no matching images in the run's data ({str(err)[:120]})")
        return None
