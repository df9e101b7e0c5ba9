"""The F2LM generator, destroyer, discriminator and their shared layers: shapes, features,
determinism, state-dict round trips, the reference key schema, init, torch.compile."""
from __future__ import annotations

import pytest
import torch

from mama.models.destroyer import Destroyer
from mama.models.discriminator import PatchDiscriminator
from mama.models.generator import F2LMGenerator, GeneratorOutput
from mama.models.layers import SqueezeExcite, UpBlock
from tests.models.reference_keys import DESTROYER_KEYS, DISCRIMINATOR_KEYS, GENERATOR_KEYS

UNIT_NORM_ATOL = 1e-5  # float32 L2 normalisation


def make_inputs(seed: int, batch: int, size: tuple[int, int], label_channels: int):
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    frames = torch.rand(batch, 12, h, w, generator=gen) * 2 - 1
    flows = torch.randn(batch, 6, h, w, generator=gen) * 0.05
    labels = torch.randn(batch, label_channels, h, w, generator=gen) * 3 if label_channels else None
    return frames, flows, labels


def make_generator(seed: int, **kwargs) -> F2LMGenerator:
    torch.manual_seed(seed)
    return F2LMGenerator(**kwargs)


def check_features(out: GeneratorOutput, batch: int, width: int, hw: tuple[int, int], with_labels: bool):
    names = ["x4", "y4", "x_y"] + (["z4", "x_z"] if with_labels else [])
    for name in names:
        feat = getattr(out, name)
        assert feat.shape == (batch, width, *hw), name
        assert feat.dtype == torch.float32
        norms = feat.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=UNIT_NORM_ATOL, rtol=0, msg=name)
    if not with_labels:
        assert out.z4 is None and out.x_z is None


@torch.no_grad()
def test_generator_paper_size_256():
    # The paper's configuration, once: base 64, 84 label channels, 256x256, batch 1.
    model = make_generator(0).eval()
    frames, flows, labels = make_inputs(1, 1, (256, 256), 84)
    out = model(frames, flows, labels)
    assert out.pred.shape == (1, 3, 256, 256) and out.pred.dtype == torch.float32
    assert torch.isfinite(out.pred).all() and out.pred.abs().max() <= 1
    check_features(out, 1, 512, (32, 32), with_labels=True)


@pytest.mark.parametrize("label_channels", [84, 4, 0], ids=["deeplab-84", "foreground-4", "no-labels"])
@torch.no_grad()
def test_generator_label_variants_64(label_channels):
    model = make_generator(2, label_channels=label_channels, base=16).eval()
    frames, flows, labels = make_inputs(3, 2, (64, 64), label_channels)
    out = model(frames, flows, labels)
    assert out.pred.shape == (2, 3, 64, 64) and out.pred.dtype == torch.float32
    assert torch.isfinite(out.pred).all() and out.pred.abs().max() <= 1
    check_features(out, 2, 128, (8, 8), with_labels=label_channels > 0)


def test_generator_without_labels_has_no_label_modules():
    model = make_generator(4, label_channels=0, base=8)
    names = {n.split(".")[0] for n in model.state_dict()}
    assert not {n for n in names if n.endswith("_z") or n == "transform_xtoz"}
    assert model.fusion_conv.conv[0].in_channels == 2 * 64  # cat[x4, x_y]
    with_labels = make_generator(4, label_channels=4, base=8)
    assert with_labels.fusion_conv.conv[0].in_channels == 3 * 64


@torch.no_grad()
def test_generator_odd_size_pads_to_skip():
    # 60x44: the bottleneck is 7x5, the first up gives 14x10 against a 15x11 skip.
    model = make_generator(5, label_channels=4, base=8).eval()
    frames, flows, labels = make_inputs(6, 1, (60, 44), 4)
    out = model(frames, flows, labels)
    assert out.pred.shape == (1, 3, 60, 44)
    assert out.x4.shape == (1, 64, 7, 5)
    assert torch.isfinite(out.pred).all()


