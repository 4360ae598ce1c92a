"""Issue 12: bad inputs fail up front with the file, the value and the fix, or are repaired.

Config rules, metric names, resuming with another config, label ids beyond the class table,
damaged cache files, damaged checkpoints and ONNX files, run-directory temporaries, and the
inference CLI on folders with bad or foreign images.
"""

import logging
import re
import shutil
import sys
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heal_swin import cameras, models, projection
from heal_swin.data import DatasetError, HealpixDataset, check_dataset, synthetic
from heal_swin.data.woodscape import image_size
from heal_swin.engine import (CheckpointError, ConfigError, check_pair, check_resume_config, config_faces, load_config, load_state,
                              load_weights, remove_stale_temporaries, resume_changes, resume_differences,
                              resume_error_message, save_state, save_weights, sync_weights_with_state,
                              weights_step)
from heal_swin.export import FisheyeGraph, OnnxPredictor, SphereGraph, export_onnx
from heal_swin.projection import CacheWarning, load_checked_arrays, save_checked_arrays
from heal_swin.tools import infer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
SIZE = (64, 48)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    projection.clear_memory_cache()
    yield
    projection.clear_memory_cache()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    synthetic.generate(root, frames=3, seed=4, size=SIZE, progress=False, workers=1)
    return root


def _copy(tree, dst):
    shutil.copytree(tree, dst)
    return dst


# ----------------------------------------------------------------------------- 1, 2: config rules


