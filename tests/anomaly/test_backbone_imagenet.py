"""The EfficientNet-Lite0 backbone loads the packaged ImageNet weights (strict) and classifies a cat."""
import cv2
import numpy as np
import pytest
import skimage.data

torch = pytest.importorskip("torch")

from loupe_trainer.backbone import STAGES, _same_pad, build_backbone, to_tensor  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return build_backbone()


def test_chelsea_is_a_cat(model):
    img = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)  # RGB
    with torch.no_grad():
        out = model.forward_head(to_tensor(img))
    probs = out["logits"].softmax(1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top-1 class {top} is not a cat"
    assert float(probs[281:286].sum()) > 0.8  # the TF-exact padding/BN give a confident answer
    assert out["fmap"].shape == (1, 1280, 7, 7)
    assert out["pooled"].shape == (1, 1280)
    # CAM from the final feature map peaks inside the image where the cat is (not degenerate)
    cam = torch.einsum("nchw,c->nhw", out["fmap"], model.fc.weight[top].detach())[0]
    assert float(cam.max()) > float(cam.mean())


def test_stage_outputs_and_strides(model):
    x = to_tensor(np.zeros((256, 320, 3), np.uint8))
    with torch.no_grad():
        feats = model.stages(x, ["stage3", "stage4"])
    assert set(feats) == {"stage3", "stage4"}
    for name, t in feats.items():
        stride, ch = STAGES[name]
        assert t.shape == (1, ch, 256 // stride, 320 // stride)


def test_stages_from_cached_maps_and_stage_ends(model):
    """``stages(maps, names, start=...)`` runs only the blocks after ``start`` and gives the full pass's outputs."""
    x = to_tensor(cv2.resize(skimage.data.chelsea(), (96, 96), interpolation=cv2.INTER_AREA))
    with torch.no_grad():
        full = model.stages(x, ["stage4", "stage6"])
        part = model.stages(full["stage4"], ["stage4", "stage6"], start="stage4")
    assert torch.equal(part["stage4"], full["stage4"]) and torch.equal(part["stage6"], full["stage6"])
    with pytest.raises(ValueError, match="come before 'stage4'"):
        model.stages(full["stage4"], ["stage3"], start="stage4")
    assert [model.stage_end(f"stage{i}") for i in range(1, 8)] == [1, 3, 5, 8, 11, 15, 16]  # Lite0: 16 blocks
    with pytest.raises(ValueError, match="unknown stage 'head'"):
        model.stage_end("head")


def test_tf_same_padding_is_asymmetric():
    assert _same_pad(224, 3, 2) == (0, 1)   # extra pixel bottom/right
    assert _same_pad(224, 5, 2) == (1, 2)
    assert _same_pad(225, 3, 2) == (1, 1)
    assert _same_pad(56, 5, 1) == (2, 2)


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_load_strict_and_see_a_cat(variant):
    """Lite1 / Lite2 (issue 18): the same code with wider, deeper stages; their packaged weights load strictly."""
    from loupe_trainer.backbone import stage_channels

    net = build_backbone(variant=variant)
    img = cv2.resize(skimage.data.chelsea(), (240, 240), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        probs = net(to_tensor(img)).softmax(1)[0]
        feats = net.stages(to_tensor(img), ["stage3", "stage4"])
    assert 281 <= int(probs.argmax()) <= 285 and float(probs[281:286].sum()) > 0.5
    assert feats["stage3"].shape[1] == stage_channels("stage3", variant) == net.channels("stage3")
    assert stage_channels("stage3", variant) == (48 if variant == "lite2" else 40)
