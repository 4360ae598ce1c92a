"""The flat Swin-UNet's export form: the same outputs as the trained model, and an ONNX file whose
size is its weights (timm's per-block tables once made it 8× its parameters at 640 × 768)."""

import numpy as np
import pytest
import torch

from heal_swin import models
from heal_swin.export import SphereGraph, compare_onnx, export_onnx
from heal_swin.models.swin_unet_flat import InferenceWindowAttention


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("img_size", [(32, 64), (16, 64), (64, 16), (8, 64)])
def test_export_form_gives_identical_outputs(img_size):
    """Bit for bit, also where a stage fits in one window along an axis (shifted along the other
    only)."""
    torch.manual_seed(0)
    model = models.create_model("swin_unet_flat_tiny", img_size=img_size, window_size=4).eval()
    with torch.no_grad():
        for blk in model.modules():  # trained-looking biases and scales, not timm's zero init
            if hasattr(blk, "cpb_mlp"):
                blk.q_bias.normal_()
                blk.v_bias.normal_()
                blk.logit_scale.uniform_(1.0, 5.0)
    export = model.for_export()
    attn = [m for m in export.modules() if isinstance(m, InferenceWindowAttention)]
    assert len(attn) == 10 and any(a.row_mask is not None for a in attn)
    x = torch.randn(2, 3, *img_size)
    with torch.no_grad():
        assert torch.equal(model(x), export(x))
    assert export is not model and model.layers[0].blocks[1].attn_mask is not None  # the model is untouched


def test_export_form_holds_no_table_that_grows_with_windows_squared():
    """At the configs' 640 × 768 the old shift masks alone were 20 MB against 3.1 MB of weights."""
    model = models.create_model("swin_unet_flat_tiny", img_size=(640, 768))
    timm_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    export = model.for_export()
    table_bytes = sum(b.numel() * b.element_size() for b in export.buffers())
    assert timm_bytes > 5 * _param_bytes(model)
    assert table_bytes < 0.05 * _param_bytes(model), (table_bytes, _param_bytes(model))


def test_onnx_file_is_about_its_weights_and_matches_onnxruntime(tmp_path):
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(0)
    model = models.create_model("swin_unet_flat_tiny", img_size=(32, 64)).eval()
    path = tmp_path / "flat.onnx"
    export_onnx(SphereGraph(model, "segmentation"), torch.randn(1, 3, 32, 64), path)
    proto = onnx.load(str(path))
    weights = sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    # export_onnx drops the exporter's per-node debug records (stack traces, scopes: ~1 MB here)
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)
    params = _param_bytes(model)
    assert weights <= 1.01 * params, (weights, params)  # was 1.4×: the bias MLP's first layer, masks
    assert path.stat().st_size <= 1.1 * params, (path.stat().st_size, params)

    inputs = [torch.randn(2, 3, 32, 64) for _ in range(2)]
    max_abs, _, agreement, passed, _ = compare_onnx(path, SphereGraph(model, "segmentation"), inputs,
                                                    "segmentation")
    assert passed and max_abs < 1e-4, max_abs
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(inputs[0]).numpy()  # the trained model itself, not only its export form
    np.testing.assert_allclose(session.run(None, {"input": inputs[0].numpy()})[0], ref, atol=1e-4, rtol=0)


def test_pre_norm_option_keeps_the_parameters_and_moves_the_norms():
    """post_norm=False (issue #28, item 4): the same parameter names and shapes, so one state_dict loads in
    both; each block computes x + A(LN(x)), x + M(LN(x)) (checked against the block's own parts); the
    export form still gives the same outputs."""
    torch.manual_seed(0)
    post = models.create_model("swin_unet_flat_tiny", img_size=(16, 32), window_size=4, in_chans=1).eval()
    pre = models.create_model("swin_unet_flat_tiny", img_size=(16, 32), window_size=4, in_chans=1,
                              post_norm=False).eval()
    assert {k: v.shape for k, v in post.state_dict().items()} == {k: v.shape for k, v in pre.state_dict().items()}
    pre.load_state_dict(post.state_dict())
    x = torch.randn(2, 1, 16, 32)
    with torch.no_grad():
        assert not torch.allclose(pre(x), post(x))
        block = pre.layers[0].blocks[1]                      # a shifted block
        t = torch.randn(2, 8, 16, 32)
        mid = t + block._attn(block.norm1(t))
        want = mid + block.mlp(block.norm2(mid.reshape(2, -1, 32))).reshape(2, 8, 16, 32)
        torch.testing.assert_close(block(t), want)
        assert torch.equal(pre(x), pre.for_export()(x))