@pytest.mark.parametrize("override, message", [
    ("train.grad_clip=-1", "train.grad_clip=-1.0 must be >= 0"),
    ("train.eval_every=-1", "train.eval_every=-1 must be an integer >= 0"),
    ("train.checkpoint_every=-5", "train.checkpoint_every=-5 must be an integer >= 0"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1 must be an integer >= 0"),
    ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
    ("eval.batch_size=0", "eval.batch_size=0 must be a positive integer or null"),
    ("train.accumulate=0", "train.accumulate=0 must be a positive integer"),
    ("train.betas=[0.9,1.0]", "train.betas=[0.9, 1.0] must be (beta1, beta2), each in [0, 1)"),
    ("train.betas=[-0.1,0.9]", "train.betas=[-0.1, 0.9] must be (beta1, beta2), each in [0, 1)"),
    ("train.betas=[0.9]", "train.betas=[0.9] must be 2 finite numbers"),
    ("train.lr=0", "train.lr=0.0 must be positive"),
    ("train.lr=nan", "train.lr=nan must be positive"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be >= 0"),
    ("data.num_workers=-1", "data.num_workers=-1 must be an integer >= 0"),
    ("train.max_steps=0", "train.max_steps=0 must be a positive integer or null"),
    ("train.epochs=0", "train.epochs=0 must be a positive integer"),
    ("data.split_fractions=[0.8,0.3,0.0]", "data.split_fractions=[0.8, 0.3, 0.0] must be (train, val, test)"),
    ("data.split_fractions=[1.2,-0.2,0.0]", "data.split_fractions=[1.2, -0.2, 0.0] must be (train, val, test)"),
    ("data.split_fractions=[0.5,0.5]", "data.split_fractions=[0.5, 0.5] must be 3 finite numbers"),
    ("run.threads=-1", "run.threads=-1 must be an integer >= 0 or null"),
    ("run.seed=-3", "run.seed=-3 must be an integer >= 0"),
    ("data.max_depth=0", "data.max_depth=0.0 must be a positive number of metres or null"),
    ("data.group_size=0", "data.group_size=0 must be a positive integer"),
    ("data.ignore_index=-1", "data.ignore_index=-1 must be an integer >= 0"),
    ("data.flat_size=[4,8]", "data.flat_size=[4, 8] must be (height, width), whole pixels >= 8"),
    ("data.synthetic_size=[640]", "data.synthetic_size=[640] must be 2 finite numbers"),
    ("data.std=[1,1,0]", "data.std=[1, 1, 0] must be 3 positive numbers"),
    ("augment.hflip=1.5", "augment.hflip=1.5 must be a probability in [0, 1]"),
    ("augment.rotate_deg=-10", "augment.rotate_deg=-10.0 must be in [0, 180] degrees"),
    ("loss.label_smoothing=1.0", "loss.label_smoothing=1.0 must be in [0, 1)"),
    ("loss.class_weights=[1,-1]", "loss.class_weights=[1, -1] must be non-negative numbers"),
    ("eval.figures=-1", "eval.figures=-1 must be an integer >= 0"),
    ("run.log_every=0", "run.log_every=0 must be a positive integer"),
    ("data.unknown_labels=drop", "data.unknown_labels='drop' must be one of ['error', 'ignore']"),
    ("data.class_names=[road,road]", "data.class_names=['road', 'road'] must be a non-empty list of distinct"),
    ("data.nside=2048", "data.nside=2048 must be at most 1024: 8 faces × nside² = 33,554,432 sphere pixels"),
])
def test_every_numeric_rule_names_key_value_rule_and_file(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    text = str(err.value)
    assert message in text and "configs/demo.yaml + command line" in text, text


def test_nside_bound_states_the_memory_it_would_need():
    with pytest.raises(ConfigError, match=r"≈ 9\.6 GiB for one batch of 4") as err:
        load_config(DEMO, ["data.nside=2048"])
    assert "1024" in str(err.value)
    assert load_config(DEMO, ["data.nside=1024"]).data.nside == 1024


def test_accepted_edge_values():
    cfg = load_config(DEMO, ["train.grad_clip=0", "train.eval_every=0", "run.threads=0", "train.betas=[0.0,0.5]",
                             "data.split_fractions=[1.0,0.0,0.0]", "train.weight_decay=0", "data.num_workers=0"])
    assert cfg.train.grad_clip == 0 and cfg.train.betas == [0.0, 0.5]
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)  # every shipped config keeps passing


def test_config_faces_matches_the_grid_rules():
    assert config_faces(load_config(DEMO)) == tuple(range(8))
    assert config_faces(load_config(DEMO, ["data.base_pixels=all"])) == tuple(range(12))
    assert config_faces(load_config(DEMO, ["data.base_pixels=[0,2,4]"])) == (0, 2, 4)
    assert config_faces(load_config(DEMO, ["data.base_pixels=4-6"])) == (4, 5, 6)


def test_unknown_metric_lists_the_tasks_metrics():
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["train.metric=miuo"])
    assert ("train.metric='miuo' is not a metric of task=segmentation; choose from ['miou', 'accuracy']"
            in str(err.value))
    with pytest.raises(ConfigError, match=r"train.metric='miou' is a segmentation metric; task=depth reports "
                                          r"\['abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'd1', 'd2', 'd3'\]"):
        load_config(DEMO, ["task=depth"])
    with pytest.raises(ConfigError, match="train.metric=abs_rel is better when smaller; set train.metric_mode=min"):
        load_config(DEMO, ["task=depth", "train.metric=abs_rel"])
    with pytest.raises(ConfigError, match="is a depth metric; task=segmentation reports"):
        load_config(DEMO, ["train.metric=rmse", "train.metric_mode=min"])
    cfg = load_config(DEMO, ["task=depth", "train.metric=d1", "train.metric_mode=max"])
    assert cfg.train.metric == "d1"


# ----------------------------------------------------------------------------- 3: resume with another config


def test_resume_differences_split_what_is_computed_from_cadence():
    from omegaconf import OmegaConf

    saved = load_config(DEMO)
    new = load_config(DEMO, ["data.nside=16", "train.lr=0.01", "model.kwargs.drop_path_rate=0.2", "loss.depth=l2",
                             "augment.hflip=0.5", "train.max_steps=900", "train.eval_every=50", "logging.mlflow=true",
                             "run.threads=2", "data.num_workers=2", "train.checkpoint_every=10"])
    forbidden, allowed = resume_differences(OmegaConf.to_yaml(saved, resolve=True), new)  # the state's YAML
    assert forbidden == ["augment.hflip", "data.nside", "loss.depth", "model.kwargs.drop_path_rate", "train.lr"]
    assert allowed == ["data.num_workers", "logging.mlflow", "run.threads", "train.checkpoint_every",
                       "train.eval_every", "train.max_steps"]
    assert resume_differences(saved, load_config(DEMO)) == ([], [])
    message = resume_error_message("runs/x/state/last.pt", saved, new, forbidden)
    assert "runs/x/state/last.pt" in message and "data.nside: 32 -> 16" in message
    assert "model.kwargs.drop_path_rate: (not set) -> 0.2" in message and "another run.dir" in message
    assert resume_changes(saved, new, ["train.max_steps"]) == {"train.max_steps": [300, 900]}
    with pytest.raises(ConfigError, match=r"state/last.pt was saved with another config(.|\n)*data.nside: 32 -> 16"):
        check_resume_config(saved, new, "runs/x/state/last.pt")
    later = load_config(DEMO, ["train.max_steps=900", "train.resume=true"])
    assert check_resume_config(OmegaConf.to_yaml(saved), later, "s.pt") == {"train.max_steps": [300, 900],
                                                                            "train.resume": [False, True]}
    # A state saved before a key existed had that key's default: no difference.
    old = OmegaConf.to_container(saved)
    del old["data"]["unknown_labels"]
    assert resume_differences(old, saved) == ([], [])


# ----------------------------------------------------------------------------- 5: label ids beyond the table


def _write_labels(root, stem, labels):
    path = root / "semantic_annotations" / "gtLabels" / f"{stem}.png"
    assert cv2.imwrite(str(path), labels)
    return path


def test_label_ids_beyond_the_class_table_name_the_file(tree, tmp_path, caplog):
    root = _copy(tree, tmp_path / "t")
    ds = HealpixDataset(root, nside=8, split="all", cameras=["FV"])
    stem = ds.items[0].stem
    good = cv2.imread(str(ds.items[0].labels), cv2.IMREAD_UNCHANGED)
    bad = good.copy()
    bad[:4, :4] = 12  # uint8, beyond the 10 WoodScape classes
    path = _write_labels(root, stem, bad)
    with pytest.raises(DatasetError) as err:
        ds[0]
    text = str(err.value)
    assert str(path) in text and "label ids 12 are not in the class table" in text
    assert "10 classes" in text and "traffic_sign" in text and "data.unknown_labels=ignore" in text
    # 16-bit labels above 255 used to raise an IndexError naming no file.
    wide = good.astype(np.uint16)
    wide[0, 0], wide[1, 1] = 300, 40000
    _write_labels(root, stem, wide)
    with pytest.raises(DatasetError, match=r"label ids 300, 40000 are not in the class table"):
        ds[0]
    # The explicit option keeps the old behaviour: ignore_index, counted once per file in the log.
    lenient = HealpixDataset(root, nside=8, split="all", cameras=["FV"], unknown_labels="ignore")
    with caplog.at_level(logging.WARNING, logger="heal_swin.data.datasets"):
        item = lenient[0]
        lenient[0]
    warned = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(warned) == 1 and "2 pixels with label ids 300, 40000" in warned[0], warned
    mapped = lenient.map_labels(wide, path)
    assert mapped[0, 0] == 255 and mapped[1, 1] == 255 and mapped[2, 2] == good[2, 2]
    assert item["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="unknown_labels='drop'"):
        HealpixDataset(root, nside=8, split="all", unknown_labels="drop")


# ----------------------------------------------------------------------------- 6: damaged cache files


def _damage(path: Path, kind: str) -> None:
    """One of the ways a cache file goes bad."""
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "crc":
        with zipfile.ZipFile(path) as z:  # flip a byte inside the first array's stored data
            info = z.infolist()[0]
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
        path.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    else:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        name = next(k for k in arrays if not k.startswith("__"))
        a = arrays[name]
        if kind == "shape":
            arrays[name] = a.reshape(-1)[: a.size // 2]
        elif kind == "shifted":
            arrays[name] = np.roll(a, 5, axis=0)
        elif kind == "nan":
            arrays[name] = np.full_like(a, np.nan) if a.dtype.kind == "f" else np.zeros_like(a)
        elif kind == "foreign":  # an old or foreign file: right names, no manifest
            arrays.pop("__manifest__")
            arrays[name] = np.roll(a, 5, axis=0)
        with open(path, "wb") as f:
            np.savez(f, **arrays)


# kind of damage -> the reason the warning gives
KINDS = {"truncated": "BadZipFile", "empty": "EOFError", "crc": "Bad CRC-32", "shape": "the manifest says",
         "shifted": "does not match its checksum", "nan": "does not match its checksum",
         "foreign": "no manifest"}


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_map_cache_is_reported_rebuilt_and_replaced(kind, tmp_path):
    cam = cameras.load_calibration(cameras.FV_SAMPLE).resized(80, 61)
    cache = tmp_path / "maps"
    first = projection.FisheyeToHealpix(cam, 8, range(8), cache_dir=cache).sample_positions.copy()
    (path,) = (cache / "maps").glob("*.npz")
    _damage(path, kind)
    projection.clear_memory_cache()
    with pytest.warns(CacheWarning, match=re.escape(f"{path}: damaged cache file (")) as record:
        again = projection.FisheyeToHealpix(cam, 8, range(8), cache_dir=cache)
    assert KINDS[kind] in str(record[0].message)
    np.testing.assert_array_equal(again.sample_positions, first)
    # Replaced: the next run reads it without a word, and no temporary file is left behind.
    projection.clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        np.testing.assert_array_equal(projection.FisheyeToHealpix(cam, 8, range(8), cache_dir=cache)
                                      .sample_positions, first)
    assert [p.name for p in (cache / "maps").iterdir()] == [path.name]


@pytest.mark.parametrize("which", ["fisheye2healpix", "healpix2fisheye", "healpix2fisheye-bilinear"])
def test_sampling_maps_of_the_wrong_shape_are_rebuilt(which, tmp_path):
    """A well-formed cache file whose arrays do not fit the sampler (another grid's map under this
    key) is caught by the shapes the sampler expects, not deep inside sampling."""
    cam = cameras.load_calibration(cameras.FV_SAMPLE).resized(80, 61)
    cache = tmp_path / "maps"

    def build():
        if which == "fisheye2healpix":
            return projection.FisheyeToHealpix(cam, 8, range(8), cache_dir=cache).sample_positions.copy()
        back = projection.HealpixToFisheye(cam, 8, range(8), cache_dir=cache,
                                           interpolation="bilinear" if "bilinear" in which else "nearest")
        return back.backproject(np.arange(8 * 64, dtype=np.float32))

    first = build()
    (path,) = [p for p in (cache / "maps").glob(f"{which}*.npz") if which != "healpix2fisheye"
               or "bilinear" not in p.name]
    good = load_checked_arrays(path)
    save_checked_arrays(path, {k: np.concatenate([v, v], axis=-1) for k, v in good.items()})
    projection.clear_memory_cache()
    with pytest.warns(CacheWarning, match=re.escape(f"{path}: damaged cache file (")):
        again = build()
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_sample_cache_is_reported_rebuilt_and_replaced(kind, tree, tmp_path):
    ds = HealpixDataset(tree, nside=8, split="all", cameras=["FV"], sample_cache=tmp_path / "samples")
    first = ds[1]
    (path,) = (tmp_path / "samples").glob("*.npz")
    _damage(path, kind)
    with pytest.warns(CacheWarning, match=re.escape(f"{path}: damaged cache file (")) as record:
        again = ds[1]
    assert KINDS[kind] in str(record[0].message)
    for key in ("image", "labels", "valid"):
        assert torch.equal(first[key], again[key]), key
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        ds[1]
    assert [p.name for p in (tmp_path / "samples").iterdir()] == [path.name]


def test_checked_arrays_hold_their_expected_shapes(tmp_path):
    path = tmp_path / "a.npz"
    save_checked_arrays(path, {"uv": np.zeros((6, 2), np.float32)})
    assert load_checked_arrays(path, {"uv": ((6, 2), np.float32)})["uv"].shape == (6, 2)
    with pytest.warns(CacheWarning, match=r"uv is float32 \(6, 2\), expected float32 \(7, 2\)"):
        assert load_checked_arrays(path, {"uv": ((7, 2), np.float32)}) is None
    assert load_checked_arrays(tmp_path / "none.npz") is None  # no file: no warning


# ----------------------------------------------------------------------------- 7: dataset errors up front


def test_fast_dataset_check_finds_file_problems_without_decoding(tree, tmp_path):
    root = _copy(tree, tmp_path / "t")
    assert check_dataset(root) == 12
    assert image_size(root / "rgb_images" / "00000_FV.png") == SIZE
    (root / "semantic_annotations" / "gtLabels" / "00000_RV.png").unlink()
    cv2.imwrite(str(root / "rgb_images" / "00001_MVL.png"), np.zeros((10, 20, 3), np.uint8))
    (root / "rgb_images" / "00002_FV.png").write_bytes(b"")
    (root / "calibration" / "00002_MVR.json").write_text("{not json")
    with pytest.raises(DatasetError) as err:
        check_dataset(root)
    text = str(err.value)
    assert "4 problem(s)" in text and "--check" in text, text
    assert "00000_RV: label file" in text and "00001_MVL.png is 20×10 but 00001_MVL.json says 64×48" in text
    assert "00002_FV.png: empty" in text and "00002_MVR" in text
    with pytest.raises(DatasetError, match="1 problem"):
        check_dataset(root, cameras=["FV"], task="depth")  # depth maps instead of labels: only the empty image


def test_train_cli_prints_data_errors_as_one_line(tree, tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    try:
        import train
    finally:
        sys.path.pop(0)
    root = _copy(tree, tmp_path / "t")
    for path in (root / "calibration").glob("*.json"):
        path.write_text("{}")
    code = train.main(["--config", str(DEMO), f"data.root={root}", "data.generate=false", "data.nside=8",
                       f"run.dir={tmp_path / 'run'}", "train.max_steps=1", "data.batch_size=1",
                       "data.split_fractions=[0.67,0.33,0.0]"])
    err = capsys.readouterr().err
    assert code == 2 and "train.py: error: " in err and ".json: extrinsic is missing" in err, err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- 8, 10, 12: checkpoints


def _state(step=3):
    model = torch.nn.Linear(3, 2)
    return model, {"model": {k: v.clone() for k, v in model.state_dict().items()}, "optimizer": {}, "scheduler": {}, "step": step, "epoch": 0,
                   "batch": 0, "rng": {}, "best": None, "losses": []}


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "foreign"])
def test_damaged_resume_state_names_the_file_and_the_fix(kind, tmp_path):
    model, state = _state()
    path = tmp_path / "run" / "state" / "last.pt"
    save_state(path, state)
    save_weights(model, tmp_path / "run" / "weights" / "best.safetensors", {"step": 3})
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        torch.save({"step": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_state(path)
    text = str(err.value)
    assert text.startswith(str(path)) and "start a new run" in text and "best.safetensors" in text, text


@pytest.mark.parametrize("kind", ["empty", "truncated", "random"])
def test_damaged_weights_name_the_file_and_the_fix(kind, tmp_path):
    model, _ = _state()
    path = tmp_path / "run" / "weights" / "best.safetensors"
    save_weights(model, path, {"step": 3})
    save_weights(model, path.with_name("last.safetensors"), {"step": 3})
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) - 7],
                      "random": np.random.default_rng(1).bytes(len(data))}[kind])
    with pytest.raises(CheckpointError) as err:
        load_weights(torch.nn.Linear(3, 2), path)
    text = str(err.value)
    assert text.startswith(str(path)) and "last.safetensors" in text, text
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_weights(torch.nn.Linear(4, 2), path.with_name("last.safetensors"))


