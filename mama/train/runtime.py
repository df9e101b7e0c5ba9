"""What every training run needs around its loop: devices and torchrun, seeding, the run's
logs (TensorBoard + JSON lines), clean stops on SIGINT/SIGTERM, and atomic checkpoints."""
from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mama.errors import MamaError
from mama.io import atomic_path


# ----------------------------------------------------------------------------- devices, DDP
@dataclass(frozen=True)
class Runtime:
    """Where this process runs. Under torchrun: one process per GPU (or CPU, gloo)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MamaError(f"--device {name}: no CUDA device is visible here; use --device cpu")
    return device


def setup_runtime(device: str = "auto") -> Runtime:
    """Single process, or the torchrun process group (RANK / WORLD_SIZE / LOCAL_RANK set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world, local)


def teardown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def share_cpu(rt: Runtime, num_workers: int) -> None:
    """On CPU, leave cores to the loader workers and the other ranks: OpenMP threads that
    outnumber free cores spin against each other (measured here: a step 15x slower)."""
    if rt.device.type != "cpu":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // rt.world_size - num_workers))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = random.getstate()
    random.setstate((py[0], tuple(state["python"]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, payload: dict) -> Path:
    """torch.save through a temp file + rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A run checkpoint (or the reference code's), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise MamaError(f"checkpoint {path} does not exist; give the path of a .pt file written by `mama train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise MamaError(
            f"checkpoint {path} could not be read as a weights-only torch file ({type(exc).__name__}); "
            "is it a `mama train` or reference-code checkpoint?"
        ) from None
    if not isinstance(payload, dict) or "net_g" not in payload:
        raise MamaError(f"checkpoint {path} has no 'net_g' (generator) entry; it is not a mama or reference-code checkpoint")
    return payload


# ----------------------------------------------------------------------------- logs
class RunLog:
    """TensorBoard scalars and the same records as JSON lines (run_dir/log.jsonl)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            self._jsonl = open(run_dir / "log.jsonl", "a", buffering=1)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self._tb.add_scalar(k, v, step)
        self._jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits at the next step."""

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
