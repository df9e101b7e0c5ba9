"""Run configuration: the reference hyper-parameters per dataset (docs/design.md) and the presets.

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
import math
from dataclasses import dataclass
from pathlib import Path

from mama.errors import MamaError
from mama.io import atomic_path, cache_folder, check_output_file, check_output_folder

# The clip, defined once for every layer: CLIP_LEN consecutive frames, the first INPUT_FRAMES
# read by the generator, the last predicted (mama.features.clips assembles them).
CLIP_LEN = 5  # frames per clip; also the fewest a video may have
INPUT_FRAMES = CLIP_LEN - 1  # frames in; the fifth is predicted

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
FEATURE_STORES = ("disk", "memory", "off")
SCORE_FEATURE_STORES = ("disk", "off")  # `mama eval` scores each video once: nothing to keep in memory
DEFAULT_FEATURE_STORE = "disk"


def feature_dir(store: str) -> Path | None:
    """Where the features of the feature store `store` are kept across runs ($MAMA_CACHE/features
    for "disk"); None: nowhere."""
    return cache_folder("features") if store == "disk" else None


PRESETS = {
    "paper": {"motion": "flownet2sd", "labels": "deeplabv3", "compile": False, "amp": False,
              "batchnorm": "eval-after-validation", "holdout": 0},
    "fast": {"motion": "dis", "labels": "foreground", "compile": True, "amp": True,
             "batchnorm": "train", "holdout": 1},
}
STAGE_ITERS = {"generator": 60_000, "destroyer": 15_000}
FRAME_SIZE = 256  # the reference's frame side: frames are resized to FRAME_SIZE x FRAME_SIZE
BASE_WIDTH = 64  # the paper's generator / destroyer width
# The destroyer's damage and loss work on an 8 x 8 grid of patches, the paper's 32 x 32 patches of a
# 256 x 256 frame; the grid, not the patch side, is kept at other sizes (at 64 x 64, 8-pixel
# patches: 32-pixel ones would cut the frame in 4 and teach the destroyer to paint quarters).
PATCH_GRID = 8
# ... and each batch's damage draws its patch rate and its dropout p, each in this range (the paper's).
DAMAGE_RANGE = (0.05, 0.5)
# Bounds of the frame side and the network width, for flags and for what a checkpoint records alike
# (a frame of 100000 x 100000 would make OpenCV allocate 30 GB before anything fails).
MAX_FRAME_SIZE = 2048
MAX_BASE = 512
SEED_RANGE = 2**32  # numpy's seeds: 0 .. 2**32 - 1
DEFAULT_PRESET = "paper"
# What the destroyer stage takes from its generator's run unless given (and then alike).
INHERITED_FROM_GENERATOR = ("preset", "motion", "labels", "size", "base")


@dataclass
class TrainConfig:
    stage: str = "generator"
    dataset: str = "ped2"
    data_root: str = "data"
    out: str | None = None  # None: runs/<dataset>_<stage>
    preset: str | None = None  # None: DEFAULT_PRESET (destroyer stage: the generator's)
    iters: int | None = None  # None: the reference count for the stage
    batch_size: int = 4
    size: int | None = None  # None: FRAME_SIZE (destroyer stage: the generator's)
    seed: int = 0
    base: int | None = None  # generator/destroyer width; None: BASE_WIDTH (destroyer stage: the generator's)
    lr_g: float | None = None
    lr_d: float | None = None
    lr_a: float | None = None  # destroyer
    weight_decay: float | None = None
    adv_weight: float = 0.05
    sim_weight: float = 1.0
    patch: int | None = None  # destroyer damage patch side; None: size // PATCH_GRID (32 at 256, the paper's)
    ld: float = 4.0
    save_interval: int = 1000
    keep_checkpoints: bool = False  # every save also kept as step_NNNNNN.pt (to compare checkpoints later)
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
    calibrate_frames: int = 5000  # ... at most this many frames of each (hours of footage stay minutes)
    # Training features (labels, flow; the destroyer's frozen predictions in memory): "disk" keeps
    # them in shards under $MAMA_CACHE/features for later runs as well, "memory" for this run only,
    # "off" computes what each batch needs (FEATURE_STORES; mama.features.store).
    feature_store: str = DEFAULT_FEATURE_STORE
    # The training frames (uint8) and features kept on the device, batches made there
    # (mama.data.resident); None: on CUDA when they fit.
    resident: bool | None = None

    def resolved(self) -> "TrainConfig":
        """Fill every None from the dataset's reference hyper-parameters and the preset."""
        if self.stage not in STAGE_ITERS:
            raise MamaError(f"unknown --stage {self.stage!r}; use generator or destroyer")
        c = dataclasses.replace(self)
        c.preset = self.preset or DEFAULT_PRESET
        if c.preset not in PRESETS:
            raise MamaError(f"unknown --preset {c.preset!r}; use one of {', '.join(PRESETS)}")
        hp = DATASET_HPARAMS.get(self.dataset, DEFAULT_HPARAMS)
        preset = PRESETS[c.preset]
        c.out = self.out or str(Path("runs") / f"{self.dataset}_{self.stage}")
        c.size = self.size if self.size is not None else FRAME_SIZE
        c.base = self.base if self.base is not None else BASE_WIDTH
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
        if (problem := size_problem(c.size)) is not None:
            raise MamaError(f"--size {c.size} {problem}; e.g. --size 256")
        c.patch = self.patch or c.size // PATCH_GRID
        if c.size % c.patch:
            raise MamaError(f"patch {c.patch} does not divide --size {c.size}; use a divisor of the frame size")
        c._check_resolved()
        return c

    def _check_resolved(self) -> None:
        """The filled-in settings' remaining checks, in the order a user meets them."""
        c = self
        for flag, value in (("--iters", c.iters), ("--batch-size", c.batch_size), ("--base", c.base),
                            ("--save-interval", c.save_interval), ("--val-interval", c.val_interval),
                            ("--calibrate-videos", c.calibrate_videos), ("--calibrate-frames", c.calibrate_frames),
                            ("--val-clips", c.val_clips)):
            if not isinstance(value, int) or value < 1:
                raise MamaError(f"{flag} {value} must be a positive whole number")
        if (problem := base_problem(c.base)) is not None:
            raise MamaError(f"--base {c.base} {problem}, e.g. --base {BASE_WIDTH}")
        if not 0 <= c.seed < SEED_RANGE:
            raise MamaError(f"--seed {c.seed} must be a whole number from 0 to {SEED_RANGE - 1}, e.g. --seed 0")
        if c.generator and c.stage != "destroyer":
            raise MamaError(f"--generator is the destroyer stage's frozen generator; the {c.stage} stage does not use it: "
                            "add --stage destroyer, or drop --generator")
        if c.select_on_test and c.dataset == "folder":
            raise MamaError("--select-on-test validates on test labels, but a folder dataset has no test split; "
                            "drop --select-on-test (validation then uses pseudo-anomalies, no labels needed)")
        if c.num_workers < 0:
            raise MamaError(f"--num-workers {c.num_workers} must be 0 (load in the main process) or more")
        for flag, value in (("--lr-g", c.lr_g), ("--lr-d", c.lr_d), ("--lr-a", c.lr_a)):
            if not (value > 0 and math.isfinite(value)):
                raise MamaError(f"{flag} {value} must be a positive number, e.g. {flag} 1e-4")
        if not (c.weight_decay >= 0 and math.isfinite(c.weight_decay)):
            raise MamaError(f"weight decay {c.weight_decay} must be a number >= 0")
        if c.holdout < 0:
            raise MamaError(f"holdout {c.holdout} must be 0 or more videos")
        if c.feature_store not in FEATURE_STORES:
            raise MamaError(f"unknown --feature-store {c.feature_store!r}; use one of {', '.join(FEATURE_STORES)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))


def size_problem(size) -> str | None:
    """What is wrong with a frame side (a flag's or a checkpoint's), or None."""
    if isinstance(size, bool) or not isinstance(size, int) or size < PATCH_GRID or size % PATCH_GRID:
        return f"must be a positive multiple of {PATCH_GRID} (the networks halve it 3 times)"
    if size > MAX_FRAME_SIZE:
        return f"is above {MAX_FRAME_SIZE} (the paper's frames are {FRAME_SIZE}x{FRAME_SIZE})"
    return None


def base_problem(base) -> str | None:
    """What is wrong with a network width (a flag's or a checkpoint's), or None."""
    if isinstance(base, bool) or not isinstance(base, int) or not 1 <= base <= MAX_BASE:
        return f"must be a whole number from 1 to {MAX_BASE} (the paper's is {BASE_WIDTH})"
    return None


PROTOCOLS = ("paper", "clean", "online")  # mama.evaluate.evaluate
ONLINE_SIGMA = 3.0  # causal smoothing of online scores (frames), stored in a checkpoint's calibration
ENGINES = ("torch", "onnxruntime")  # what runs the networks in `mama score` (ScoreOptions.engine)
SCORE_BATCH = 32  # frames per scoring chunk (features, then the clips ending in it); a score waits at most this + 1


def eval_out(checkpoint: Path, dataset: str) -> Path:
    """`mama eval`'s report folder when no --out is given."""
    return checkpoint.parent / f"eval_{dataset}"


def score_out(input: str | None, camera: int | None) -> Path:
    """`mama score`'s output folder when no --out is given, named after the source."""
    name = f"camera{camera}" if camera is not None else (Path(input.split("?")[0].rstrip("/")).stem or "stream")
    return Path(f"scores_{name}")


@dataclass
class EvalOptions:
    """`mama eval`'s settings (mama.evaluate.evaluate)."""

    dataset: str
    data_root: Path
    checkpoint: Path
    out: Path
    protocols: tuple[str, ...] = PROTOCOLS
    weights: "FusionWeights | None" = None  # mama.evaluate.fusion.FusionWeights; None: the defaults
    fit_weights: bool = False
    oracle: bool = False
    sigma: float = 10.0  # the reference's smoothing of offline scores (0: none)
    batch_size: int = SCORE_BATCH
    device: str = "auto"
    size: int | None = None  # None: the checkpoint's frame size
    motion_weights: Path | None = None  # None: the weights dir / torch hub cache
    label_weights: Path | None = None
    feature_store: str = DEFAULT_FEATURE_STORE  # "disk": the test videos' features under $MAMA_CACHE/features; "off"
    amp: bool = False  # bf16 autocast (CUDA)
    compile: bool = False  # torch.compile the networks (CUDA graphs on CUDA): mama.runtime.compile_model

    def __post_init__(self) -> None:
        if self.feature_store not in SCORE_FEATURE_STORES:
            raise MamaError(f"unknown --feature-store {self.feature_store!r}; use {' or '.join(SCORE_FEATURE_STORES)}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise MamaError(f"--sigma {self.sigma} must be a finite number >= 0 (0: no smoothing), e.g. --sigma 10")
        check_batch_size(self.batch_size)
        if self.oracle and "paper" not in self.protocols:
            raise MamaError(f"--oracle grid-searches the paper protocol's weights, but --protocol {','.join(self.protocols)} "
                            "does not report it; use --protocol paper or all, or drop --oracle")
        if self.fit_weights and self.weights is not None:
            raise MamaError("--fit-weights picks the fusion weights itself, so --weights would be ignored; "
                            "give one of the two")


OVERLAY_SUFFIXES = (".mp4", ".avi")  # the overlay video: mp4v in an .mp4, MJPG in an .avi


@dataclass
class ScoreOptions:
    """`mama score`'s settings (mama.live.score)."""

    input: Path | str | None  # a video file, a folder of frames, a folder of videos, or a URL
    checkpoint: Path
    out: Path
    camera: int | None = None  # a camera index instead of `input`
    overlay: Path | None = None  # also write a video with the anomaly map, boxes and score drawn
    device: str = "auto"
    batch_size: int = SCORE_BATCH  # the most frames scored at once (a live source: what has arrived)
    motion_weights: Path | None = None  # None: the weights dir / torch hub cache
    label_weights: Path | None = None
    amp: bool = False  # as EvalOptions
    compile: bool = False
    # Alarms (mama.live.events): the threshold (None: the checkpoint's calibration) or an alarm
    # rate on the calibration footage; frames above it before an event opens; frames below it
    # before it ends; seconds between updates.
    threshold: float | None = None
    false_alarms_per_hour: float | None = None
    calibrate_on: Path | None = None  # this camera's normal footage, instead of the checkpoint's calibration
    min_duration: int = 3
    merge_gap: int = 10
    update_interval: float = 5.0
    ignore: Path | None = None  # an image at the source's resolution: white pixels never alarm
    webhook: str | None = None  # POST every event as JSON here
    max_lag: float = 2.0  # seconds: a live source further behind drops its backlog
    reconnect: int = 5  # tries to reopen a live source that drops
    fps: float | None = None  # media time of a source that states no frame rate (default 25)
    append: bool = False  # add this run to an --out that holds an earlier one
    # "onnxruntime": the networks of a `mama export` folder (the checkpoint) run by ONNX Runtime
    # on the CPU; everything else is the same pipeline.
    engine: str = "torch"

    def __post_init__(self) -> None:
        """Every range and output path checked before anything is opened or written."""
        if self.camera is not None and self.camera < 0:
            raise MamaError(f"--camera {self.camera}: a camera index is 0 or more, e.g. --camera 0")
        check_batch_size(self.batch_size)
        check_output_folder(self.out)
        if self.overlay is not None:
            check_output_file(self.overlay, "--overlay", OVERLAY_SUFFIXES)
        for flag, value in (("--min-duration", self.min_duration),
                            ("--merge-gap", self.merge_gap)):
            if value < 1:
                raise MamaError(f"{flag} {value} must be a positive whole number")
        if self.reconnect < 0:
            raise MamaError(f"--reconnect {self.reconnect} must be 0 or more (0: never reopen a source that drops)")
        for flag, value in (("--update-interval", self.update_interval), ("--max-lag", self.max_lag),
                            ("--fps", self.fps), ("--false-alarms-per-hour", self.false_alarms_per_hour),
                            ("--threshold", self.threshold)):
            if value is not None and not math.isfinite(value):
                raise MamaError(f"{flag} {value} must be a finite number")
        for flag, value in (("--update-interval", self.update_interval), ("--max-lag", self.max_lag), ("--fps", self.fps)):
            if value is not None and value <= 0:
                raise MamaError(f"{flag} {value} must be above 0")
        if self.false_alarms_per_hour is not None and self.false_alarms_per_hour < 0:
            raise MamaError(f"--false-alarms-per-hour {self.false_alarms_per_hour} must be 0 or more")
        if self.threshold is not None and self.false_alarms_per_hour is not None:
            raise MamaError("--threshold and --false-alarms-per-hour both set the threshold; give one of the two")
        if self.engine not in ENGINES:
            raise MamaError(f"--engine {self.engine}: choose one of {', '.join(ENGINES)}")
        if self.engine == "onnxruntime":
            # The export holds every network and runs on the CPU: these flags would be ignored.
            for flag, conflict in (("--amp", self.amp), ("--compile", self.compile),
                                   ("--motion-weights", self.motion_weights is not None),
                                   ("--label-weights", self.label_weights is not None),
                                   (f"--device {self.device}", self.device not in ("auto", "cpu"))):
                if conflict:
                    raise MamaError(f"{flag} does not apply to --engine onnxruntime (the export holds the networks, "
                                    "which run on the CPU); drop it")


def check_batch_size(value: int) -> None:
    """`mama eval` and `mama score`: frames per scoring batch."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MamaError(f"--batch-size {value} must be a positive whole number, e.g. --batch-size {SCORE_BATCH}")
