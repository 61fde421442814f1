"""The hand-designed baselines: DeepLabV3+, DUC+HDC, ICNet, their backbones and the registry."""

from __future__ import annotations

import pytest
import torch

from nasseg.complexity import count_macs, count_params, meta_device
from nasseg.errors import NassegError
from nasseg.models.backbones import mobilenet_v2, resnet50, resnet101
from nasseg.models.duc_hdc import hdc_gridding_ok, hdc_max_distance
from nasseg.models.icnet import ICNET_LOSS_WEIGHTS, upsample_logits
from nasseg.models.pretrained import load_pretrained
from nasseg.models.registry import available_models, build

BASELINES = [
    "deeplabv3plus_resnet50",
    "deeplabv3plus_resnet101",
    "deeplabv3plus_mobilenetv2",
    "duc_hdc_resnet101",
    "icnet_resnet50",
    "icnet_resnet50_full",
]


def macs_at_cityscapes_size(name: str, **kwargs) -> int:
    """Multiply-adds of one 1024x2048 inference, counted on the meta device (no compute)."""
    with meta_device():
        model = build(name, 19, **kwargs).eval()
        image = torch.empty(1, 3, 1024, 2048)
        return count_macs(lambda: model(image))


def test_baselines_are_registered():
    assert set(BASELINES) <= set(available_models())


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(NassegError, match="did you mean 'deeplabv3plus_resnet50'"):
        build("deeplabv3plus_resnet5", 19)


def test_bad_options_are_user_errors():
    with pytest.raises(NassegError, match="output_stride"):
        build("deeplabv3plus_resnet50", 19, output_stride=32)
    with pytest.raises(NassegError, match=r"model_args.output_stride: unknown key; expected one of width_mult"):
        build("icnet_resnet50", 19, output_stride=8)


@pytest.mark.parametrize("name", BASELINES)
def test_forward_backward_at_an_odd_size(name):
    torch.manual_seed(0)
    model = build(name, 5)
    images = torch.randn(2, 3, 90, 122)  # neither size a multiple of 32
    out = model(images)
    outputs = out if isinstance(out, list) else [out]
    sum(o.mean() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert outputs[-1].shape[:2] == (2, 5)
    if not name.startswith("icnet"):
        assert out.shape == (2, 5, 90, 122)
    model.eval()
    with torch.no_grad():
        assert model(images[:1]).shape == (1, 5, 90, 122)


def test_icnet_training_outputs_are_at_1_16_1_8_1_4():
    model = build("icnet_resnet50", 3)
    outputs = model(torch.randn(2, 3, 128, 256))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(8, 16), (16, 32), (32, 64)]
    assert len(ICNET_LOSS_WEIGHTS) == len(outputs) and ICNET_LOSS_WEIGHTS == (0.4, 0.4, 1.0)
    assert all(o.shape == (2, 3, 128, 256) for o in upsample_logits(outputs, (128, 256)))


def test_duc_hdc_has_about_65m_parameters_for_cityscapes():
    with meta_device():
        params = count_params(build("duc_hdc_resnet101", 19).parameters())
    assert abs(params - 65e6) / 65e6 < 0.03


def test_duc_hdc_uses_the_official_hdc_rates():
    with meta_device():
        backbone = build("duc_hdc_resnet101", 19).backbone
    layer3 = [block.conv2.dilation[0] for block in backbone.layer3]
    assert layer3[:6] == [2, 2, 5, 9, 1, 2] and len(layer3) == 23
    assert [block.conv2.dilation[0] for block in backbone.layer4] == [5, 9, 17]
    assert backbone.output_stride == 8


def test_icnet_costs_far_less_than_deeplabv3plus_resnet101():
    deeplab = macs_at_cityscapes_size("deeplabv3plus_resnet101")
    # icnet_resnet50 is the released half-width model the paper times: about 4.1% here.
    assert macs_at_cityscapes_size("icnet_resnet50") < 0.10 * deeplab


def test_icnet_full_width_documents_its_cost():
    """The unpruned full-width trunk (width_mult=1.0) costs about 12.5%: not the < 10% model."""
    deeplab = macs_at_cityscapes_size("deeplabv3plus_resnet101")
    full = macs_at_cityscapes_size("icnet_resnet50_full")
    assert 0.10 * deeplab < full < 0.15 * deeplab
    assert full == macs_at_cityscapes_size("icnet_resnet50", width_mult=1.0)


