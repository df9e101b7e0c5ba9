"""Resume is exact: N steps straight equal N/k steps, a stop (or a kill -9), then a resume, bit
for bit, at any step and across the end of a pass over a video's clips, for both stages and
with or without loader workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mama.models.checkpoint import read_file
from mama.train import trainer as trainer_mod
from tests.support import tiny_train_config

# 2 training videos of 13 frames: 9 clips each, batches of 2 distinct videos, so every video's
# clip list is used up (and reshuffled) after 9 steps.
PASS = 9
STEPS = 13


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory) -> Path:
    from tests.data.fixtures import cell_gt, write_mat_dataset

    root = tmp_path_factory.mktemp("short")
    write_mat_dataset(root, "synth", [8], cell_gt([[(5, 8)]]), train_frames=(13, 13), seed=1)
    return root


def _cfg(root, out, **kw):
    return tiny_train_config(root, out, preset="paper", motion="dis", labels="foreground", holdout=0,
                             save_interval=1, val_interval=5, **kw)


def _same(a: Path, b: Path, nets: tuple[str, ...], opts: tuple[str, ...]) -> None:
    pa, pb = read_file(a, "run"), read_file(b, "run")
    assert pa["step"] == pb["step"]
    for key in nets:
        for name in pa[key]:
            assert torch.equal(pa[key][name], pb[key][name]), f"{key}.{name} differs"
    for key in opts:
        for (i, sa), (_, sb) in zip(pa[key]["state"].items(), pb[key]["state"].items()):
            for field in sa:
                assert torch.equal(sa[field], sb[field]), f"{key} state {i}.{field} differs"


@pytest.fixture(scope="module")
def generator(short_videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    return trainer_mod.train(_cfg(short_videos, out / "g", iters=3)) / "final.pt"


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stage", ["generator", "destroyer"])
def test_resume_is_exact_before_at_and_after_the_end_of_a_pass(stage, workers, short_videos, generator, tmp_path):
    kw = {"stage": stage, "num_workers": workers}
    if stage == "destroyer":
        kw["generator"] = str(generator)
    nets, opts = (("net_g", "net_d"), ("opt_g", "opt_d")) if stage == "generator" else (("net_a",), ("opt_a",))
    straight = trainer_mod.train(_cfg(short_videos, tmp_path / "straight", iters=STEPS, **kw))
    for stop in (PASS - 2, PASS, PASS + 1):  # before, at and after the end of a pass
        out = tmp_path / f"stop{stop}"
        trainer_mod.train(_cfg(short_videos, out, iters=stop, **kw))
        trainer_mod.train(_cfg(short_videos, out, iters=STEPS, resume="latest", **kw))
        _same(straight / "final.pt", out / "final.pt", nets, opts)


KILLED_RUN = r"""
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from mama.train.trainer import train
from tests.pipeline.test_resume import _cfg
train(_cfg(Path({root!r}), Path({out!r}), iters={iters}))
"""


def test_a_kill_minus_9_then_resume_is_exact(short_videos, tmp_path):
    straight = trainer_mod.train(_cfg(short_videos, tmp_path / "straight", iters=STEPS))
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    repo = str(Path(__file__).resolve().parents[2])
    script.write_text(KILLED_RUN.format(repo=repo, root=str(short_videos), out=str(out), iters=STEPS))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it somewhere after the first pass
        latest = out / "latest.pt"
        if latest.exists():
            try:
                if read_file(latest, "run")["step"] >= PASS + 1:
                    break
            except Exception:  # noqa: BLE001  (being replaced right now)
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_file(out / "latest.pt", "run")["step"]
    assert PASS < killed_at < STEPS and not (out / "final.pt").exists()
    trainer_mod.train(_cfg(short_videos, out, iters=STEPS, resume="latest"))
    _same(straight / "final.pt", out / "final.pt", ("net_g", "net_d"), ("opt_g", "opt_d"))
    assert not list(out.glob(".*.tmp*"))  # what the kill left half-written is gone
