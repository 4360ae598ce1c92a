"""The README's main-job command, at a tiny size."""

from heal_swin import demo


def test_demo_trains_evaluates_and_draws(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    out, data = tmp_path / "demo", tmp_path / "data"
    args = ["--out", str(out), "--data", str(data), "--steps", "2", "--frames", "3", "--size", "96x72",
            "--nside", "8", "--preview-nside", "16"]
    assert demo.main(args) == 0
    for name in ("preview_FV.png", "preview_rig.png", "run/eval-val/sample_000.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name
    assert (out / "run" / "eval-val" / "metrics.md").is_file()
    assert (out / "run" / "weights" / "best.safetensors").is_file()
    assert len(list((data / "rgb_images").glob("*.png"))) == 12
    # Running it again resumes the finished run instead of failing or starting over.
    assert demo.main(args) == 0
    assert "resuming" in capsys.readouterr().out
