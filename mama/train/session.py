"""What a training run needs around its loop: seeding and the RNG state a resume restores, and
the run's logs (TensorBoard + JSON lines). (Clean stops on SIGINT/SIGTERM: mama.runtime.StopRequest.)"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch


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

    def text(self, step: int, key: str, lines: list[str]) -> None:
        """Plain lines (the model card's flags) in the log and on TensorBoard's text tab."""
        if not self.enabled or not lines:
            return
        self._tb.add_text(key, "\n\n".join(lines), step)
        self._jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), key: lines}) + "\n")

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
