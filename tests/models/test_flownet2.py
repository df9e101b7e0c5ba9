"""FlowNet2 family: checkpoint layout, output shapes and modes, input normalisation, the
F2LM reference use of FlowNet2-SD, strict checkpoint loading, torch.compile."""

from __future__ import annotations

import argparse
import functools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mama import reference
from mama.errors import MamaError
from mama.features import motion
from mama.features.registry import build_motion_provider
from mama.models import flownet2 as fn
from mama.weights import resolve_weights
from tests.models.flownet2_keys import EXPECTED, PUBLISHED_PARAMETER_COUNTS

PAIR_MODELS = ["FlowNet2C", "FlowNet2S", "FlowNet2SD", "FlowNet2CS", "FlowNet2CSS", "FlowNet2"]
STACKS = ["FlowNet2CS", "FlowNet2CSS", "FlowNet2"]  # return the final flow in both modes


# Where each model's weights sit in a FlowNet2 (state-dict key prefix).
PART_OF_FLOWNET2 = {
    "FlowNetC": "flownetc.",
    "FlowNet2C": "flownetc.",
    "FlowNetS": "flownets_1.",
    "FlowNetSD": "flownets_d.",
    "FlowNet2SD": "flownets_d.",
    "FlowNetFusion": "flownetfusion.",
    "FlowNet2CS": "",
    "FlowNet2CSS": "",
}


def on_meta(name: str, **kwargs) -> torch.nn.Module:
    """The model without storage (layout only, or to be filled with assign=True)."""
    with torch.device("meta"):
        return fn.MODELS[name](**kwargs)


@functools.cache
def built(name: str) -> torch.nn.Module:
    """One random-weight instance per model for the whole run. Only FlowNet2 and FlowNet2S
    are initialised; the others share FlowNet2's tensors (separate inits would cost seconds
    and gigabytes), which is the layout the stacked checkpoints have anyway."""
    if name in ("FlowNet2", "FlowNet2S"):
        torch.manual_seed(sum(map(ord, name)))
        return fn.MODELS[name]()
    source, prefix = built("FlowNet2").state_dict(), PART_OF_FLOWNET2[name]
    model = on_meta(name)
    model.load_state_dict({k: source[prefix + k] for k in model.state_dict()}, assign=True)
    return model