def test_stale_temporaries_are_removed(tmp_path):
    run = tmp_path / "run"
    model, state = _state()
    save_weights(model, run / "weights" / "last.safetensors", {"step": 3})
    save_state(run / "state" / "last.pt", state)
    stale = [run / "weights" / ".last.safetensors.k2j4_x9a.tmp", run / "state" / ".last.pt.abc123de.tmp",
             run / ".config.yaml.zz99yy88.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    keep = run / "weights" / "notes.tmp"
    keep.write_text("not ours")
    assert sorted(remove_stale_temporaries(run)) == sorted(stale)
    assert not any(p.exists() for p in stale) and keep.exists()
    assert (run / "weights" / "last.safetensors").is_file() and (run / "state" / "last.pt").is_file()
    assert remove_stale_temporaries(tmp_path / "nothing") == []


def test_weights_and_state_pair_is_checked_and_repaired(tmp_path):
    model, state = _state(step=7)
    weights, state_path = tmp_path / "weights" / "last.safetensors", tmp_path / "state" / "last.pt"
    save_state(state_path, state)
    save_weights(model, weights, {"step": 7, "model": "linear"})
    assert weights_step(weights) == 7 and check_pair(weights, state_path) == 7
    assert not sync_weights_with_state(weights, state)
    # Killed between the two writes: the weights are one step ahead of the resume state.
    with torch.no_grad():
        model.weight.add_(1.0)
    save_weights(model, weights, {"step": 8, "model": "linear"})
    with pytest.raises(CheckpointError, match=r"is from step 8 but .*last.pt from step 7"):
        check_pair(weights, state_path)
    assert sync_weights_with_state(weights, load_state(state_path), {"model": "linear"})
    assert check_pair(weights, state_path) == 7
    back = load_weights(torch.nn.Linear(3, 2), weights)
    assert torch.equal(back.weight, state["model"]["weight"])


# ----------------------------------------------------------------------------- 8, 9, 4: ONNX files and inference


def _tiny_model():
    torch.manual_seed(0)
    return models.create_model("heal_swin_tiny", num_classes=10, nside=8, base_pixels=range(8), embed_dim=8,
                               depths=(1, 1), num_heads=(1, 2), window_size=4).eval()


META = {"task": "segmentation", "model": "heal_swin_tiny", "class_names": [f"c{i}" for i in range(10)],
        "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "depth_target": "log",
        "precision": "fp32"}


@pytest.fixture(scope="module")
def sphere_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    meta = META | {"input": "sphere", "nside": 8, "base_pixels": list(range(8)), "orientation": "camera"}
    export_onnx(SphereGraph(_tiny_model(), "segmentation"), torch.randn(2, 3, 512), path, metadata=meta)
    return path


@pytest.fixture(scope="module")
def fisheye_onnx(tree, tmp_path_factory):
    """A fisheye-in graph for the FV camera of the tree, with the metadata export_run writes."""
    cam = cameras.load_calibration(tree / "calibration" / "00000_FV.json")
    path = tmp_path_factory.mktemp("onnx") / "fv.onnx"
    graph = FisheyeGraph(_tiny_model(), cam, 8, range(8), "camera", META["mean"], META["std"], "segmentation")
    meta = META | {"input": "fisheye", "calibration_hash": cam.fingerprint(), "calibration": cam.to_dict(),
                   "camera": cam.name, "image_size": [cam.width, cam.height], "nside": 8,
                   "base_pixels": list(range(8)), "orientation": "camera"}
    export_onnx(graph.eval(), torch.rand(2, 3, cam.height, cam.width) * 255, path, metadata=meta)
    return path


def _edit_metadata(src, dst, edit):
    import onnx

    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in edit(props).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("kind, message", [
    ("text", "not a readable ONNX model"),
    ("empty", "the ONNX file is empty"),
    ("truncated", "not a readable ONNX model"),
    ("nside", "heal_swin.nside=16 with 8 faces means 2048 sphere pixels, but the graph's input has 512"),
    ("classes", "heal_swin.class_names=['a', 'b'] lists 2 classes but the graph outputs 10 channels"),
    ("garbled", "heal_swin.base_pixels='[0, 1' must be a list of faces"),
    ("stripped", "has no heal_swin metadata"),
])
def test_damaged_onnx_files_name_the_file_and_the_fix(kind, message, sphere_onnx, tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    data = sphere_onnx.read_bytes()
    if kind == "text":
        path.write_text("this is a README, not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "nside":
        _edit_metadata(sphere_onnx, path, lambda p: p | {"heal_swin.nside": "16"})
    elif kind == "classes":
        _edit_metadata(sphere_onnx, path, lambda p: p | {"heal_swin.class_names": '["a", "b"]'})
    elif kind == "garbled":
        _edit_metadata(sphere_onnx, path, lambda p: p | {"heal_swin.base_pixels": "[0, 1"})
    else:
        _edit_metadata(sphere_onnx, path, lambda p: {})
    images = tmp_path / "img"
    images.mkdir()
    cv2.imwrite(str(images / "00000_FV.png"), np.zeros((48, 64, 3), np.uint8))
    code = infer.main(["--model", str(path), "--images", str(images), "--out", str(tmp_path / "out"),
                       "--calibrations", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and message in err and "export.py" in err, err
    if kind != "stripped":
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
            OnnxPredictor(path)


def _mixed_folder(tree, folder, bad_size=True):
    folder.mkdir()
    for stem in ("00000_FV", "00001_FV", "00002_FV"):
        shutil.copy(tree / "rgb_images" / f"{stem}.png", folder)
    (folder / "00003_FV.png").write_text("not an image")
    if bad_size:
        cv2.imwrite(str(folder / "00004_FV.png"), np.zeros((20, 30, 3), np.uint8))
    return folder


def test_infer_skips_bad_images_and_writes_every_good_one(tree, fisheye_onnx, tmp_path, capsys):
    images = _mixed_folder(tree, tmp_path / "mixed")
    out = tmp_path / "out"
    code = infer.main(["--model", str(fisheye_onnx), "--images", str(images), "--out", str(out), "--batch", "4"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert sorted(p.name for p in out.glob("*.npy")) == ["00000_FV.npy", "00001_FV.npy", "00002_FV.npy"]
    assert f"skipped {images / '00003_FV.png'}" in err and f"skipped {images / '00004_FV.png'}" in err
    assert "image is 30×20" in err and "2 of 5 images failed" in err
    # --strict: stops at the first bad file (exit 2), after writing the good images read before it.
    strict = tmp_path / "strict"
    code = infer.main(["--model", str(fisheye_onnx), "--images", str(images), "--out", str(strict), "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and "00003_FV.png" in err and "00004_FV" not in err, err
    assert sorted(p.name for p in strict.glob("*.npy")) == ["00000_FV.npy", "00001_FV.npy", "00002_FV.npy"]


def test_fisheye_graph_refuses_images_of_another_camera(tree, fisheye_onnx, tmp_path, capsys):
    images = tmp_path / "rv"
    images.mkdir()
    shutil.copy(tree / "rgb_images" / "00000_RV.png", images)  # same size as FV in this tree
    shutil.copy(tree / "rgb_images" / "00001_FV.png", images)
    code = infer.main(["--model", str(fisheye_onnx), "--images", str(images), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and (tmp_path / "o" / "00001_FV.npy").is_file()
    assert f"{images / '00000_RV.png'}: the file name says camera RV" in err and "camera FV" in err, err
    assert "--calibrations" in err and "export.py --with-projection" in err
    # A fisheye-in graph with another image size fails clearly too.
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "frame.png"), np.zeros((40, 50, 3), np.uint8))
    assert infer.main(["--model", str(fisheye_onnx), "--images", str(other), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "image is 50×40" in err and "exported for camera FV at 64×48" in err and "--calibrations" in err


def test_infer_keeps_the_good_images_of_a_batch_that_fails(tree, fisheye_onnx, tmp_path, capsys, monkeypatch):
    images = tmp_path / "batch"
    images.mkdir()
    for stem in ("00000_FV", "00001_FV", "00002_FV"):
        shutil.copy(tree / "rgb_images" / f"{stem}.png", images)
    marked = cv2.imread(str(images / "00001_FV.png"))
    marked[0, 0] = (3, 2, 1)  # BGR on disk: RGB (1, 2, 3) when read
    cv2.imwrite(str(images / "00001_FV.png"), marked)
    run = infer.Runner.run

    def failing(self, key, batch):
        if any(im[0, 0].tolist() == [1, 2, 3] for im in batch):
            raise ValueError("this image breaks the model")
        return run(self, key, batch)

    monkeypatch.setattr(infer.Runner, "run", failing)
    out = tmp_path / "out"
    code = infer.main(["--model", str(fisheye_onnx), "--images", str(images), "--out", str(out), "--batch", "3"])
    err = capsys.readouterr().err
    assert code == 1 and f"skipped {images / '00001_FV.png'}: this image breaks the model" in err, err
    assert sorted(p.name for p in out.glob("*.npy")) == ["00000_FV.npy", "00002_FV.npy"]
