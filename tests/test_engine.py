"""The training app on generated data: learning, resume, DDP, config errors, checkpoints, evaluation."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from heal_swin import models
from heal_swin.engine import ConfigError, evaluate_run, load_config, load_model
from heal_swin.engine import checkpoint as ckpt
from heal_swin.engine import trainer

from pictures import read_png

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("run_env")  # data_root and run_env: tests/conftest.py


def _overrides(data_root, run_dir, *extra):
    return [f"run.dir={run_dir}", f"data.root={data_root}", "data.generate=false", "data.nside=8",
            "data.batch_size=2", "data.split_fractions=[0.5,0.5,0.0]", "run.log_every=1", "train.max_steps=4",
            "train.warmup_steps=0", "run.deterministic=true", "model.kwargs.drop_path_rate=0.0",
            "eval.figures=1", *extra]


def _cfg(data_root, run_dir, *extra):
    return load_config(ROOT / "configs" / "demo.yaml", _overrides(data_root, run_dir, *extra))


def test_loss_decreases_on_a_fixed_batch(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path / "r")
    ds = trainer.build_datasets(cfg, ("train",))["train"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    torch.manual_seed(0)
    model = trainer.build_model(cfg, len(ds.class_names))
    loss_fn = trainer.build_loss(cfg, len(ds.class_names))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(batch["image"]), batch["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_train_writes_a_run_and_evaluates(data_root, tmp_path):
    run = tmp_path / "run"
    result = trainer.main(_cfg(data_root, run, "train.eval_every=2"))
    assert {"sphere", "fisheye", "per_camera", "confusion_matrix"} <= set(result)
    assert 0.0 <= result["fisheye"]["miou"] <= 1.0
    for name in ("config.yaml", "metrics.jsonl", "weights/last.safetensors", "weights/best.safetensors",
                 "state/last.pt"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert sum("eval" in r for r in lines) == 2
    state = torch.load(run / "state" / "last.pt", weights_only=True)
    assert state["step"] == 4 and "optimizer" in state and "rng" in state
    # A second run into the same folder must not silently overwrite it.
    with pytest.raises(ConfigError, match="already holds a run"):
        trainer.main(_cfg(data_root, run))
    # --evaluate writes metrics, a table and figures.
    out = evaluate_run(run, ["eval.figures=2"])
    files = {p.name for p in (run / "eval-val").iterdir()}
    assert {"metrics.json", "metrics.md", "sample_000.png", "sample_001.png"} <= files
    for name in ("sample_000.png", "sample_001.png"):  # pictures, not just files (layout: tests/test_figures.py)
        read_png(run / "eval-val" / name, min_size=(800, 300), min_colours=100)
    assert json.loads((run / "eval-val" / "metrics.json").read_text())["fisheye"]["miou"] == pytest.approx(
        out["fisheye"]["miou"])
    assert "| fisheye |" in (run / "eval-val" / "metrics.md").read_text()
    # load_model gives the trained network in eval mode.
    model = load_model(run)
    assert not model.training
    x = torch.randn(1, 3, 8 * 64)
    assert model(x).shape == (1, 10, 8 * 64)


def test_resume_equals_uninterrupted(data_root, tmp_path, monkeypatch):
    extra = ("train.max_steps=6", "train.checkpoint_every=1", "train.schedule=cosine")
    full = trainer.main(_cfg(data_root, tmp_path / "full", *extra))
    reference = torch.load(tmp_path / "full" / "state" / "last.pt", weights_only=True)

    original = trainer.train_one_epoch

    def killed_after_step_3(*args, state, on_step, **kwargs):
        def killing_hook():
            on_step()
            if state.step == 3:
                raise KeyboardInterrupt  # the process dies right after its step-3 checkpoint

        return original(*args, state=state, on_step=killing_hook, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", killed_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        trainer.main(_cfg(data_root, tmp_path / "cut", *extra))
    monkeypatch.setattr(trainer, "train_one_epoch", original)
    cut = torch.load(tmp_path / "cut" / "state" / "last.pt", weights_only=True)
    assert cut["step"] == 3 and cut["seconds"] > 0
    resumed = trainer.main(_cfg(data_root, tmp_path / "cut", *extra, "train.resume=true"))
    state = torch.load(tmp_path / "cut" / "state" / "last.pt", weights_only=True)
    assert state["losses"] == reference["losses"] and len(state["losses"]) == 6
    # the training time adds the killed process's part (to its last checkpoint) to the resumed one's
    assert full["train_seconds"] == reference["seconds"] > 0
    assert resumed["train_seconds"] == state["seconds"] > cut["seconds"]
    for key, value in reference["model"].items():
        assert torch.equal(state["model"][key], value), key
    assert resumed["sphere"]["miou"] == full["sphere"]["miou"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, overrides, out):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from heal_swin.engine import load_config as _load
    from heal_swin.engine import trainer as _trainer
    from heal_swin.engine.checkpoint import unwrap

    captured = {}
    original = _trainer.build_model

    def keep(cfg, n):
        captured["model"] = original(cfg, n)
        return captured["model"]

    _trainer.build_model = keep
    _trainer.main(_load(str(ROOT / "configs" / "demo.yaml"), overrides))
    torch.save({k: v.detach().clone() for k, v in unwrap(captured["model"]).state_dict().items()},
               f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_matches_one_process(data_root, tmp_path):
    # One camera: every sample has the same valid pixels, so the mean over two ranks' means is the
    # mean over the combined batch and the two runs must agree.
    common = ["data.cameras=[FV]", "data.split_fractions=[1.0,0.0,0.0]", "eval.split=train",
              "train.max_steps=2", "eval.backproject=false"]
    port = _free_port()
    ddp = _overrides(data_root, tmp_path / "ddp", *common, "data.batch_size=2")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, ddp, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    single = tmp_path / "single"
    trainer.main(load_config(ROOT / "configs" / "demo.yaml",
                             _overrides(data_root, single, *common, "data.batch_size=4")))
    one = torch.load(single / "state" / "last.pt", weights_only=True)["model"]
    worst = max((one[k].float() - rank0[k].float()).abs().max().item() for k in rank0)
    assert worst < 1e-4
    assert not (tmp_path / "ddp" / "weights").exists() or (tmp_path / "ddp" / "weights" / "last.safetensors").is_file()


def test_depth_run(data_root, tmp_path):
    result = trainer.main(_cfg(data_root, tmp_path / "d", "task=depth", "train.metric=abs_rel",
                               "train.metric_mode=min", "train.max_steps=2"))
    assert result["fisheye"]["pixels"] > 0 and result["fisheye"]["abs_rel"] > 0
    assert set(result["sphere"]) >= {"abs_rel", "sq_rel", "rmse", "rmse_log", "d1", "d2", "d3"}


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr=-1.0 must be positive"),
    ("data.nside=12", "data.nside=12 must be a power of two"),
    ("model.name=resnet50", "model.name='resnet50' is not a registered model"),
    ("task=detection", "task='detection' must be one of"),
    ("train.optimiser=sgd", "train.optimiser"),
    ("data.base_pixels=[3,1]", "data.base_pixels=[3, 1] must be distinct faces"),
    ("train.amp=fp17", "train.amp='fp17' must be one of"),
])
def test_config_errors_name_key_value_and_source(override, message, tmp_path):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(ROOT / "configs" / "demo.yaml", [override])
    assert message in str(err.value) and "configs/demo.yaml" in str(err.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: .*max_stepz"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(None, ["train.max_steps"])


def test_incompatible_options_fail_before_work(data_root, tmp_path):
    with pytest.raises(ConfigError, match="train.amp=fp16 needs a CUDA device"):
        trainer.main(_cfg(data_root, tmp_path / "x", "train.amp=fp16", "run.device=cpu"))
    with pytest.raises(ConfigError, match="segmentation metric"):
        trainer.main(_cfg(data_root, tmp_path / "x", "task=depth"))
    assert not (tmp_path / "x").exists()


def test_bf16_autocast_run(data_root, tmp_path):
    result = trainer.main(_cfg(data_root, tmp_path / "bf", "train.amp=bf16", "train.max_steps=2"))
    assert result["sphere"]["pixels"] > 0


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "w" / "last.safetensors"
    ckpt.save_weights(model, path)
    good = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", crash)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_weights(model, path)
    assert path.read_bytes() == good  # the half-written file never replaced the good one
    assert [p.name for p in path.parent.iterdir()] == ["last.safetensors"]  # and was cleaned up
    monkeypatch.undo()
    state = {"step": 3, "model": {"w": torch.ones(2)}, "rng": ckpt.rng_state()}
    ckpt.save_state(tmp_path / "s.pt", state)
    back = ckpt.load_state(tmp_path / "s.pt")
    assert back["step"] == 3 and torch.equal(back["model"]["w"], torch.ones(2))
    ckpt.set_rng_state(back["rng"])
    a = torch.rand(3)
    ckpt.set_rng_state(back["rng"])
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.run.dir.startswith("runs/")
    # The config's own model, with its options, builds (construction only, at a small size).
    flat = models.model_info(cfg.model.name).domain == "flat"
    small = ["data.flat_size=[128,256]"] if flat else ["data.nside=64"]
    model = trainer.build_model(load_config(path, small), 10 if cfg.task == "segmentation" else 1)
    assert sum(p.numel() for p in model.parameters()) > 0


def _recipe(path) -> dict:
    """A shipped config, flattened to dotted keys, less what may differ between the backbones of one
    comparison: the run directory, the model, the flat image size and the sphere-only rotation."""
    from omegaconf import OmegaConf

    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flatten(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    cfg = OmegaConf.to_container(load_config(path), resolve=True)
    skip = {"run.dir", "data.flat_size", "augment.rotate_deg"}
    return {k: v for k, v in flatten(cfg) if k not in skip and not k.startswith("model.")}


@pytest.mark.parametrize("family", ["woodscape_seg", "synwoodscape_depth"])
def test_comparison_configs_share_one_recipe(family):
    """Issue #17: the configs that compare the backbones on one task differ only in the model (and the
    flat image size); data, augmentation (photometric list, flips), loss, optimiser and schedule are
    the same. Rotation is the sphere's only: the flat dataset has no exact rotation."""
    paths = sorted(p for p in (ROOT / "configs").glob(f"{family}*.yaml") if not p.stem.endswith("_paper"))
    assert len(paths) == 4, paths                  # HEAL-SWIN, flat, gauge CNN, S2CNN
    base = _recipe(ROOT / "configs" / f"{family}.yaml")
    for path in paths:
        other = _recipe(path)
        differing = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
        assert not differing, f"{path.name} differs from {family}.yaml in {differing}"
        flat = models.model_info(load_config(path).model.name).domain == "flat"
        rotate = load_config(path).augment.rotate_deg
        assert (rotate == 0) if flat else (rotate == load_config(ROOT / "configs" / f"{family}.yaml").augment.rotate_deg)


