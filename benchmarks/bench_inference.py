"""Inference copies on CPU (mama.models.inference): where Winograd F(2x2, 3x3) pays.

Group `conv-<C>-<K>-<H>-d<dilation>`: one 3x3 convolution, batch 8, channels_last input,
the direct oneDNN convolution (F.conv2d) against mama::winograd_conv3x3 on the same
weights. The shapes are the ones the F2LM generator, the destroyer and DeepLabv3 run at
128x128; `use_winograd`'s thresholds (>= 128 channels in and out) come from this table.
Group `model-<name>`: a whole network in eval mode against its `prepare_for_inference` copy.

    pytest benchmarks/bench_inference.py --benchmark-only --benchmark-json benchmarks/results/cpu_inference.json
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mama import ops
from mama.models.inference import prepare_for_inference

BATCH = 8
# (C, K, H, dilation)
SHAPES = [
    (64, 64, 128, 1),
    (128, 64, 128, 1),
    (128, 128, 64, 1),
    (256, 128, 64, 1),
    (256, 256, 32, 1),
    (512, 256, 32, 1),
    (512, 512, 16, 1),
    (1536, 512, 16, 1),
    (256, 256, 16, 2),
    (512, 512, 16, 4),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("impl", ["direct", "winograd"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}-d{s[3]}")
def test_conv(benchmark, shape, impl):
    c, k, h, d = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, c, h, h, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(k, c, 3, 3, generator=gen) / (3 * c**0.5)).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(k, generator=gen)
    benchmark.group = f"conv-{c}-{k}-{h}-d{d}"
    benchmark.extra_info.update(impl=impl, macs_direct=BATCH * h * h * c * k * 9)
    with torch.inference_mode():
        if impl == "direct":
            benchmark.pedantic(lambda: F.conv2d(x, weight, bias, padding=d, dilation=d), rounds=3, warmup_rounds=1)
        else:
            u = ops.winograd_filter(weight)
            benchmark.pedantic(lambda: ops.winograd_conv3x3(x, u, bias, d), rounds=3, warmup_rounds=1)


def _model(name: str):
    from mama.models.deeplab import DeepLabV3Logits
    from mama.models.destroyer import Destroyer
    from mama.models.generator import F2LMGenerator

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if name == "generator":
        net = F2LMGenerator(label_channels=84, base=64)
        args = (torch.rand(BATCH, 12, 128, 128, generator=gen), torch.randn(BATCH, 6, 128, 128, generator=gen) * 0.1,
                torch.randn(BATCH, 84, 128, 128, generator=gen))
        return net, args
    if name == "destroyer":
        return Destroyer(base=64), (torch.rand(BATCH, 3, 128, 128, generator=gen),)
    return DeepLabV3Logits(), (torch.rand(BATCH, 3, 128, 128, generator=gen),)


@pytest.mark.parametrize("impl", ["eager", "prepared"])
@pytest.mark.parametrize("name", ["generator", "destroyer", "deeplab"])
def test_model(benchmark, name, impl):
    net, args = _model(name)
    net = net.eval()
    if impl == "prepared":
        net = prepare_for_inference(net)
    benchmark.group = f"model-{name}"
    benchmark.extra_info.update(impl=impl, batch=BATCH, size=128)
    with torch.inference_mode():
        benchmark.pedantic(lambda: net(*args), rounds=2, warmup_rounds=1)
