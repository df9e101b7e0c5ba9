"""A run's state on disk: what a checkpoint of a run holds, and the checks a checkpoint passes
before a run resumes from it."""
from __future__ import annotations

from pathlib import Path

from mama.config import TrainConfig
from mama.errors import MamaError
from mama.models.checkpoint import read_file

CHECKPOINT_FORMAT = "mama-run-1"
# What a resumed run must share with the run it continues (else the weights, the data order or
# the recorded config would not fit).
RESUME_MUST_MATCH = ("dataset", "preset", "motion", "labels", "size", "base", "batch_size", "seed", "patch", "holdout")


def resume_path(c: TrainConfig, run_dir: Path) -> Path:
    return Path(c.resume) if c.resume != "latest" else run_dir / "latest.pt"


def resume_payload(c: TrainConfig, run_dir: Path, stage: str, world_size: int) -> dict:
    """The checkpoint to resume from, checked: this stage's, the same settings, more steps to go."""
    path = resume_path(c, run_dir)
    if c.resume == "latest" and not path.is_file():
        raise MamaError(f"--resume latest: {path} does not exist (no run to continue in {run_dir}); "
                        "drop --resume to start one, or give the --out of the run to continue")
    payload = read_file(path, "run")
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("stage") != stage:
        raise MamaError(
            f"cannot resume the {stage} stage from {path}: it is a "
            f"{payload.get('stage', 'reference-code')} checkpoint; give a {stage} run's latest.pt"
        )
    saved = payload.get("config") or {}
    for name in RESUME_MUST_MATCH:
        if name in saved and saved[name] != getattr(c, name):
            flag = "--" + name.replace("_", "-")
            raise MamaError(f"{flag} {getattr(c, name)} differs from the run being resumed ({path} was trained with "
                            f"{flag} {saved[name]}); resume with the same {flag}, or train into another --out")
    if payload.get("world_size", 1) != world_size:
        raise MamaError(f"{path} was trained by {payload.get('world_size', 1)} processes, this run has "
                        f"{world_size}; resume with the same torchrun --nproc_per_node")
    step = payload.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not isinstance(payload.get("rng"), dict):
        raise MamaError(f"{path}: its step ({step!r}) or random state is missing or damaged; resume from another "
                        "checkpoint of the run (best.pt), or drop --resume")
    if c.iters <= step:
        raise MamaError(f"--iters {c.iters} is not above the step {step} of {path}; give --iters above {step} "
                        "to train on")
    return payload
