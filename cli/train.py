"""`mama train`: the generator stage, then the destroyer stage (docs/design.md). Every default is
TrainConfig's (mama.config), so it is stated once."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mama.config import BASE_WIDTH, DEFAULT_PRESET, FEATURE_STORES, FRAME_SIZE, STAGE_ITERS, TrainConfig
from mama.data.datasets import KNOWN_DATASETS
from mama.features.registry import LABEL_PROVIDERS, MOTION_PROVIDERS

D = TrainConfig()  # the defaults


def train(
    stage: str = typer.Option(D.stage, help="generator | destroyer"),
    dataset: str = typer.Option(D.dataset, help=" | ".join(KNOWN_DATASETS) + " (folder: --data-root is the footage)"),
    data_root: Path = typer.Option(Path(D.data_root), help="folder holding <dataset>/training, <dataset>/testing"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/<dataset>_<stage>)"),
    preset: Optional[str] = typer.Option(None, help=f"paper: the reference semantics; fast: weight-free providers, compile + bf16 on CUDA (default {DEFAULT_PRESET}; destroyer: the generator's)"),
    generator: Optional[Path] = typer.Option(None, help="destroyer stage: the trained generator checkpoint"),
    iters: Optional[int] = typer.Option(None, help=f"iterations (default {STAGE_ITERS['generator']} generator, {STAGE_ITERS['destroyer']} destroyer)"),
    batch_size: int = typer.Option(D.batch_size, help="clips per step (per process under torchrun)"),
    size: Optional[int] = typer.Option(None, help=f"frame size (square), a multiple of 8 (default {FRAME_SIZE}; destroyer: the generator's)"),
    base: Optional[int] = typer.Option(None, help=f"network width (default {BASE_WIDTH}, the paper's; destroyer: the generator's)"),
    seed: int = typer.Option(D.seed),
    lr_g: Optional[float] = typer.Option(None, help="generator learning rate (default: the dataset's)"),
    lr_d: Optional[float] = typer.Option(None, help="discriminator learning rate (default: the dataset's)"),
    lr_a: Optional[float] = typer.Option(None, help="destroyer learning rate (default: the dataset's)"),
    save_interval: int = typer.Option(D.save_interval, help="steps between latest.pt saves"),
    val_interval: int = typer.Option(D.val_interval, help="steps between validations (best.pt)"),
    keep_checkpoints: bool = typer.Option(D.keep_checkpoints, help="also keep every save as step_NNNNNN.pt (latest.pt is overwritten)"),
    motion: Optional[str] = typer.Option(None, help=" | ".join(MOTION_PROVIDERS) + " (default: the preset's; destroyer: the generator's)"),
    labels: Optional[str] = typer.Option(None, help=" | ".join(LABEL_PROVIDERS) + " (default: the preset's; destroyer: the generator's)"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
    resume: Optional[str] = typer.Option(None, help="'latest' (this run folder's latest.pt) or a checkpoint path"),
    num_workers: int = typer.Option(D.num_workers, help="data-loading worker processes"),
    device: str = typer.Option(D.device, help="auto | cpu | cuda"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the models (default: the preset's, CUDA only)"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA (default: the preset's)"),
    select_on_test: bool = typer.Option(D.select_on_test, help="validate on TEST labels (the reference's checkpoint choice; reported as such)"),
    calibrate_videos: int = typer.Option(D.calibrate_videos, help="training videos scored at the end to calibrate `mama score`"),
    calibrate_frames: int = typer.Option(D.calibrate_frames, help="at most this many frames of each calibration video"),
    feature_store: str = typer.Option(D.feature_store, help=" | ".join(FEATURE_STORES) + ": labels and flow kept on disk ($MAMA_CACHE/features, reused by later runs), in memory, or not at all"),
    resident: Optional[bool] = typer.Option(None, "--resident/--no-resident", help="keep the training frames (uint8) and features on the device and make batches there (default: on CUDA when they fit)"),
) -> None:
    """Train one stage. Under torchrun the same command runs DistributedDataParallel."""
    from mama.train.trainer import train as run

    cfg = TrainConfig(
        stage=stage, dataset=dataset, data_root=str(data_root), out=str(out) if out else None, preset=preset,
        generator=str(generator) if generator else None, iters=iters, batch_size=batch_size, size=size,
        base=base, seed=seed, lr_g=lr_g, lr_d=lr_d, lr_a=lr_a, save_interval=save_interval, val_interval=val_interval,
        keep_checkpoints=keep_checkpoints,
        motion=motion, labels=labels, motion_weights=str(motion_weights) if motion_weights else None,
        label_weights=str(label_weights) if label_weights else None, resume=resume,
        num_workers=num_workers, device=device, compile=compile, amp=amp, select_on_test=select_on_test,
        calibrate_videos=calibrate_videos, calibrate_frames=calibrate_frames, feature_store=feature_store,
        resident=resident,
    )
    run_dir = run(cfg)
    written = [n for n in ("final.pt", "best.pt", "latest.pt", "log.jsonl", "tensorboard") if (run_dir / n).exists()]
    typer.echo(f"{stage} run: {run_dir} ({', '.join(written)})")
