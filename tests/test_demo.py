"""The README's main-job command, at a tiny size."""

from heal_swin import demo


def test_demo_writes_data_and_previews(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HEAL_SWIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--size", "96x72", "--nside", "16"]) == 0
    for name in ("preview_FV.png", "preview_rig.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert len(list((out / "data" / "rgb_images").glob("00000_*.png"))) == 4
    # A second run reuses the generated frame.
    assert demo.main(["--out", str(out), "--size", "96x72", "--nside", "16"]) == 0
    assert "using the synthetic frame" in capsys.readouterr().out
