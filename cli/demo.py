"""`mama demo`: the whole pipeline on the embedded synthetic dataset (CPU, no weights)."""
from __future__ import annotations

from pathlib import Path

import typer

from mama.demo import DemoOptions

D = DemoOptions()  # the defaults


def demo(
    out: Path = typer.Option(D.out, help="run folder"),
    data_root: Path = typer.Option(D.data_root, help="where the synthetic dataset is written (reused if there)"),
    seed: int = typer.Option(D.seed),
    generator_iters: int = typer.Option(D.generator_iters, help="generator training steps"),
    destroyer_iters: int = typer.Option(D.destroyer_iters, help="destroyer training steps"),
) -> None:
    """Synthesise a surveillance dataset, train both stages, evaluate, print the metrics."""
    from mama.cli.evaluate import print_table
    from mama.demo import run_demo
    from mama.evaluate.report import headline_sentence

    result = run_demo(DemoOptions(out=out, data_root=data_root, seed=seed,
                                  generator_iters=generator_iters, destroyer_iters=destroyer_iters))
    print_table(result)
    typer.echo(headline_sentence(result))
    typer.echo(f"report: {out / 'eval' / 'report.html'}  ({result['demo_seconds']:.0f} s)")
