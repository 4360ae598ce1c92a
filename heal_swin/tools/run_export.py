"""Export a trained run directory to ONNX: the orchestration above `engine` and `export`.

    report = export_run("runs/demo/run", "model.onnx")                            # sphere in, sphere out
    report = export_run(run, "fv.onnx", calibration="calibration/00000_FV.json")   # fisheye in/out
    report = export_run(rig_run, "rig.onnx", rig="data/synthetic/calibration")     # every camera in/out

Loads the run (its config and weights, `heal_swin.engine`), wraps the model in the graph to export
(`heal_swin.export.SphereGraph`, `FisheyeGraph` or `RigGraph`), writes the metadata a deployment needs (task,
classes, normalisation, camera, sphere settings), and checks onnxruntime against PyTorch on real
samples of the run's data where they can be read (else on random inputs, said in the report).
The `export.py` CLI calls `export_run`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

from ..cameras import load_calibration
from ..data import CAMERAS, WOODSCAPE_CLASSES, WoodScapeTree
from ..engine import build_datasets, config_faces, load_model, load_run_config, model_domain
from ..export import FUSION_RULE, ExportError, ExportReport, FisheyeGraph, RigGraph, SphereGraph, export_checked

__all__ = ["export_run", "rig_calibrations", "INT8_MIN_INPUTS"]

INT8_MIN_INPUTS = 8     # inputs an int8 graph is judged on at the least (the split's own, none repeated)


def export_run(run_dir, out, opset: int | None = None, batch="dynamic", fp16: bool = False, calibration=None,
               weights: str = "best", check_inputs: int = 2, int8: bool = False, rig=None) -> ExportReport:
    """Export a trained run; `calibration` (a WoodScape JSON) bakes the projection in (fisheye in,
    fisheye out); `rig` (a folder of calibrations, or a frame: see `rig_calibrations`) exports a
    rig-trained run as one `RigGraph` (every camera in, one sphere, every camera out); `fp16` writes a half-precision graph, `int8` one with int8 MatMul weights for
    CPUs (`quantize_int8`). Compares onnxruntime with PyTorch on real samples of the run's data
    when available (else random inputs); the report says whether the tolerance was met."""
    if fp16 and int8:
        raise ValueError("fp16 and int8 exclude each other: choose one precision")
    if rig is not None and calibration is not None:
        raise ValueError("rig and calibration exclude each other: --rig bakes in every camera of the rig, "
                         "--with-projection --calibration one camera")
    cfg = load_run_config(run_dir)
    if rig is not None:
        return _export_rig(run_dir, cfg, out, rig, opset, batch, "fp16" if fp16 else "int8" if int8 else "fp32",
                           weights, check_inputs)
    model = load_model(run_dir, weights=weights)
    dynamic = batch == "dynamic"
    batch_size = 2 if dynamic else int(batch)
    notes: list[str] = []
    meta = {"task": cfg.task, "model": cfg.model.name, "class_names": _class_names(cfg),
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "depth_target": cfg.loss.depth_target,
            "run": str(run_dir)}
    flat = model_domain(cfg) == "flat"
    count = check_inputs * batch_size
    if int8:   # dynamic quantisation depends on the batch: judge it on enough distinct inputs, at deployment
        count = max(count, INT8_MIN_INPUTS)
    if calibration is not None:
        if cfg.data.rig:
            raise ExportError(f"{run_dir}: the run was trained on the rig (data.rig=true: four cameras fused on "
                              "one vehicle-frame sphere); a one-camera graph would show it an input it never saw: "
                              "export it with --rig CALIBRATION_DIR")
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
        samples = _fisheye_samples(cfg, cam, count, notes)
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
        samples = _dataset_samples(cfg, count, notes, distinct=int8)
    if samples is None:
        gen = torch.Generator().manual_seed(0)
        scale = 255.0 if calibration is not None else 1.0
        samples = torch.rand((count,) + example_shape[1:], generator=gen) * scale
    if int8:
        # int8 scales each activation by its batch's range: the check runs at the batch the graph is deployed
        # with (a fixed --batch; one image at a time for a dynamic graph, as a vehicle runs it)
        deploy = 1 if dynamic else batch_size
        distinct = len(samples)
        # whole batches: a fixed-batch graph takes no other size (fewer samples than one batch are repeated)
        take = torch.arange(max(deploy, distinct // deploy * deploy)) % distinct
        inputs = list(samples[take].split(deploy))
        notes.append(f"int8: compared at the deployment batch size {deploy} on {min(distinct, len(take))} distinct "
                     "inputs (dynamic quantisation: results depend on the batch)")
    else:
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
        from ..data.digits import class_names

        return list(class_names(cfg.task))
    if cfg.data.class_names:
        return list(cfg.data.class_names)
    try:
        return list(WoodScapeTree(cfg.data.root).class_names)
    except Exception:  # noqa: BLE001 - no readable tree: the class table of the default
        return list(WOODSCAPE_CLASSES)


def _dataset_samples(cfg, count: int, notes: list, distinct: bool = False):
    """Real model inputs from the run's validation data, when the data is there (`distinct`: at most the
    split's own samples, none repeated, said in the notes when fewer than `count`)."""
    try:
        ds = build_datasets(cfg, (cfg.eval.split,))[cfg.eval.split]
        if distinct and len(ds) < count:
            notes.append(f"split {cfg.eval.split} holds {len(ds)} samples, fewer than the {count} the check wants")
            count = len(ds)
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