def raw_pair(batch: int, size: int, seed: int) -> torch.Tensor:
    """A random raw pair (B, 3, 2, H, W) in [0, 255]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 2, size, size, generator=g) * 255


def layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def save_flownet2_checkpoint(state: dict, path, module_prefix: bool) -> None:
    """Write a checkpoint the way flownet2-pytorch does (optionally from a DataParallel)."""
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"arch": "test", "epoch": 3, "state_dict": state, "best_EPE": 1e10}, path)


# ------------------------------------------------------------------ layout


@pytest.mark.parametrize("name", list(fn.MODELS))
def test_state_dict_matches_published_layout(name):
    assert layout(on_meta(name)) == EXPECTED[name]


def test_parameter_counts_match_published_numbers():
    for name, count in PUBLISHED_PARAMETER_COUNTS.items():
        assert sum(p.numel() for p in on_meta(name).parameters()) == count, name


# ------------------------------------------------------------------ shapes and modes


@pytest.mark.parametrize("name", PAIR_MODELS)
def test_pair_models_output_shapes_in_both_modes(name):
    model, x = built(name), raw_pair(1, 64, seed=1)
    with torch.no_grad():
        model.train()
        train_out = model(x)
        model.eval()
        flow = model(x)
    assert flow.shape == (1, 2, 64, 64)
    assert torch.isfinite(flow).all()
    if name in STACKS:  # no dropout or batch norm: the same final flow in both modes
        torch.testing.assert_close(train_out, flow, rtol=0, atol=0)
    else:  # training: the five multiscale predictions, finest (stride 4) first
        assert [tuple(f.shape) for f in train_out] == [
            (1, 2, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)
        ]
        # eval = x4 bilinear upsampling of flow2 * div_flow (same weights, same input)
        expected = F.interpolate(
            train_out[0] * 20.0, scale_factor=4, mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(flow, expected, rtol=1e-5, atol=1e-5)


def test_flownet2_eval_is_deterministic():
    # the full stack runs every net, the correlation and the warps
    model, x = built("FlowNet2").eval(), raw_pair(1, 64, seed=10)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_flownet2_fusion_input_follows_the_published_wiring():
    # FlowNet2 fuses: img0, SD flow (nearest x4 of flow2 / div_flow), CSS flow, their norms,
    # and the residual norms of img1 warped by each (oracle: mama.reference.warp_residual).
    full, x = built("FlowNet2").eval(), raw_pair(1, 64, seed=11)
    seen = {}
    handle = full.flownetfusion.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    try:
        with torch.no_grad():
            full(x)
            css = built("FlowNet2CSS").eval()(x)
            pair = fn.normalize_pair(x, 255.0)
            sd = F.interpolate(built("FlowNetSD").eval()(pair)[0] / 20.0, scale_factor=4)
    finally:
        handle.remove()
    img0, img1 = pair[:, :3], pair[:, 3:]
    expected = torch.cat(
        (
            img0,
            sd,
            css,
            torch.linalg.vector_norm(sd, dim=1, keepdim=True),
            torch.linalg.vector_norm(css, dim=1, keepdim=True),
            reference.warp_residual(img0, img1, sd)[1],
            reference.warp_residual(img0, img1, css)[1],
        ),
        dim=1,
    )
    assert seen["x"].shape == (1, 11, 64, 64)
    torch.testing.assert_close(seen["x"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,channels", [("FlowNetC", 6), ("FlowNetS", 12), ("FlowNetSD", 6)])
def test_bare_networks_return_five_scales_in_train_and_flow2_in_eval(name, channels):
    model = built(name)
    x = torch.randn(2, channels, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model.train()
        train_out = model(x)
        model.eval()
        (flow2,) = model(x)
    assert [tuple(f.shape) for f in train_out] == [
        (2, 2, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)
    ]
    torch.testing.assert_close(flow2, train_out[0], rtol=0, atol=0)


def test_fusion_returns_full_resolution_flow():
    x = torch.randn(2, 11, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert built("FlowNetFusion")(x).shape == (2, 2, 64, 64)


def test_flownet2sd_at_256_in_both_modes():
    model, x = built("FlowNet2SD"), raw_pair(1, 256, seed=4)
    with torch.no_grad():
        model.train()
        train_out = model(x)
        model.eval()
        flow = model(x)
    assert [tuple(f.shape) for f in train_out] == [
        (1, 2, 256 // s, 256 // s) for s in (4, 8, 16, 32, 64)
    ]
    assert flow.shape == (1, 2, 256, 256)
    torch.testing.assert_close(model.upsample_flow(train_out[0] * 20.0), flow, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ input normalisation


def test_per_channel_offsets_of_both_frames_do_not_change_the_flow():
    # The net subtracts the per-channel mean over the pair: a colour cast is invisible.
    model, x = built("FlowNet2SD").eval(), raw_pair(1, 64, seed=5)
    offset = torch.tensor([30.0, -20.0, 10.0]).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x + offset), model(x), rtol=1e-4, atol=1e-3)


def test_rgb_max_scales_the_input():
    unit = on_meta("FlowNet2SD", rgb_max=1.0).eval()
    unit.load_state_dict(built("FlowNet2SD").state_dict(), assign=True)
    model, x = built("FlowNet2SD").eval(), raw_pair(1, 64, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(unit(x / 255.0), model(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 3, 2, 64, 96), (1, 3, 2, 70, 64)])
def test_sizes_not_multiple_of_64_are_rejected(shape):
    with pytest.raises(MamaError, match=r"multiples of 64"):
        built("FlowNet2SD")(torch.zeros(shape))


def test_unstacked_frames_are_rejected():
    with pytest.raises(MamaError, match=r"\(B, 3, 2, H, W\)"):
        built("FlowNet2SD")(torch.zeros(1, 6, 64, 64))


# ------------------------------------------------------------------ F2LM reference semantics


def test_flownet2sd_reference_flow_semantics():
    model = built("FlowNet2SD")
    g = torch.Generator().manual_seed(7)
    frame_a = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1  # [-1, 1] BGR as read
    frame_b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    model.train()  # the reference flow is the eval flow whatever the module's flag
    with torch.no_grad():
        flow = motion.flownet2sd_reference_flow(model, frame_a, frame_b)
        lowres = motion.flownet2sd_reference_lowres(model, frame_a, frame_b)
        model.eval()
        pair = torch.stack((frame_a, frame_b), dim=2) * 255.0
        expected = model(pair) / 255.0
    assert flow.shape == (2, 2, 64, 64) and lowres.shape == (2, 2, 16, 16)
    torch.testing.assert_close(flow, expected, rtol=0, atol=0)
    # the cache point is exact: finishing a cached low-res flow gives the same flow
    torch.testing.assert_close(
        motion.flownet2sd_reference_flow_from_lowres(lowres), flow, rtol=0, atol=0
    )


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(
    "name,file_name,module_prefix,from_weights_dir",
    [
        # the paper's flow net as published, found in the weights dir by its provider name
        ("FlowNet2SD", "FlowNet2-SD_checkpoint.pth.tar", False, True),
        # saved from DataParallel (small nets keep the test fast; the layouts are checked above)
        ("FlowNetFusion", "my_fusion.pth.tar", True, False),
        ("FlowNetFusion", "my_fusion.safetensors", False, False),
    ],
)
def test_checkpoint_round_trip(
    tmp_path, monkeypatch, name, file_name, module_prefix, from_weights_dir
):
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path))
    source = built(name)
    path = tmp_path / file_name
    if path.suffix == ".safetensors":
        state = source.state_dict()
        save_file({(f"module.{k}" if module_prefix else k): v for k, v in state.items()}, path)
    else:
        save_flownet2_checkpoint(source.state_dict(), path, module_prefix)
    loaded = (
        fn.load_flownet("flownet2sd", resolve_weights("flownet2sd"), device="cpu")
        if from_weights_dir
        else fn.load_flownet(name, path)
    )
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    g = torch.Generator().manual_seed(8)
    x = (
        torch.randn(1, 11, 64, 64, generator=g)
        if name == "FlowNetFusion"
        else raw_pair(1, 64, seed=8)
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x), rtol=0, atol=0)


def test_legacy_format_alias_names_and_unfrozen_load(tmp_path):
    # The published .pth.tar files predate torch's zip format: the legacy format must load.
    source = built("FlowNetFusion")  # the cheapest net; layout checked for every model above
    payload = {"epoch": 0, "state_dict": source.state_dict(), "best_EPE": 1e10}
    torch.save(payload, tmp_path / "fusion.pth", _use_new_zipfile_serialization=False)
    loaded = fn.load_flownet("flownet-fusion", tmp_path / "fusion.pth", frozen=False)
    assert all(p.requires_grad for p in loaded.parameters())
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def _fusion_state() -> dict[str, torch.Tensor]:
    return dict(built("FlowNetFusion").state_dict())


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.pop("predict_flow0.bias"), r"1 missing keys \(predict_flow0\.bias\)"),
        (lambda s: s.update({"extra.weight": torch.zeros(1)}), r"1 unexpected keys \(extra\.weight\)"),
        (
            lambda s: s.update({"conv0.0.weight": torch.zeros(64, 12, 3, 3)}),
            r"1 wrong shapes \(conv0\.0\.weight: file \(64, 12, 3, 3\) vs model",
        ),
    ],
)
def test_wrong_keys_or_shapes_name_the_file(tmp_path, edit, message):
    state = _fusion_state()
    edit(state)
    path = tmp_path / "bad_checkpoint.pth.tar"
    save_flownet2_checkpoint(state, path, module_prefix=False)
    with pytest.raises(
        MamaError, match=rf"bad_checkpoint\.pth\.tar: not a FlowNetFusion checkpoint .*{message}"
    ):
        fn.load_flownet("FlowNetFusion", path)


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    path = tmp_path / "FlowNet2-S_checkpoint.pth.tar"
    save_flownet2_checkpoint(built("FlowNet2S").state_dict(), path, module_prefix=False)
    # FlowNetS inside the stacks reads 12 channels, FlowNet2-S 6: only conv1 differs.
    with pytest.raises(
        MamaError,
        match=r"FlowNet2-S_checkpoint\.pth\.tar: .*wrong shapes \(conv1\.0\.weight: file \(64, 6, 7, 7\) vs model \(64, 12, 7, 7\)\)",
    ):
        fn.load_flownet("FlowNetS", path)


def test_missing_file_says_which_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        MamaError,
        match=r"FlowNet2-SD_checkpoint\.pth\.tar.*flownet2-pytorch.*mama weights import FILE",
    ) as err:
        build_motion_provider("flownet2sd")
    assert str(tmp_path / "weights") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MamaError, match=r"nowhere\.pth does not exist; pass the path of FlowNet2_checkpoint\.pth\.tar"):
        build_motion_provider("flownet2", weights=tmp_path / "nowhere.pth")
    with pytest.raises(MamaError, match=r"nowhere\.pth does not exist; pass the path of a flownet2-pytorch checkpoint"):
        fn.load_flownet("FlowNet2", tmp_path / "nowhere.pth")


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"not a checkpoint at all", r": corrupt or not a torch checkpoint"),
        # weights_only=True refuses to rebuild arbitrary objects
        ({"state_dict": {}, "args": argparse.Namespace(lr=1e-4)}, r" is not a weights-only checkpoint.*argparse"),
        ({"state_dict": {"conv0.0.weight": "text"}}, r": not a flownet2-pytorch checkpoint"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, payload, message):
    path = tmp_path / "junk.pth.tar"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(MamaError, match=rf"junk\.pth\.tar{message}"):
        fn.load_flownet("FlowNet2SD", path)


def test_unknown_model_name(tmp_path):
    with pytest.raises(MamaError, match=r"unknown FlowNet model 'PWCNet'"):
        fn.load_flownet("PWCNet", tmp_path / "any.pth")


# ------------------------------------------------------------------ torch.compile


@pytest.mark.compile
def test_compiled_flownet2sd_matches_eager():
    model, x = built("FlowNet2SD").eval(), raw_pair(1, 64, seed=9)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    # float32 convs reordered by inductor: relative error well under 1e-4 of the flow scale
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3 * eager.abs().max().item())