@torch.no_grad()
def test_eval_mode_is_deterministic():
    model = make_generator(7, base=16).eval()
    inputs = make_inputs(8, 2, (64, 64), 84)
    first, second = model(*inputs), model(*inputs)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    destroyer = Destroyer(base=16).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    assert torch.equal(destroyer(x), destroyer(x))


def test_every_generator_parameter_gets_a_gradient():
    model = make_generator(10, label_channels=4, base=8).train()
    out = model(*make_inputs(11, 2, (32, 32), 4))
    loss = out.pred.square().mean() + sum((f * f.roll(1, dims=0)).sum() for f in out[1:])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_generator_rejects_bad_inputs():
    model = make_generator(12, label_channels=4, base=8)
    frames, flows, labels = make_inputs(13, 1, (32, 32), 4)
    with pytest.raises(ValueError, match=r"frames must be \(B, 12, H, W\)"):
        model(frames[:, :9], flows, labels)
    with pytest.raises(ValueError, match=r"labels must be \(B, 4, H, W\), got None"):
        model(frames, flows, None)
    with pytest.raises(ValueError, match="flows must be"):
        model(frames, flows[..., :16], labels)
    with pytest.raises(ValueError, match="labels must be None"):
        make_generator(12, label_channels=0, base=8)(frames, flows, labels)


@torch.no_grad()
def test_destroyer_and_discriminator_shapes_64():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(14)) * 2 - 1
    destroyer = Destroyer(base=16).eval()
    y = destroyer(x)
    assert y.shape == (2, 3, 64, 64) and y.dtype == torch.float32 and y.abs().max() <= 1
    disc = PatchDiscriminator(widths=(16, 32, 64, 64)).eval()
    p = disc(x)
    # k4 p2: 64 -> 33 -> 17 -> 9 (stride 2) -> 10 -> 11 (stride 1)
    assert p.shape == (2, 1, 11, 11) and p.dtype == torch.float32
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_generator(15, label_channels=84, base=16),
        lambda: Destroyer(base=16),
        lambda: PatchDiscriminator(widths=(16, 32, 64, 64)),
    ],
    ids=["generator", "destroyer", "discriminator"],
)
def test_state_dict_round_trip(tmp_path, build):
    torch.manual_seed(16)
    source = build().eval()
    # Move BN running stats off their defaults so the round trip covers buffers too.
    for m in source.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(17)
    target = build().eval()
    target.load_state_dict(torch.load(path, weights_only=True), strict=True)
    if isinstance(source, F2LMGenerator):
        inputs = make_inputs(18, 1, (64, 64), 84)
    else:
        inputs = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(18)) * 2 - 1,)
    with torch.no_grad():
        a, b = source(*inputs), target(*inputs)
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.equal(x, y)


def schema(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_key_schemas_equal_the_reference():
    with torch.device("meta"):  # the paper's sizes, without allocating them
        generator = F2LMGenerator()
        destroyer = Destroyer()
        discriminator = PatchDiscriminator()
    assert schema(generator) == list(GENERATOR_KEYS.items())
    assert schema(destroyer) == list(DESTROYER_KEYS.items())
    assert schema(discriminator) == list(DISCRIMINATOR_KEYS.items())


def test_generator_parameter_count_base64():
    with torch.device("meta"):
        model = F2LMGenerator()
    expected = sum(torch.Size(s).numel() for k, s in GENERATOR_KEYS.items()
                   if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert sum(p.numel() for p in model.parameters()) == expected


def test_squeeze_excite_matches_its_formula():
    gen = torch.Generator().manual_seed(19)
    torch.manual_seed(19)
    se = SqueezeExcite(32, reduction=8)
    x = torch.randn(3, 32, 5, 7, generator=gen)
    pooled = x.mean(dim=(2, 3))
    hidden = torch.relu(pooled @ se.fc1.weight.T + se.fc1.bias)
    gate = torch.sigmoid(hidden @ se.fc2.weight.T + se.fc2.bias)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None], atol=1e-6, rtol=1e-5)