def test_icnet_resnet50_is_the_released_half_width_model():
    with meta_device():
        released = build("icnet_resnet50", 19)
        half = build("icnet_resnet50", 19, width_mult=0.5)
    assert count_params(released.parameters()) == count_params(half.parameters())
    assert abs(count_params(released.parameters()) - 6.7e6) / 6.7e6 < 0.03  # paper: 6.7M


def test_resnet_parameter_counts_match_torchvision():
    with meta_device():
        assert count_params(resnet50(num_classes=1000).parameters()) == 25_557_032
        assert count_params(resnet101(num_classes=1000).parameters()) == 44_549_160


def test_resnet101_state_dict_uses_torchvision_names():
    with meta_device():
        state = resnet101().state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.weight": (256,),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.22.conv3.weight": (1024, 256, 1, 1),
        "layer4.2.bn3.bias": (2048,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(k.startswith("fc.") for k in state)


def test_dilation_follows_torchvision_and_deep_stem_names():
    with meta_device():
        os16 = resnet50(replace_stride_with_dilation=(False, False, True))
        deep = resnet50(deep_stem=True)
    assert os16.layer4[0].conv2.dilation == (1, 1) and os16.layer4[0].conv2.stride == (1, 1)
    assert os16.layer4[1].conv2.dilation == (2, 2) and os16.output_stride == 16
    state = deep.state_dict()
    assert tuple(state["conv3.weight"].shape) == (128, 64, 3, 3)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 128, 1, 1)


def test_mobilenetv2_dilated_output_stride():
    backbone = mobilenet_v2(output_stride=16)
    features = backbone(torch.randn(1, 3, 64, 64))
    assert features["low_level"].shape == (1, 24, 16, 16)
    assert features["out"].shape == (1, 320, 4, 4)
    assert "features.17.conv.3.weight" in backbone.state_dict()


def test_load_pretrained_round_trip_and_reports(tmp_path):
    source, target = mobilenet_v2(), mobilenet_v2()
    state = source.state_dict()
    del state["features.1.conv.2.weight"]
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    torch.save({"state_dict": state}, tmp_path / "mbv2.pth")
    report = load_pretrained(target, tmp_path / "mbv2.pth")
    assert report.missing == ["features.1.conv.2.weight"]
    assert report.unexpected == ["classifier.1.weight"]
    loaded = target.state_dict()
    assert torch.equal(loaded["features.17.conv.0.0.weight"], state["features.17.conv.0.0.weight"])


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(NassegError, match="not found"):
        load_pretrained(mobilenet_v2(), tmp_path / "absent.pth")
    state = mobilenet_v2().state_dict()
    state["features.0.0.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(NassegError, match=r"'features.0.0.weight' has shape \(16, 3, 3, 3\)"):
        load_pretrained(mobilenet_v2(), tmp_path / "bad.pth")


@pytest.mark.parametrize("rates", [[1, 2, 5], [1, 2, 3], [1, 2, 5, 9]])
def test_hdc_rates_without_gridding(rates):
    assert hdc_gridding_ok(rates)


@pytest.mark.parametrize("rates", [[2, 4, 8], [3, 3, 3], [1, 2, 9]])
def test_hdc_rates_with_gridding(rates):
    assert not hdc_gridding_ok(rates)


def test_hdc_max_distance_matches_the_paper():
    assert hdc_max_distance([1, 2, 5]) == 2  # paper: works, M_2 = 2
    assert hdc_max_distance([1, 2, 9]) == 5  # paper: fails, M_2 = 5
    assert hdc_max_distance([2, 4, 8]) == 4
    assert hdc_max_distance([3, 3, 3]) == 3  # passes M_2 <= 3: rejected by the common factor


@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenetv2", "icnet_resnet50", "darts_v2_seg"])
def test_mac_counter_agrees_with_torch_flop_counter(name):
    """count_macs counts what torch's FlopCounterMode counts (convs and matmuls), halved."""
    from torch.utils.flop_counter import FlopCounterMode

    with meta_device():
        model = build(name, 11).eval()
        image = torch.zeros(1, 3, 96, 128)
        reference = FlopCounterMode(display=False)
        with reference, torch.no_grad():
            model(image)
        assert count_macs(lambda: model(image)) == reference.get_total_flops() // 2
