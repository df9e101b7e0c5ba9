"""Reading and writing every weights file mama meets, without running code.

One reader, `read_file(path, kind)`, for every kind of file:

    run         a `mama train` checkpoint, or the reference code's training checkpoint (the
                paper's `*_best_auc_<dataset>.pth`: 'net_g', 'net_d', optimiser states, 'step',
                score lists, and after the destroyer stage 'net_a')
    state_dict  a flat model state dict (.pt or .safetensors)
    flownet     a flownet2-pytorch checkpoint ({'state_dict': ...}) or a bare state dict
    deeplab     torchvision's deeplabv3_resnet101 state dict, bare or under 'state_dict' / 'model'

`.safetensors` is read by suffix, anything else with torch.load(weights_only=True); the
`module.` prefix of (Distributed)DataParallel is stripped here, once, from every state dict in
the file. A file that is missing, unreadable, not weights-only or not of its kind raises one
MamaError line that names the file and the fix.

Models are built from state dicts and always loaded strictly: a state dict that does not fit
raises a MamaError listing the missing / unexpected / mis-shaped keys and which stage the file
looks like (e.g. a destroyer checkpoint given where a generator is expected). The check itself,
`state_dict_mismatch`, is also the strict check of the FlowNet and DeepLab loaders.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn

from mama.errors import MamaError
from mama.io import atomic_path
from mama.models import destroyer as destroyer_module
from mama.models import generator as generator_module
from mama.models.destroyer import Destroyer
from mama.models.generator import F2LMGenerator

REFERENCE_NETS = ("net_g", "net_a", "net_d")  # the state-dict entries of a reference checkpoint
_LIST_LIMIT = 4  # keys quoted per category in an error message

# What each kind of file is, for messages: "pass <this>".
KINDS = {
    "run": "a checkpoint written by `mama train` (final.pt, best.pt, latest.pt) or by the reference code",
    "state_dict": "a model state dict (.pt/.pth/.safetensors)",
    "flownet": "a flownet2-pytorch checkpoint (https://github.com/NVIDIA/flownet2-pytorch#converted-caffe-pre-trained-models)",
    "deeplab": "torchvision's deeplabv3_resnet101_coco-586e9e4e.pth",
}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__  # EOFError() of an empty file says nothing
    return text[:160] + ("..." if len(text) > 160 else "")


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop the `module.` prefix that DataParallel / DistributedDataParallel put on every key."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _load(path: Path, kind: str) -> object:
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise MamaError(f"{path}: unreadable safetensors file ({_one_line(exc)}); re-download or re-save it") from None
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
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
        # Only the unpickler's own reason: torch's message goes on to suggest weights_only=False.
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
        detail = reason.group(1).strip() if reason else type(exc).__name__
        raise MamaError(f"{path}: corrupt or not a torch checkpoint ({detail}); pass {KINDS[kind]}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise MamaError(f"{path}: corrupt or not a torch checkpoint ({_one_line(exc)}); pass {KINDS[kind]}") from None


def read_file(path: str | os.PathLike, kind: str = "state_dict") -> dict:
    """The dict stored in a weights file of `kind` (module docstring), `module.` stripped.

    run: the whole payload (its 'net_*' entries flat state dicts); state_dict, flownet,
    deeplab: the model's flat state dict (flownet's 'state_dict' and deeplab's 'state_dict' /
    'model' wrappers unwrapped, deeplab's unused aux head dropped).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}; one of {', '.join(KINDS)}")
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise MamaError(f"{path} {what}; pass the path of {KINDS[kind]}")
    if path.stat().st_size == 0:
        raise MamaError(f"{path}: an empty file (0 bytes; an interrupted copy or download?); pass {KINDS[kind]}")
    payload = _load(path, kind)
    if not isinstance(payload, dict):
        raise MamaError(f"{path}: holds a {type(payload).__name__}, not a state dict; pass {KINDS[kind]}")
    if kind == "run":
        if not isinstance(payload.get("net_g"), dict):
            looks = guess_stage(payload)
            if _is_state_dict(payload) and looks != "no known mama or reference model":
                # A bare state dict holds the weights but not what built them (providers, frame size).
                raise MamaError(f"{path} is a bare {looks.removeprefix('a ').removesuffix(' checkpoint')} state dict, "
                                "without the run record (providers, frame size, calibration) around it; "
                                f"pass {KINDS[kind]}")
            raise MamaError(f"{path} has no 'net_g' (generator) entry (it looks like {looks}); pass {KINDS[kind]}")
        return {k: strip_module_prefix(v) if _is_state_dict(v) else v for k, v in payload.items()}
    for wrapper in ("state_dict", "model") if kind in ("flownet", "deeplab") else ():
        if isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
            break
    if kind == "state_dict" and not _is_state_dict(payload):  # a reference checkpoint passes as a whole
        return {k: strip_module_prefix(v) if _is_state_dict(v) else v for k, v in payload.items()}
    if not _is_state_dict(payload):
        raise MamaError(f"{path}: not {KINDS[kind]} (expected a dict of tensors)")
    state = strip_module_prefix(payload)
    if kind == "deeplab":
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    return state