def test_up_block_concatenates_skip_first():
    # With the upsampling zeroed, the DoubleConv sees [skip, 0]: zeroing the weights that
    # read the first half must then make the output independent of the skip.
    torch.manual_seed(20)
    up = UpBlock(8, 4).eval()
    with torch.no_grad():
        up.up.weight.zero_()
        up.up.bias.zero_()
        up.conv.conv[0].weight[:, :4] = 0
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(1, 8, 3, 3, generator=gen)
    skip_a, skip_b = torch.randn(2, 1, 4, 6, 6, generator=gen)
    with torch.no_grad():
        assert torch.equal(up(x, skip_a), up(x, skip_b))


def test_weight_init_follows_the_reference():
    torch.manual_seed(22)
    gen = F2LMGenerator(base=32)
    conv = gen.transform_xtoy.conv[0].weight
    assert abs(conv.std().item() - 0.02) < 0.001 and abs(conv.mean().item()) < 0.001
    assert torch.count_nonzero(gen.outc.bias) == 0 and torch.count_nonzero(gen.se.fc1.bias) == 0
    assert torch.equal(gen.inc_x.conv.conv[1].weight, torch.ones(32))
    disc = PatchDiscriminator()
    w = disc.net[4].weight
    assert abs(w.std().item() - 0.02) < 0.001


def test_destroyer_init_follows_the_reference():
    # Every conv and transposed conv weight ~ N(0, 0.02), BN weight ~ N(1, 0.02) and bias 0.
    torch.manual_seed(24)
    destroyer = Destroyer(base=32)
    convs = [m for m in destroyer.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 4 * 2 + 3 * 3 + 1  # 4 encoder + 3 decoder double convs, 3 up-convs, outc
    for m in convs:
        w = m.weight.detach()
        # PyTorch's default (kaiming-uniform) would give std ~ 1/sqrt(3 * fan_in): 0.11 at fan_in 27.
        assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002, m
    # The widest layers have ~600k weights: their std is 0.02 within 0.1%.
    widest = destroyer.down3.mpconv[1].conv[3].weight.detach()
    assert abs(widest.std().item() - 0.02) < 2e-4
    bns = [m for m in destroyer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weights = torch.cat([m.weight.detach() for m in bns])
    assert abs(weights.mean().item() - 1) < 0.002 and abs(weights.std().item() - 0.02) < 0.002
    assert all(torch.count_nonzero(m.bias) == 0 for m in bns)


def test_discriminator_is_the_reference_layout():
    # k4 / p2 everywhere, strides 2, 2, 2, 1, 1: a 256x256 frame gives a 35x35 patch map.
    with torch.device("meta"):
        disc = PatchDiscriminator()
        assert disc(torch.empty(2, 3, 256, 256)).shape == (2, 1, 35, 35)
    convs = [m for m in disc.net if isinstance(m, torch.nn.Conv2d)]
    assert [m.stride for m in convs] == [(2, 2)] * 3 + [(1, 1)] * 2
    assert all(m.kernel_size == (4, 4) and m.padding == (2, 2) for m in convs)
    assert [(m.in_channels, m.out_channels) for m in convs] == [(3, 128), (128, 256), (256, 512), (512, 512), (512, 1)]
    acts = [m for m in disc.net if not isinstance(m, torch.nn.Conv2d)]
    assert len(acts) == 4 and all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in acts)
    assert [k for k in disc.state_dict()] == [f"net.{i}.{p}" for i in (0, 2, 4, 6, 8) for p in ("weight", "bias")]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(25)) * 2 - 1
    y = PatchDiscriminator(widths=(8, 8, 8, 8))(x)
    assert ((y > 0) & (y < 1)).all()  # sigmoid out


@pytest.mark.compile
def test_compiled_generator_matches_eager():
    model = make_generator(23, label_channels=84, base=8).eval()
    inputs = make_inputs(24, 2, (64, 64), 84)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager, fast = model(*inputs), compiled(*inputs)
    # Inductor fuses and reorders float32 reductions: agree to 1e-4 (outputs are O(1)).
    for name, a, b in zip(GeneratorOutput._fields, eager, fast):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4, msg=name)
