"""Checkpoint loading: accepted payloads (mama state dicts, safetensors, `module.` keys,
reference-code training checkpoints) and rejected ones (missing file, corrupt file,
non-weights-only pickle, missing / unexpected / mis-shaped keys, the wrong stage)."""
from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from mama.errors import MamaError
from mama.models.build import models_from_run
from mama.models.checkpoint import build_destroyer_from_state_dict, build_generator_from_state_dict, load_strict, read_file
from mama.models.destroyer import Destroyer
from mama.models.discriminator import PatchDiscriminator, widths_from_state_dict
from mama.models.generator import F2LMGenerator


def load_generator(path) -> F2LMGenerator:
    return build_generator_from_state_dict(read_file(path), str(path)).eval()


def load_destroyer(path) -> Destroyer:
    return build_destroyer_from_state_dict(read_file(path), str(path)).eval()


class NotATensor:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


def randomise_bn_stats(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(7)
    return model


def small_generator(seed: int, label_channels: int = 84) -> F2LMGenerator:
    torch.manual_seed(seed)
    return randomise_bn_stats(F2LMGenerator(label_channels=label_channels, base=8), seed).eval()


def small_destroyer(seed: int) -> Destroyer:
    torch.manual_seed(seed)
    return randomise_bn_stats(Destroyer(base=8), seed).eval()


def generator_inputs(seed: int, label_channels: int = 84):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randn(1, label_channels, 32, 32, generator=gen) if label_channels else None
    return torch.rand(1, 12, 32, 32, generator=gen) * 2 - 1, torch.randn(1, 6, 32, 32, generator=gen) * 0.05, labels


def assert_same_generator(a: F2LMGenerator, b: F2LMGenerator, label_channels: int = 84) -> None:
    inputs = generator_inputs(99, label_channels)
    with torch.no_grad():
        for x, y in zip(a(*inputs), b(*inputs)):
            assert (x is None and y is None) or torch.equal(x, y)


def adamw_state(model: torch.nn.Module) -> dict:
    """What AdamW.state_dict() holds after a step (built directly: constructing torch.optim is slow here)."""
    params = list(model.parameters())
    state = {
        i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(p) * 1e-3, "exp_avg_sq": torch.rand_like(p) * 1e-6}
        for i, p in enumerate(params)
    }
    group = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4, "amsgrad": False,
             "foreach": None, "maximize": False, "capturable": False, "differentiable": False, "fused": None,
             "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def reference_checkpoint(seed: int, with_destroyer: bool) -> tuple[dict, F2LMGenerator, Destroyer | None, PatchDiscriminator]:
    """A training checkpoint laid out like the reference code's (make_models_dict)."""
    generator = small_generator(seed)
    torch.manual_seed(seed + 1)
    discriminator = PatchDiscriminator(widths=(16, 32, 64, 64))
    payload = {
        "net_g": generator.state_dict(),
        "optimizer_g": adamw_state(generator),
        "net_d": discriminator.state_dict(),
        "optimizer_d": adamw_state(discriminator),
        "step": 1234,
        "iter_list": [100, 200],
        "g_best_auc": 0.97,
        "g_auc_list": [0.9, 0.97],
    }
    destroyer = None
    if with_destroyer:
        destroyer = small_destroyer(seed + 2)
        payload.update(net_a=destroyer.state_dict(), a_best_auc=0.98, a_auc_list=[0.98])
    return payload, generator, destroyer, discriminator


def test_reference_checkpoint_loads_weights_only(tmp_path):
    payload, generator, destroyer, discriminator = reference_checkpoint(0, with_destroyer=True)
    path = tmp_path / "a_best_auc_ped2.pth"
    torch.save(payload, path)
    torch.load(path, weights_only=True)  # the reference layout itself is weights-only safe

    ckpt = read_file(path, "run")
    assert ckpt["step"] == 1234 and ckpt["g_auc_list"] == [0.9, 0.97]
    assert_same_generator(load_generator(path), generator)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(load_destroyer(path)(x), destroyer(x))
        widths = widths_from_state_dict(ckpt["net_d"])
        disc = load_strict(PatchDiscriminator(widths=widths), ckpt["net_d"], str(path), "discriminator")
        assert disc.widths == (16, 32, 64, 64)
        assert torch.equal(disc(x), discriminator(x))


def test_data_parallel_prefix_is_stripped(tmp_path):
    generator = small_generator(2)
    payload = {"net_g": {f"module.{k}": v for k, v in generator.state_dict().items()}, "step": 5}
    path = tmp_path / "dp.pth"
    torch.save(payload, path)
    assert not any(k.startswith("module.") for k in read_file(path, "run")["net_g"])
    assert_same_generator(load_generator(path), generator)
    flat = tmp_path / "flat.pt"
    torch.save(payload["net_g"], flat)
    assert_same_generator(load_generator(flat), generator)


