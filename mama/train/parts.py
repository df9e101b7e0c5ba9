"""What each stage trains and reads with (the feature extractor, the networks, the record of
what built them), made from the config unless handed in; the destroyer stage's generator and
the settings it inherits from the generator's run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mama.config import BASE_WIDTH, DEFAULT_PRESET, INHERITED_FROM_GENERATOR, TrainConfig
from mama.errors import MamaError
from mama.features.clips import INPUT_FRAMES
from mama.features.extractor import FeatureExtractor
from mama.features.registry import build_extractor
from mama.models.build import models_from_run, run_meta
from mama.models.checkpoint import read_file
from mama.models.destroyer import Destroyer
from mama.models.discriminator import PatchDiscriminator
from mama.models.generator import F2LMGenerator


def discriminator_widths(base: int) -> tuple[int, ...]:
    """The discriminator's widths scale with the generator's (paper: base 64 -> 128-256-512-512)."""
    return tuple(w * base // BASE_WIDTH for w in (128, 256, 512, 512))


@dataclass
class GeneratorParts:
    """What the generator stage trains and reads with, and the record of what built it."""

    extractor: FeatureExtractor
    net_g: F2LMGenerator
    net_d: PatchDiscriminator
    meta: dict  # stored in checkpoints under 'model'

    @classmethod
    def from_config(cls, c: TrainConfig, device) -> "GeneratorParts":
        extractor = build_extractor(c.motion, c.labels, device, c.motion_weights, c.label_weights)
        label_channels = INPUT_FRAMES * (extractor.labels.channels if extractor.labels is not None else 0)
        net_g = F2LMGenerator(label_channels=label_channels, base=c.base)
        net_d = PatchDiscriminator(widths=discriminator_widths(c.base))
        meta = {"base": c.base, "label_channels": label_channels, "motion": c.motion,
                "labels": c.labels, "size": c.size, "dataset": c.dataset}
        return cls(extractor, net_g, net_d, meta)


@dataclass
class DestroyerParts:
    """The frozen generator and its providers, the destroyer to train, what built them."""

    extractor: FeatureExtractor
    net_g: F2LMGenerator
    net_a: Destroyer
    meta: dict

    @classmethod
    def from_config(cls, c: TrainConfig, device, generator: dict) -> "DestroyerParts":
        """`generator`: the generator checkpoint's payload; `c` has inherited its settings."""
        net_g, _, meta = models_from_run(generator, c.generator, need_destroyer=False)
        extractor = build_extractor(meta["motion"], meta["labels"], device, c.motion_weights, c.label_weights)
        return cls(extractor, net_g, Destroyer(base=c.base), {**meta, "destroyer_base": c.base})


def generator_checkpoint(c: TrainConfig) -> dict:
    if not c.generator:
        raise MamaError("the destroyer stage needs --generator CKPT (a trained generator's final.pt or best.pt)")
    payload = read_file(c.generator, "run")
    if payload.get("stage") == "destroyer" or "net_a" in payload:
        print(f"note: --generator {c.generator} is a destroyer-stage checkpoint; a new destroyer is trained on "
              "the generator it holds (its own destroyer is not used)")
    return payload


def inherit_generator(c: TrainConfig, generator: dict) -> TrainConfig:
    """The destroyer stage's config with the generator run's preset, providers, frame size and
    width where none is given; a given one that differs is an error (the generator's inputs
    must mean what they meant when it was trained)."""
    meta = run_meta(generator, c.generator)
    theirs = {"preset": (generator.get("config") or {}).get("preset", DEFAULT_PRESET), "motion": meta["motion"],
              "labels": meta["labels"], "size": meta["size"], "base": meta["base"]}
    for name in INHERITED_FROM_GENERATOR:
        ours = getattr(c, name)
        if ours is not None and ours != theirs[name]:
            flag = "--" + name.replace("_", "-")
            raise MamaError(f"{flag} {ours} conflicts with the generator {c.generator}, trained with {flag} {theirs[name]}; "
                            f"drop {flag} (the destroyer stage takes the generator's)")
    return dataclasses.replace(c, **theirs)