def test_digits_configs_share_one_recipe():
    """The rotated-digits configs differ only in the model and its budget (steps, learning rate and the
    evaluation that ends the run): the study compares families, not recipes."""
    budget = {"train.max_steps", "train.lr", "train.eval_every"}
    paths = sorted(p for p in (ROOT / "configs").glob("digits_*.yaml")
                   if not p.stem.startswith("digits_classification"))
    assert len(paths) == 7, paths
    # classification: a family's own config (the S2CNN's learning rate) against the task's
    own = sorted((ROOT / "configs").glob("digits_classification_*.yaml"))
    assert [p.stem for p in own] == ["digits_classification_s2cnn"]
    for reference, group in (("digits_heal_swin.yaml", paths), ("digits_classification.yaml", own)):
        base = _recipe(ROOT / "configs" / reference)
        for path in group:
            other = _recipe(path)
            differing = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k) and k not in budget)
            assert not differing, f"{path.name} differs from {reference} in {differing}"


def test_flat_baseline_through_the_same_program(data_root, tmp_path):
    """The flat model trains on resized images and is scored on the same fisheye pixels as the
    sphere model (the pixels its faces cover)."""
    flat = trainer.main(_cfg(data_root, tmp_path / "flat", "model.name=swin_unet_flat_tiny",
                             "data.flat_size=[64,96]", "train.max_steps=2"))
    sphere = trainer.main(_cfg(data_root, tmp_path / "sphere", "train.max_steps=2"))
    assert "flat" in flat and "sphere" in sphere
    assert flat["fisheye"]["pixels"] == sphere["fisheye"]["pixels"]
    with pytest.raises(ConfigError, match="data.rig=true fuses cameras"):
        trainer.main(_cfg(data_root, tmp_path / "x", "model.name=swin_unet_flat_tiny", "data.rig=true"))