@pytest.mark.parametrize("label_channels", [84, 4, 0])
def test_safetensors_and_size_inference(tmp_path, label_channels):
    generator = small_generator(3, label_channels)
    path = tmp_path / "generator.safetensors"
    save_file(generator.state_dict(), str(path))
    loaded = load_generator(path)
    assert (loaded.label_channels, loaded.base, loaded.num_frames, loaded.flow_channels) == (label_channels, 8, 4, 6)
    assert not loaded.training
    assert_same_generator(loaded, generator, label_channels)


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(MamaError, match=re.escape(str(missing)) + ".*does not exist"):
        read_file(missing)
    with pytest.raises(MamaError, match=re.escape(str(tmp_path)) + ".*is a directory"):
        load_generator(tmp_path)


def test_corrupt_files(tmp_path):
    junk = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    for name in ("junk.pth", "junk.safetensors"):
        path = tmp_path / name
        path.write_bytes(junk.numpy().tobytes())
        with pytest.raises(MamaError, match=re.escape(str(path)) + ".*(corrupt|unreadable)"):
            read_file(path)
    truncated = tmp_path / "truncated.pth"
    torch.save(small_generator(5).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(MamaError, match=re.escape(str(truncated)) + ".*corrupt"):
        load_generator(truncated)


def test_non_weights_only_pickle_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"net_g": small_generator(6).state_dict(), "cfg": NotATensor()}, path)
    with pytest.raises(MamaError, match=re.escape(str(path)) + " is not a weights-only checkpoint; re-save it"):
        read_file(path, "run")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(MamaError, match=re.escape(str(path)) + ": holds a Tensor, not a state dict"):
        load_generator(path)


def test_missing_unexpected_and_misshaped_keys(tmp_path):
    state = small_generator(7).state_dict()
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "se.fc1.bias"}, r"1 missing keys \(se\.fc1\.bias\)"),
        "unexpected": ({**state, "se.extra": torch.zeros(1)}, r"1 unexpected keys \(se\.extra\)"),
        "shape": ({**state, "se.fc2.bias": torch.zeros(7)}, r"1 wrong shapes \(se\.fc2\.bias: file \(7,\) vs model \(64,\)\)"),
    }
    for name, (bad, pattern) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(bad, path)
        with pytest.raises(MamaError, match=re.escape(str(path)) + ": does not fit the generator.*" + pattern):
            load_generator(path)


def test_wrong_stage_is_named(tmp_path):
    destroyer_file = tmp_path / "destroyer.pt"
    torch.save(small_destroyer(8).state_dict(), destroyer_file)
    with pytest.raises(MamaError, match=re.escape(str(destroyer_file)) + ": not a generator checkpoint.*looks like a destroyer checkpoint"):
        load_generator(destroyer_file)

    generator_stage, *_ = reference_checkpoint(9, with_destroyer=False)
    g_file = tmp_path / "g_best_auc_ped2.pth"
    torch.save(generator_stage, g_file)
    with pytest.raises(MamaError, match=re.escape(str(g_file)) + r" holds no destroyer \('net_a'\); give a destroyer-stage"):
        models_from_run(read_file(g_file, "run"), g_file, need_destroyer=True)

    flat = tmp_path / "flat_generator.pt"
    torch.save(small_generator(10).state_dict(), flat)
    with pytest.raises(MamaError, match=re.escape(str(flat)) + r" is a bare generator state dict, without the run record "
                       r"\(providers, frame size, calibration\) around it; pass a checkpoint written by `mama train`"):
        read_file(flat, "run")


def test_generator_built_from_a_state_dict_in_memory():
    generator = small_generator(11, label_channels=4)
    rebuilt = build_generator_from_state_dict(generator.state_dict(), "memory")
    assert_same_generator(rebuilt.eval(), generator, 4)
    with pytest.raises(MamaError, match="memory: not a generator checkpoint"):
        build_generator_from_state_dict(small_destroyer(12).state_dict(), "memory")


def test_a_paper_size_reference_checkpoint_loads_into_default_models(tmp_path):
    # The reference's make_models_dict at the paper's sizes, tensors drawn from its key schema
    # (written from the reference code, not from our models): every net loads strictly.
    from tests.models.reference_keys import DESTROYER_KEYS, DISCRIMINATOR_KEYS, GENERATOR_KEYS

    gen = torch.Generator().manual_seed(26)

    def random_state(schema):
        return {k: torch.randint(0, 5, shape) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen)
                for k, shape in schema.items()}

    payload = {"net_g": random_state(GENERATOR_KEYS), "net_a": random_state(DESTROYER_KEYS),
               "net_d": random_state(DISCRIMINATOR_KEYS), "step": 15000, "a_best_auc": 0.99}
    path = tmp_path / "a_best_auc_ped2.pth"
    torch.save(payload, path)
    ckpt = read_file(path, "run")
    for key, model in (("net_g", F2LMGenerator()), ("net_a", Destroyer()), ("net_d", PatchDiscriminator())):
        model.load_state_dict(ckpt[key], strict=True)
        for name, value in model.state_dict().items():
            assert torch.equal(value, payload[key][name]), (key, name)
