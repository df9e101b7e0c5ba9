"""`mama train`: the generator stage, then the destroyer stage (DESIGN §1)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mama.config import TrainConfig


def train(
    stage: str = typer.Option("generator", help="generator | destroyer"),
    dataset: str = typer.Option("ped2", help="ped1 | ped2 | avenue | shanghai | synth"),
    data_root: Path = typer.Option(Path("data"), help="folder holding <dataset>/training, <dataset>/testing"),
    out: Optional[Path] = typer.Option(None, help="run folder (default runs/<dataset>_<stage>)"),
    preset: str = typer.Option("paper", help="paper: the reference semantics; fast: weight-free providers, compile + bf16 on CUDA"),
    generator: Optional[Path] = typer.Option(None, help="destroyer stage: the trained generator checkpoint"),
    iters: Optional[int] = typer.Option(None, help="iterations (default 60000 generator, 15000 destroyer)"),
    batch_size: int = typer.Option(4, help="clips per step (per process under torchrun)"),
    size: int = typer.Option(256, help="frame size (square), a multiple of 32"),
    base: int = typer.Option(64, help="network width (paper: 64)"),
    seed: int = typer.Option(0),
    lr_g: Optional[float] = typer.Option(None, help="generator learning rate (default: the dataset's)"),
    lr_d: Optional[float] = typer.Option(None, help="discriminator learning rate (default: the dataset's)"),
    lr_a: Optional[float] = typer.Option(None, help="destroyer learning rate (default: the dataset's)"),
    save_interval: int = typer.Option(1000, help="steps between latest.pt saves"),
    val_interval: int = typer.Option(1000, help="steps between validations (best.pt)"),
    motion: Optional[str] = typer.Option(None, help="flownet2sd | flownet2 | dis | farneback (default: the preset's)"),
    labels: Optional[str] = typer.Option(None, help="deeplabv3 | foreground | none (default: the preset's)"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
    resume: Optional[str] = typer.Option(None, help="'latest' (this run folder's latest.pt) or a checkpoint path"),
    num_workers: int = typer.Option(2, help="data-loading worker processes"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the models (default: the preset's, CUDA only)"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on CUDA (default: the preset's)"),
    select_on_test: bool = typer.Option(False, help="validate on TEST labels (the reference's checkpoint choice; reported as such)"),
) -> None:
    """Train one stage. Under torchrun the same command runs DistributedDataParallel."""
    from mama.train.trainer import train as run

    cfg = TrainConfig(
        stage=stage, dataset=dataset, data_root=str(data_root),
        out=str(out or Path("runs") / f"{dataset}_{stage}"), preset=preset,
        generator=str(generator) if generator else None, iters=iters, batch_size=batch_size, size=size,
        base=base, seed=seed, lr_g=lr_g, lr_d=lr_d, lr_a=lr_a, save_interval=save_interval, val_interval=val_interval,
        motion=motion, labels=labels, motion_weights=str(motion_weights) if motion_weights else None,
        label_weights=str(label_weights) if label_weights else None, resume=resume,
        num_workers=num_workers, device=device, compile=compile, amp=amp, select_on_test=select_on_test,
    )
    run_dir = run(cfg)
    typer.echo(f"{stage} run: {run_dir} (final.pt, best.pt, latest.pt, log.jsonl, tensorboard/)")