def save_checkpoint(path: Path, payload: dict) -> Path:
    """torch.save through a temp file + rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


# ----------------------------------------------------------------------------- strict loading
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


def _listing(label: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_LIST_LIMIT]) + (", ..." if len(items) > _LIST_LIMIT else "")
    return f"{len(items)} {label} ({shown})"


def state_dict_mismatch(model: nn.Module, state_dict: dict) -> str:
    """What keeps `state_dict` from loading strictly into `model`, in words: the missing,
    unexpected and mis-shaped keys (a few of each, with their counts), '' when it fits.

    The one strict check of every model mama loads (generator, destroyer, discriminator,
    FlowNet, DeepLab): key sets and shapes compared here, never read from torch's error text.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k}: file {tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__} "
        f"vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and (not isinstance(v, Tensor) or v.shape != expected[k].shape)
    ]
    problems = [
        _listing("missing keys", missing),
        _listing("unexpected keys", unexpected),
        _listing("wrong shapes", wrong_shape),
    ]
    return "; ".join(p for p in problems if p)


def load_strict(model: nn.Module, state_dict: dict, source: str, stage: str) -> nn.Module:
    """Load `state_dict` into `model` strictly; on any mismatch raise one MamaError that lists it."""
    mismatch = state_dict_mismatch(model, state_dict)
    if mismatch:
        looks_like = guess_stage(state_dict)
        # Same stage but other sizes or version: the key lists say enough; otherwise name the stage.
        hint = "" if stage in looks_like and "reference" not in looks_like else f" (it looks like {looks_like})"
        raise MamaError(
            f"{source}: does not fit the {stage}{hint}: {mismatch}"
            f"; pass a {stage} checkpoint written by mama or by the reference code"
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def _require(state_dict: dict, key: str, source: str, stage: str) -> Tensor:
    value = state_dict.get(key)
    if not isinstance(value, Tensor):
        raise MamaError(
            f"{source}: not a {stage} checkpoint (no '{key}'; it looks like {guess_stage(state_dict)}); "
            f"pass a {stage} checkpoint written by mama or by the reference code"
        )
    return value


def build_generator_from_state_dict(state_dict: dict, source: str = "<state dict>") -> F2LMGenerator:
    """An F2LMGenerator whose sizes (base, frames, flow / label channels) fit `state_dict`, loaded."""
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
    """A Destroyer whose sizes fit `state_dict`, loaded."""
    state_dict = destroyer_module.checkpoint_filter_fn(state_dict)
    first = _require(state_dict, "inc.conv.conv.0.weight", source, "destroyer")
    out = _require(state_dict, "outc.weight", source, "destroyer")
    model = Destroyer(in_channels=first.shape[1], out_channels=out.shape[0], base=first.shape[0])
    return load_strict(model, state_dict, source, "destroyer")