def _run_cameras(cfg) -> list[str]:
    """The rig's cameras in the graph's order: sorted names, as the rig datasets order them (the
    order breaks RigToHealpix's ties, so training and the graph share one `source` table)."""
    return sorted(cfg.data.cameras or CAMERAS)


_CAL_NAME = re.compile(r"^(?:(?P<frame>.+)_)?(?P<camera>[A-Za-z0-9]+)$")


def rig_calibrations(spec, cameras, root=None) -> dict:
    """camera name -> camera, for `cameras`, from `spec`:
    - a folder of WoodScape JSONs (`<frame>_<CAM>.json` or `<CAM>.json`): every camera's files there
      must hold one calibration (a tree with per-frame calibrations: pass one frame);
    - a frame: `DIR/<frame>` (reads `DIR/<frame>_<CAM>.json`), or a frame id of the run's data `root`.
    Raises ExportError naming `spec`, the cameras expected and those found."""
    from ..cameras import CalibrationError, load_calibration

    spec_path = Path(spec)
    found: dict[str, list[Path]] = {}
    if spec_path.is_dir():
        for f in sorted(spec_path.glob("*.json")):
            m = _CAL_NAME.match(f.stem)
            if m:
                found.setdefault(m["camera"], []).append(f)
        where = f"--rig {spec}: the folder"
    elif spec_path.parent.is_dir() and any(spec_path.parent.glob(f"{spec_path.name}_*.json")):
        for f in sorted(spec_path.parent.glob(f"{spec_path.name}_*.json")):
            found.setdefault(f.stem[len(spec_path.name) + 1:], []).append(f)
        where = f"--rig {spec}: the frame"
    elif root is not None and Path(root).is_dir():
        from ..data.woodscape import find_frame_files

        try:
            files = find_frame_files(root, str(spec), cameras)
        except (FileNotFoundError, ValueError) as err:
            raise ExportError(f"--rig {spec}: not a folder of calibrations, not DIR/<frame>, and not a frame of "
                              f"the run's data ({err})") from None
        found = {c: [f.calibration] for c, f in files.items()}
        where = f"--rig {spec}: frame {spec} of {root}"
    else:
        raise ExportError(f"--rig {spec}: no such folder of calibrations, no {spec}_<CAM>.json files, and the run's "
                          f"data {root} is not there to look the frame up in")
    missing = [c for c in cameras if c not in found]
    if missing:
        raise ExportError(f"{where} has calibrations for {sorted(found) or 'no camera'}; the run was trained on "
                          f"the rig {list(cameras)} (data.cameras): missing {missing}")
    out = {}
    for cam_name in cameras:
        try:
            cams = [load_calibration(f) for f in found[cam_name]]
        except CalibrationError as err:
            raise ExportError(f"{where}: {err}") from None
        prints = {c.fingerprint() for c in cams}
        if len(prints) > 1:
            raise ExportError(f"{where} holds {len(prints)} different calibrations of camera {cam_name} "
                              f"({', '.join(str(f) for f in found[cam_name][:3])}, …); the graph bakes in one: pass "
                              f"one frame, --rig {spec_path / '<frame>'}")
        out[cam_name] = cams[0]
    return out


def _check_against_run(cams: dict, cfg, notes: list) -> None:
    """The given calibrations are ones the run was trained with (when its data can be read)."""
    try:
        tree = WoodScapeTree(cfg.data.root, list(cams))
        seen: dict[str, dict[str, tuple]] = {}
        for s in tree.samples:
            if s.camera in cams and len(seen.get(s.camera, {})) < 8:
                cam = tree.camera(s)
                seen.setdefault(s.camera, {})[cam.fingerprint()] = (cam.width, cam.height, s.calibration)
    except Exception as err:  # noqa: BLE001 - no readable data: nothing to check against, said so
        notes.append(f"calibrations not checked against the run's data (not readable: {str(err)[:120]})")
        return
    for name, cam in cams.items():
        known = seen.get(name)
        if not known:
            raise ExportError(f"camera {name}: the run's data {cfg.data.root} has no calibration of it; the run's "
                              f"cameras are {sorted(seen)}")
        if cam.fingerprint() not in known:
            w, h, path = next(iter(known.values()))
            raise ExportError(f"camera {name}: the calibration given ({cam.width}×{cam.height}, sha256 "
                              f"{cam.fingerprint()[:12]}) is not one the run was trained with (expected "
                              f"{w}×{h}, sha256 {', '.join(k[:12] for k in known)}, e.g. {path}): a rig graph bakes "
                              "in the projection the model learned on; pass the run's calibrations")


