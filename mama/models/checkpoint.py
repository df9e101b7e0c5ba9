"""Safe checkpoint loading for the generator, destroyer and discriminator.

Files are read without running code: `.safetensors` by suffix, anything else with
torch.load(weights_only=True). The `module.` prefix of (Distributed)DataParallel is
stripped. Three payloads are understood:

  * a flat state dict (mama's own files, .safetensors or .pt);
  * a reference-code training checkpoint (the paper's `*_best_auc_<dataset>.pth`): a dict
    with 'net_g' (generator), 'net_d' (discriminator), optimiser states, 'step', score
    lists, and after the destroyer stage also 'net_a' (destroyer);
  * either of these wrapped by DataParallel (`module.` keys).

Models are always loaded strictly. A file that does not fit raises MamaError naming the
file, the missing / unexpected / mis-shaped keys and which stage the file looks like
(e.g. a destroyer checkpoint given where a generator is expected).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from mama.errors import MamaError
from mama.models import destroyer as destroyer_module
from mama.models import discriminator as discriminator_module
from mama.models import generator as generator_module
from mama.models.destroyer import Destroyer
from mama.models.discriminator import PatchDiscriminator
from mama.models.generator import F2LMGenerator
from mama.models.layers import strip_module_prefix

REFERENCE_NETS = ("net_g", "net_a", "net_d")  # the state-dict entries of a reference checkpoint
_LIST_LIMIT = 4  # keys quoted per category in an error message


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint file without executing code; strip `module.` from parameter names.

    Returns the stored dict: a flat state dict, or a reference training checkpoint whose
    'net_*' entries are flat state dicts.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise MamaError(f"{path}: checkpoint file {what}; pass the path of a .pt/.pth/.safetensors file")
    if path.suffix == ".safetensors":
        try:
            payload = load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise MamaError(f"{path}: unreadable safetensors file ({_one_line(exc)}); re-download or re-save it") from None
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            message = str(exc)
            # The weights-only unpickler also fails on garbage ("Unsupported operand"): that is corruption.
            if "Weights only load failed" in message and "Unsupported operand" not in message:
                found = re.search(r"GLOBAL (\S+)", message)
                culprit = f" such as {found.group(1)}" if found else ""
                raise MamaError(
                    f"{path} is not a weights-only checkpoint; re-save it with tensors and plain containers only "
                    f"(it pickles objects{culprit}), e.g. torch.save(model.state_dict(), path), or as .safetensors"
                ) from None
            raise MamaError(f"{path}: corrupt or not a torch checkpoint ({_one_line(exc)}); re-download or re-save it") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise MamaError(f"{path}: corrupt or not a torch checkpoint ({_one_line(exc)}); re-download or re-save it") from None
    if not isinstance(payload, dict):
        raise MamaError(f"{path}: holds a {type(payload).__name__}, not a state dict; save model.state_dict() instead")
    if _is_state_dict(payload):
        return strip_module_prefix(payload)
    return {k: strip_module_prefix(v) if _is_state_dict(v) else v for k, v in payload.items()}


def load_reference_checkpoint(path: str | os.PathLike) -> dict:
    """Read a reference-code training checkpoint: {'net_g', ['net_a'], 'net_d', optimiser states, 'step', ...}."""
    payload = load_state_dict_file(path)
    if not isinstance(payload.get("net_g"), dict):
        raise MamaError(
            f"{path}: not a reference training checkpoint (no 'net_g' entry; it looks like "
            f"{guess_stage(payload)}); load it with load_generator / load_destroyer instead"
        )
    return payload


def guess_stage(state_dict: dict) -> str:
    """Say in words what a loaded payload looks like (for error messages)."""
    if any(name in state_dict for name in REFERENCE_NETS):
        stage = "destroyer-stage" if "net_a" in state_dict else "generator-stage"
        return f"a {stage} reference training checkpoint"
    keys = list(state_dict)
    if any(k.startswith("inc_x.") for k in keys):
        return "a generator checkpoint"
    if any(k.startswith("inc.") for k in keys):
        return "a destroyer checkpoint"
    if any(k.startswith("net.") for k in keys):
        return "a discriminator checkpoint"
    return "no known mama or reference model"


def load_strict(model: nn.Module, state_dict: dict, source: str, stage: str) -> nn.Module:
    """Load `state_dict` into `model` strictly; on any mismatch raise one MamaError that lists it."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and (not isinstance(v, Tensor) or v.shape != expected[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        problems = [
            _listing("missing keys", missing),
            _listing("unexpected keys", unexpected),
            _listing("wrong shapes", wrong_shape),
        ]
        looks_like = guess_stage(state_dict)
        # Same stage but other sizes or version: the key lists say enough; otherwise name the stage.
        hint = "" if stage in looks_like and "reference" not in looks_like else f" (it looks like {looks_like})"
        raise MamaError(
            f"{source}: does not fit the {stage}{hint}: "
            + "; ".join(p for p in problems if p)
            + f"; pass a {stage} checkpoint written by mama or by the reference code"
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def build_generator_from_state_dict(state_dict: dict, source: str = "<state dict>") -> F2LMGenerator:
    """Build an F2LMGenerator whose sizes (base, frames, flow / label channels) fit `state_dict`, and load it."""
    state_dict = generator_module.checkpoint_filter_fn(state_dict)
    first = _require(state_dict, "inc_x.conv.conv.0.weight", source, "generator")
    flow = _require(state_dict, "inc_y.conv.conv.0.weight", source, "generator")
    out = _require(state_dict, "outc.weight", source, "generator")
    label = state_dict.get("inc_z.conv.conv.0.weight")
    if first.shape[1] % 3:
        raise MamaError(f"{source}: the frame encoder reads {first.shape[1]} channels, not 3 per frame; not a generator checkpoint")
    model = F2LMGenerator(
        num_frames=first.shape[1] // 3,
        flow_channels=flow.shape[1],
        label_channels=0 if label is None else label.shape[1],
        out_channels=out.shape[0],
        base=first.shape[0],
    )
    return load_strict(model, state_dict, source, "generator")


def build_destroyer_from_state_dict(state_dict: dict, source: str = "<state dict>") -> Destroyer:
    """Build a Destroyer whose sizes fit `state_dict`, and load it."""
    state_dict = destroyer_module.checkpoint_filter_fn(state_dict)
    first = _require(state_dict, "inc.conv.conv.0.weight", source, "destroyer")
    out = _require(state_dict, "outc.weight", source, "destroyer")
    model = Destroyer(in_channels=first.shape[1], out_channels=out.shape[0], base=first.shape[0])
    return load_strict(model, state_dict, source, "destroyer")


def build_discriminator_from_state_dict(state_dict: dict, source: str = "<state dict>") -> PatchDiscriminator:
    """Build a PatchDiscriminator whose widths fit `state_dict`, and load it."""
    state_dict = discriminator_module.checkpoint_filter_fn(state_dict)
    first = _require(state_dict, "net.0.weight", source, "discriminator")
    model = PatchDiscriminator(in_channels=first.shape[1], widths=discriminator_module.widths_from_state_dict(state_dict))
    return load_strict(model, state_dict, source, "discriminator")


def load_generator(path: str | os.PathLike) -> F2LMGenerator:
    """The generator from a mama state-dict file or a reference checkpoint ('net_g'), in eval mode."""
    payload = load_state_dict_file(path)
    return build_generator_from_state_dict(payload, str(path)).eval()


def load_destroyer(path: str | os.PathLike) -> Destroyer:
    """The destroyer from a mama state-dict file or a destroyer-stage reference checkpoint ('net_a'), in eval mode."""
    payload = load_state_dict_file(path)
    if "net_g" in payload and "net_a" not in payload:
        raise MamaError(
            f"{path}: a generator-stage reference checkpoint holds no destroyer ('net_a'); "
            "pass the destroyer-stage file (the reference's a_best_auc_<dataset>.pth)"
        )
    return build_destroyer_from_state_dict(payload, str(path)).eval()


def _require(state_dict: dict, key: str, source: str, stage: str) -> Tensor:
    value = state_dict.get(key)
    if not isinstance(value, Tensor):
        raise MamaError(
            f"{source}: not a {stage} checkpoint (no '{key}'; it looks like {guess_stage(state_dict)}); "
            f"pass a {stage} checkpoint written by mama or by the reference code"
        )
    return value


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _listing(label: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_LIST_LIMIT]) + (", ..." if len(items) > _LIST_LIMIT else "")
    return f"{len(items)} {label} ({shown})"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")
