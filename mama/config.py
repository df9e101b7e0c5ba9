"""Run configuration: the reference hyper-parameters per dataset (DESIGN §5) and the presets.

`paper` keeps the reference code's semantics: FlowNet2-SD flow, DeepLabv3 labels, its
learning rates and iteration counts, every training video trained on, and its BatchNorm
quirk (`batchnorm="eval-after-validation"`: the reference's validation puts the networks in
eval mode and nothing puts them back, so from the first validation on BatchNorm uses frozen
running statistics while its affine parameters keep learning). `fast` is this project's
faster variant: weight-free providers (DIS flow, foreground labels), BatchNorm trained
normally, one training video held out for validation and calibration, torch.compile and bf16
autocast on CUDA. Providers can be set apart from the preset (`motion`, `labels`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mama.errors import MamaError

# Learning rates and weight decay of the reference code, per dataset.
# (The destroyer's rate, a_lr there, equals the generator's on every dataset.)
DATASET_HPARAMS = {
    "ped2": {"lr_g": 1e-4, "lr_d": 1e-5, "lr_a": 1e-4, "weight_decay": 1e-4},
    "ped1": {"lr_g": 1e-4, "lr_d": 1e-5, "lr_a": 1e-4, "weight_decay": 1e-4},
    "avenue": {"lr_g": 2e-4, "lr_d": 2e-5, "lr_a": 2e-4, "weight_decay": 2e-4},
    "shanghai": {"lr_g": 2e-4, "lr_d": 2e-5, "lr_a": 2e-4, "weight_decay": 2e-4},
}
DEFAULT_HPARAMS = DATASET_HPARAMS["ped2"]

BATCHNORM_MODES = ("eval-after-validation", "train")
PRESETS = {
    "paper": {"motion": "flownet2sd", "labels": "deeplabv3", "compile": False, "amp": False,
              "batchnorm": "eval-after-validation", "holdout": 0},
    "fast": {"motion": "dis", "labels": "foreground", "compile": True, "amp": True,
             "batchnorm": "train", "holdout": 1},
}
STAGE_ITERS = {"generator": 60_000, "destroyer": 15_000}


@dataclass
class TrainConfig:
    stage: str = "generator"
    dataset: str = "ped2"
    data_root: str = "data"
    out: str = "runs/ped2"
    preset: str = "paper"
    iters: int | None = None  # None: the reference count for the stage
    batch_size: int = 4
    size: int = 256
    seed: int = 0
    base: int = 64  # generator/destroyer width (paper: 64)
    lr_g: float | None = None
    lr_d: float | None = None
    lr_a: float | None = None  # destroyer
    weight_decay: float | None = None
    adv_weight: float = 0.05
    sim_weight: float = 1.0
    patch: int = 32  # destroyer damage patches
    ld: float = 4.0
    save_interval: int = 1000
    val_interval: int = 1000
    val_clips: int = 64  # clips per kind (normal, each pseudo-anomaly) in the label-free validation
    motion: str | None = None  # None: the preset's
    labels: str | None = None
    motion_weights: str | None = None
    label_weights: str | None = None
    generator: str | None = None  # destroyer stage: the trained generator checkpoint
    resume: str | None = None
    num_workers: int = 2
    device: str = "auto"
    compile: bool | None = None  # None: the preset's, on CUDA only
    amp: bool | None = None
    batchnorm: str | None = None  # None: the preset's (BATCHNORM_MODES)
    holdout: int | None = None  # training videos kept for validation and calibration; None: the preset's
    select_on_test: bool = False
    calibrate_videos: int = 4  # training videos scored at the end to calibrate `mama score`
    cache_features: bool = True  # exact cache of training labels/flow (+ destroyer predictions)
    extra: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        """Fill every None from the dataset's reference hyper-parameters and the preset."""
        if self.stage not in STAGE_ITERS:
            raise MamaError(f"unknown --stage {self.stage!r}; use generator or destroyer")
        if self.preset not in PRESETS:
            raise MamaError(f"unknown --preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        hp = DATASET_HPARAMS.get(self.dataset, DEFAULT_HPARAMS)
        preset = PRESETS[self.preset]
        c = dataclasses.replace(self)
        c.iters = self.iters if self.iters is not None else STAGE_ITERS[self.stage]
        c.lr_g = self.lr_g if self.lr_g is not None else hp["lr_g"]
        c.lr_d = self.lr_d if self.lr_d is not None else hp["lr_d"]
        c.lr_a = self.lr_a if self.lr_a is not None else hp["lr_a"]
        c.weight_decay = self.weight_decay if self.weight_decay is not None else hp["weight_decay"]
        c.motion = self.motion or preset["motion"]
        c.labels = self.labels or preset["labels"]
        c.compile = self.compile if self.compile is not None else preset["compile"]
        c.amp = self.amp if self.amp is not None else preset["amp"]
        c.batchnorm = self.batchnorm or preset["batchnorm"]
        c.holdout = self.holdout if self.holdout is not None else preset["holdout"]
        if c.batchnorm not in BATCHNORM_MODES:
            raise MamaError(f"unknown batchnorm mode {c.batchnorm!r}; use one of {', '.join(BATCHNORM_MODES)}")
        if c.size % 32:
            raise MamaError(f"--size {c.size} must be a multiple of 32 (the destroyer's patches)")
        if c.iters <= 0 or c.batch_size <= 0:
            raise MamaError("--iters and --batch-size must be positive")
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path: Path) -> None:
        from mama.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
