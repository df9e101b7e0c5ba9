"""`mama demo`: the whole pipeline on the embedded synthetic dataset, on a CPU, with no
weights and no network: synthesise the dataset, train the generator, train the destroyer,
evaluate every protocol and write the HTML report.

The demo trains a narrow network (base width 16) on 64x64 frames with the paper preset's
training semantics but the weight-free providers (DIS flow, foreground labels), so it
finishes in minutes on 2 CPU cores; the paper configuration is `mama train --preset paper`
(FlowNet2-SD + DeepLabv3) at 256x256 on real data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mama.config import SEED_RANGE, TrainConfig


@dataclass
class DemoOptions:
    out: Path = Path("runs/demo")
    data_root: Path = Path("data")
    seed: int = 0
    size: int = 64  # training/evaluation frame size
    synth_size: int = 128  # the synthetic videos' own size
    base: int = 16
    generator_iters: int = 600
    destroyer_iters: int = 200
    batch_size: int = 4
    num_workers: int = 1


def check_options(o: DemoOptions) -> None:
    """Refuse bad options before anything is written."""
    from mama.errors import MamaError
    from mama.io import check_output_folder

    for flag, value in (("--generator-iters", o.generator_iters), ("--destroyer-iters", o.destroyer_iters)):
        if value < 1:
            raise MamaError(f"{flag} {value} must be a positive whole number")
    if not 0 <= o.seed < SEED_RANGE:
        raise MamaError(f"--seed {o.seed} must be a whole number from 0 to {SEED_RANGE - 1}, e.g. --seed 0")
    check_output_folder(o.out)
    check_output_folder(o.data_root, "--data-root")


def run_demo(o: DemoOptions) -> dict:
    from mama.data.synth import write_dataset
    from mama.config import EvalOptions
    from mama.evaluate.evaluate import evaluate
    from mama.train.trainer import train

    check_options(o)
    t0 = time.time()
    dataset_dir = o.data_root / "synth"
    if not (dataset_dir / "synth.mat").exists():
        print(f"[1/4] writing the synthetic dataset to {dataset_dir}")
        write_dataset(o.data_root, name="synth", seed=o.seed, size=o.synth_size)
    else:
        print(f"[1/4] reusing the synthetic dataset in {dataset_dir}")
    common = dict(dataset="synth", data_root=str(o.data_root), preset="paper", motion="dis", labels="foreground",
                  size=o.size, base=o.base, batch_size=o.batch_size, seed=o.seed, num_workers=o.num_workers,
                  device="cpu", lr_g=2e-4, lr_d=2e-5, lr_a=2e-4)
    print(f"[2/4] training the generator ({o.generator_iters} steps)")
    gen_dir = train(TrainConfig(stage="generator", out=str(o.out / "generator"), iters=o.generator_iters,
                                save_interval=200, val_interval=200, **common))
    print(f"[3/4] training the destroyer ({o.destroyer_iters} steps)")
    des_dir = train(TrainConfig(stage="destroyer", out=str(o.out / "destroyer"), iters=o.destroyer_iters,
                                generator=str(gen_dir / "final.pt"), save_interval=100, val_interval=100,
                                **common))
    print("[4/4] evaluating")
    result = evaluate(EvalOptions(dataset="synth", data_root=o.data_root, checkpoint=des_dir / "final.pt",
                                  out=o.out / "eval", device="cpu"))
    result["demo_seconds"] = round(time.time() - t0, 1)
    return result
