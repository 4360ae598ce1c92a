"""The README's main-job command, at a tiny size."""

from heal_swin import demo

from pictures import read_png


def test_demo_trains_evaluates_and_draws(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    out, data = tmp_path / "demo", tmp_path / "data"
    args = ["--out", str(out), "--data", str(data), "--steps", "2", "--frames", "3", "--size", "96x72",
            "--nside", "8", "--preview-nside", "16"]
    assert demo.main(args) == 0
    # the pictures: of their size and not blank (what they show: test_figures, test_preview, test_export)
    for name in ("preview_FV.png", "preview_rig.png", "run/eval-val/sample_000.png"):
        read_png(out / name, min_size=(800, 300), min_colours=100)
    overlay = read_png(out / "infer" / "00000_FV.png", min_size=(96, 73), min_colours=10)
    assert overlay.shape[1] == 96     # the 96×72 image with a legend strip below
    assert (out / "run" / "eval-val" / "metrics.md").is_file()
    assert (out / "run" / "weights" / "best.safetensors").is_file()
    assert (out / "fv.onnx").is_file() and len(list((out / "infer").glob("*_FV.npy"))) == 3
    assert len(list((data / "rgb_images").glob("*.png"))) == 12
    # Running it again resumes the finished run instead of failing or starting over.
    assert demo.main(args) == 0
    assert "resuming" in capsys.readouterr().out


def test_package_surface():
    import heal_swin
    from heal_swin import cameras, grid, models, projection  # noqa: F401  (DESIGN.md's public names)

    assert heal_swin.grid.nside2npix(8) == 768
    assert "heal_swin_tiny" in heal_swin.models.list_models()
    assert callable(heal_swin.load_model)


def test_demo_threads_leave_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(demo.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (2.7, 0.0, 0.0), raising=False)
    assert demo.free_cores() == 1  # 4 cores, about 3 busy
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (0.2, 0.0, 0.0), raising=False)
    assert demo.free_cores() == 4
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (9.0, 0.0, 0.0), raising=False)
    assert demo.free_cores() == 1  # never fewer than one