def _export_rig(run_dir, cfg, out, spec, opset, batch, precision, weights, check_inputs) -> ExportReport:
    if not cfg.data.rig:
        raise ExportError(f"--rig {spec}: {run_dir} was not trained on the rig (its config has data.rig=false: one "
                          "camera per sphere); export it per camera with --with-projection --calibration, or "
                          "train with data.rig=true")
    names = _run_cameras(cfg)
    cams = rig_calibrations(spec, names, cfg.data.root)
    notes: list[str] = []
    _check_against_run(cams, cfg, notes)
    faces = config_faces(cfg)
    model = load_model(run_dir, weights=weights)
    module = RigGraph(model, cams, cfg.data.nside, faces, cfg.data.mean, cfg.data.std, cfg.task,
                      cfg.loss.depth_target).eval()
    dynamic = batch == "dynamic"
    batch_size = 2 if dynamic else int(batch)
    samples = _rig_samples(cfg, module, check_inputs * batch_size, notes)
    if samples is None:
        gen = torch.Generator().manual_seed(0)
        samples = [torch.rand((check_inputs * batch_size, 3, h, w), generator=gen) * 255
                   for h, w in (module.sizes[n] for n in names)]
    inputs = [tuple(s[i:i + batch_size] for s in samples) for i in range(0, len(samples[0]), batch_size)]
    if dynamic and len(inputs) > 1:  # a different batch size than the one exported with
        inputs[-1] = tuple(x[:1] for x in inputs[-1])
    source = np.ascontiguousarray(module.rig.source.astype(np.int8))
    meta = {"task": cfg.task, "model": cfg.model.name, "class_names": _class_names(cfg),
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "depth_target": cfg.loss.depth_target,
            "run": str(run_dir), "input": "rig", "cameras": names,
            "rig": [{"name": n, "image_size": [cams[n].width, cams[n].height],
                     "calibration_hash": cams[n].fingerprint(), "calibration": cams[n].to_dict()} for n in names],
            "fusion": FUSION_RULE, "fusion_source_sha256": hashlib.sha256(source.tobytes()).hexdigest(),
            "coverage": module.rig.coverage(), "nside": cfg.data.nside, "base_pixels": list(faces),
            "orientation": "vehicle"}
    return export_checked(module, inputs, out, cfg.task, precision=precision, opset=opset, dynamic_batch=dynamic,
                          output_names=module.output_names, input_names=module.input_names, metadata=meta,
                          notes=notes)


def _rig_samples(cfg, module, count: int, notes: list):
    """Raw images of whole frames of the run's data (one tensor per camera, in the graph's order), and
    a check that the graph's fused sphere is the rig dataset's model input for those frames."""
    try:
        ds = build_datasets(cfg, (cfg.eval.split,))[cfg.eval.split]
        frames = [i % len(ds) for i in range(count)]
        per_cam = {n: [] for n in module.names}
        for i in frames:
            for n in module.names:
                image = ds.tree.load(ds.items[i][n], labels=False)["image"]
                if image.shape[:2] != module.sizes[n]:
                    raise ValueError(f"{ds.items[i][n].image} is {image.shape[1]}×{image.shape[0]}, the graph's "
                                     f"camera {n} {module.sizes[n][1]}×{module.sizes[n][0]}")
                per_cam[n].append(torch.from_numpy(image).permute(2, 0, 1).float())
        samples = [torch.stack(per_cam[n]) for n in module.names]
        with torch.no_grad():
            fused = module.fuse(*samples)
        expected = torch.stack([ds[i]["image"] for i in frames])
        diff = float((fused - expected).abs().max())
    except Exception as err:  # noqa: BLE001 - any unreadable data falls back to random inputs, said so
        notes.append(f"compared on random images: the run's data is not readable ({str(err)[:120]})")
        return None
    if diff > 1e-3:
        raise ExportError(f"the graph's fused sphere differs from the rig dataset's input by {diff:.3g} (normalised "
                          "units; rule: <= 1e-3): the graph would not see what the model was trained on")
    notes.append(f"the graph's fused sphere equals the rig dataset's model input on {len(frames)} frames of split "
                 f"{cfg.eval.split!r} within {diff:.2g}")
    return samples