@pytest.mark.parametrize("logger, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_optional_loggers(data_root, tmp_path, logger, module):
    import importlib.util

    cfg = _cfg(data_root, tmp_path / "log", f"logging.{logger}=true", "train.max_steps=1",
               f"logging.mlflow_uri=file://{tmp_path / 'mlruns'}")
    if importlib.util.find_spec(module) is None:
        with pytest.raises(ConfigError, match=rf"logging.{logger}=true needs the {logger} extra"):
            trainer.main(cfg)
        assert not (tmp_path / "log").exists()  # refused before anything was written
        return
    trainer.main(cfg)
    written = tmp_path / ("log/tensorboard" if logger == "tensorboard" else "mlruns")
    assert any(p.is_file() for p in written.rglob("*"))


# Where glibc's malloc serves a block: `mallinfo2().hblkhd` counts the bytes of blocks it mapped
# with mmap (given back to the kernel when freed) rather than carved from its heap (kept).
_MAPPED_BYTES = """
import ctypes, sys
from heal_swin.engine import retain_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
mode = sys.argv[1]
if mode != "none":
    assert retain_freed_memory(large=mode == "all")
for mib in (16, 64):
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(mib << 20)
    print(mib, (libc.mallinfo2().hblkhd - before) >> 20)
    libc.free(block)
"""


def _glibc_mallinfo2() -> bool:
    import ctypes

    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION")) and hasattr(ctypes.CDLL(None), "mallinfo2")
    except (AttributeError, OSError, ValueError):
        return False


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="glibc ≥ 2.33 (mallinfo2) only")
def test_retain_freed_memory_serves_blocks_from_the_heap():
    """Deterministic: the allocator's own accounting says where a block comes from. By default
    glibc maps 16 and 64 MiB blocks (returned to the kernel when freed); `small` serves 16 MiB
    from the heap and still maps 64 MiB; `all` serves both from the heap. (What that does to
    resident memory and step time is measured in bench/, bench_memory.py.)"""
    import subprocess
    import sys

    def mapped(mode):
        out = subprocess.run([sys.executable, "-c", _MAPPED_BYTES, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return {int(k): int(v) for k, v in zip(out[::2], out[1::2])}

    assert mapped("none") == {16: 16, 64: 64}
    assert mapped("small") == {16: 0, 64: 64}
    assert mapped("all") == {16: 0, 64: 0}


def test_retain_memory_choice_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="run.retain_memory"):
        load_config(None, ["run.retain_memory=yes"])


@pytest.mark.parametrize("override, message", [
    ("model.kwargs.nside=16", r"model.kwargs.nside=16 contradicts data.nside \(8\), which decides it"),
    ("model.kwargs.in_chans=4", r"model.kwargs.in_chans=4 contradicts the data's channels \(1\)"),
    ("model.kwargs.num_classes=5", r"model.kwargs.num_classes=5 contradicts the data's classes \(11\)"),
    ("model.kwargs.task=depth", r"model.kwargs.task='depth' contradicts task \('segmentation'\)"),
    ("model.kwargs.base_pixels=0-7", r"model.kwargs.base_pixels='0-7' contradicts data.base_pixels"),
    ("model.kwargs.widths=[8.7,16,32]", r"widths=\(8.7, 16, 32\) must be whole numbers"),
])
def test_model_kwargs_that_contradict_the_data_fail_before_any_file(override, message, tmp_path):
    """Issue #31, item 9: refused with the key, the value and the rule before the run directory is made, so the
    corrected rerun needs no run.overwrite."""
    run = tmp_path / "run"
    cfg = load_config(ROOT / "configs" / "digits_gauge_cnn.yaml",
                      [f"run.dir={run}", "data.nside=8", "data.digits.train=4", "data.digits.test=2",
                       "train.max_steps=1", "train.eval_every=1", "run.threads=1", override])
    with pytest.raises(ConfigError, match=message):
        trainer.main(cfg)
    assert not run.exists()
    same = load_config(ROOT / "configs" / "digits_gauge_cnn.yaml",
                       [f"run.dir={run}", "data.nside=8", "data.digits.train=4", "data.digits.test=2",
                        "train.max_steps=1", "train.eval_every=1", "run.threads=1", "model.kwargs.nside=8",
                        "model.kwargs.base_pixels=all", "model.kwargs.widths=[8.0,16,32]"])
    assert trainer.main(same)["sphere"]["pixels"] > 0           # repeating the data's values is fine
