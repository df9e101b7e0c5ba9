"""Inference copies (mama.models.inference): BN folding, channels_last and Winograd change the
arithmetic, never the function; the models handed in are left as they were."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mama.evaluate.engine import Scorer
from mama.models import inference
from mama.models.deeplab import DeepLabV3Logits
from mama.models.destroyer import Destroyer
from mama.models.flownet2 import FlowNet2SD
from mama.models.generator import F2LMGenerator
from mama.models.inference import (
    WinogradConv2d,
    fold_batchnorm,
    prepare_for_inference,
    swap_winograd,
    tiles_used,
)
from mama.features.extractor import FeatureExtractor
from mama.features.labels import DeepLabLabels, ForegroundLabels
from mama.features.motion import DISFlow, FlowNetFlow


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Fresh BN statistics and affine terms: with the defaults (mean 0, var 1, weight 1, bias 0)
    folding would be a no-op and prove nothing."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)
    return model.eval()


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def assert_same_function(got: torch.Tensor, want: torch.Tensor) -> None:
    # Folding and Winograd reorder float32 sums through ~20 layers; relative to the output scale.
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, atol=2e-5 * scale, rtol=1e-4)


def generator_inputs(size: int, batch: int, label_channels: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, 12, size, size, generator=gen) * 2 - 1
    flows = torch.randn(batch, 6, size, size, generator=gen) * 0.1
    labels = torch.randn(batch, label_channels, size, size, generator=gen) if label_channels else None
    return frames, flows, labels


def test_generator_copy_computes_the_same_outputs():
    torch.manual_seed(0)
    net = randomize_batchnorm(F2LMGenerator(label_channels=8, base=16), seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = prepare_for_inference(net)
    assert batchnorms(fast) == 0 and batchnorms(net) == 36  # 18 DoubleConvs x 2, all folded
    assert sum(isinstance(m, WinogradConv2d) for m in fast.modules()) > 0
    inputs = generator_inputs(32, 3, 8, seed=2)
    with torch.inference_mode():
        want, got = net(*inputs), fast(*inputs)
    for w, g in zip(want, got):
        if w is not None:
            assert_same_function(g, w)
    # The model handed in is untouched: same weights, BN in place, contiguous layout.
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.inc_x.conv.conv[0].weight.is_contiguous()


def test_destroyer_copy_computes_the_same_output():
    torch.manual_seed(3)
    net = randomize_batchnorm(Destroyer(base=16), seed=4)
    x = torch.rand(2, 3, 48, 40) * 2 - 1
    with torch.inference_mode():
        assert_same_function(prepare_for_inference(net)(x), net(x))


def test_deeplab_copy_folds_resnet_blocks_and_computes_the_same_logits():
    torch.manual_seed(5)
    net = randomize_batchnorm(DeepLabV3Logits(), seed=6)
    fast = prepare_for_inference(net)
    assert batchnorms(net) > 100 and batchnorms(fast) == 0
    # Dilated layer3/layer4 convs take the Winograd path; ASPP's d = 12..36 on a 4x4 map not.
    dilations = {m.dilation for m in fast.modules() if isinstance(m, WinogradConv2d)}
    assert {2, 4} <= dilations
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert_same_function(fast.stride8_logits(x), net.stride8_logits(x))


def test_flownet2sd_copy_computes_the_same_flow():
    torch.manual_seed(7)
    net = FlowNet2SD().eval()
    pair = torch.rand(1, 3, 2, 64, 64) * 510 - 255
    with torch.inference_mode():
        assert_same_function(prepare_for_inference(net)(pair), net(pair))


def test_fold_only_where_the_data_flow_is_certain():
    """A BN registered after a conv but fed by something else must not be folded."""

    class Crossed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)  # normalises the INPUT, not the conv's output

        def forward(self, x):
            return self.conv(self.bn(x))

    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    assert fold_batchnorm(randomize_batchnorm(Crossed(), 8)) == 0
    assert fold_batchnorm(randomize_batchnorm(seq, 9)) == 1 and type(seq[1]) is nn.Identity


def test_swap_rule_and_relu_fusion():
    seq = nn.Sequential(
        nn.Conv2d(128, 128, 3, padding=1), nn.Identity(), nn.ReLU(),  # swapped, ReLU fused
        nn.Conv2d(128, 128, 3, padding=1),  # swapped, nothing to fuse (last)
    )
    narrow = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())  # too narrow: kept direct
    strided = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1, stride=2))  # not a Winograd shape
    assert swap_winograd(seq) == 2
    assert seq[0].relu and type(seq[2]) is nn.Identity and not seq[3].relu
    assert swap_winograd(narrow) == 0 and swap_winograd(strided) == 0


def test_winograd_module_falls_back_where_it_does_not_pay(monkeypatch):
    conv = nn.Conv2d(8, 8, 3, padding=12, dilation=12)
    module = WinogradConv2d(conv, relu=True)
    calls = []
    real = inference.ops.winograd_conv3x3
    monkeypatch.setattr(inference.ops, "winograd_conv3x3", lambda *a: calls.append(a) or real(*a))
    x = torch.randn(1, 8, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(module(x), conv(x).relu())  # 16x16 map, d = 12: direct
        assert not calls
        module(torch.randn(1, 8, 48, 48))  # 48 = 4 * 12: every tile inside
        assert len(calls) == 1
    assert tiles_used(16, 16, 12) < inference.MIN_TILES_USED <= tiles_used(48, 48, 12)
    # With gradients on it is the differentiable F.conv2d.
    x = torch.randn(1, 8, 24, 24, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and len(calls) == 1


def test_winograd_module_rejects_other_convolutions():
    with pytest.raises(ValueError, match="3x3 stride-1 ungrouped conv with padding == dilation"):
        WinogradConv2d(nn.Conv2d(4, 4, 3, padding=0))


def test_extractor_copy_prepares_networks_and_shares_weight_free_providers():
    torch.manual_seed(10)
    deeplab = randomize_batchnorm(DeepLabV3Logits(), 11)
    extractor = FeatureExtractor(FlowNetFlow("flownet2sd", FlowNet2SD().eval()), DeepLabLabels(deeplab))
    fast = extractor.inference_copy()
    assert fast.labels.model is not deeplab and batchnorms(fast.labels.model) == 0
    assert extractor.labels.model is deeplab and batchnorms(deeplab) > 0
    frames = torch.rand(6, 3, 64, 64) * 2 - 1  # FlowNet needs multiples of 64
    with torch.inference_mode():
        assert_same_function(fast.coarse_labels(frames), extractor.coarse_labels(frames))
        assert_same_function(fast.coarse_flows(frames[:-1], frames[1:]), extractor.coarse_flows(frames[:-1], frames[1:]))
    light = FeatureExtractor(DISFlow(), ForegroundLabels())
    prepared = light.inference_copy()
    assert prepared.motion is light.motion and prepared.labels is light.labels


def test_scorer_streams_equal_with_and_without_inference_copies():
    torch.manual_seed(12)
    extractor = FeatureExtractor(DISFlow(), ForegroundLabels())
    net_g = randomize_batchnorm(F2LMGenerator(label_channels=4, base=16), 13)
    net_a = randomize_batchnorm(Destroyer(base=16), 14)
    gen = torch.Generator().manual_seed(15)
    video = torch.rand(9, 3, 32, 32, generator=gen) * 2 - 1
    background = video.median(dim=0).values
    plain = Scorer(net_g, extractor, net_a, optimize=False).video_streams(video, background)
    fast = Scorer(net_g, extractor, net_a).video_streams(video, background)
    assert plain.keys() == fast.keys() == {"sse", "sim_motion", "sim_label", "destroyer_sse"}
    for key in plain:
        torch.testing.assert_close(torch.from_numpy(fast[key]), torch.from_numpy(plain[key]), atol=1e-6, rtol=1e-4)


def test_copies_are_made_once():
    """Preparing a copy again returns it unchanged: a trainer's frozen extractor and a
    Scorer rebuilt from another Scorer's copies do not pay for new ones."""
    torch.manual_seed(16)
    net = F2LMGenerator(label_channels=4, base=8)
    fast = prepare_for_inference(net)
    assert prepare_for_inference(fast) is fast and not getattr(net, "is_inference_copy", False)
    extractor = FeatureExtractor(DISFlow(), ForegroundLabels())
    prepared = extractor.inference_copy()
    assert prepared.inference_copy() is prepared
    scorer = Scorer(net, prepared, None)
    assert scorer.generator is not net and scorer.extractor is prepared
    again = Scorer(scorer.generator, scorer.extractor, None)
    assert again.generator is scorer.generator
