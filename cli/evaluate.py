"""`mama eval`: every protocol's frame-level metrics on a labelled test set, one table."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mama.data.datasets import KNOWN_DATASETS
from mama.errors import MamaError
from mama.config import EvalOptions, eval_out

D = EvalOptions(dataset="ped2", data_root=Path("data"), checkpoint=Path("."), out=Path("."))  # the defaults


def evaluate(
    checkpoint: Path = typer.Option(..., help="final.pt / best.pt of a run, or a reference-code checkpoint"),
    dataset: str = typer.Option(D.dataset, help=" | ".join(KNOWN_DATASETS) + " (folder: --data-root is the footage)"),
    data_root: Path = typer.Option(D.data_root, help="folder holding <dataset>/"),
    out: Optional[Path] = typer.Option(None, help="report folder (default: eval_<dataset>/ beside the checkpoint)"),
    protocol: str = typer.Option("all", help="paper | clean | online | all"),
    weights: Optional[str] = typer.Option(None, help="fusion weights a,b,c[,d] (default: fixed in advance)"),
    fit_weights: bool = typer.Option(False, help="pick the fusion weights on training video (no test labels)"),
    oracle: bool = typer.Option(False, help="also grid-search the weights on TEST labels, as the reference does"),
    sigma: Optional[float] = typer.Option(None, help=f"Gaussian smoothing of the offline scores (default {D.sigma:g}; 0: none)"),
    batch_size: int = typer.Option(D.batch_size),
    device: str = typer.Option(D.device, help="auto | cpu | cuda"),
    motion_weights: Optional[Path] = typer.Option(None, help="FlowNet weight file (default: the weights dir)"),
    label_weights: Optional[Path] = typer.Option(None, help="DeepLabv3 weight file (default: weights dir / torch hub cache)"),
    feature_store: str = typer.Option(D.feature_store, help="disk: the test videos' labels and flow kept in $MAMA_CACHE/features for the next evaluation | off"),
    amp: bool = typer.Option(D.amp, "--amp/--no-amp", help="bf16 autocast (CUDA)"),
    compile: bool = typer.Option(D.compile, "--compile/--no-compile", help="torch.compile the networks (CUDA graphs on CUDA)"),
) -> None:
    """Score every test frame and report micro/macro AUC, EER and AP per protocol."""
    from mama.config import PROTOCOLS
    from mama.evaluate.evaluate import evaluate as run
    from mama.evaluate.fusion import FusionWeights

    protocols = PROTOCOLS if protocol == "all" else (protocol,)
    if any(p not in PROTOCOLS for p in protocols):
        raise MamaError(f"unknown --protocol {protocol!r}; use one of {', '.join(PROTOCOLS)} or all")
    if sigma is not None and protocols == ("online",):
        raise MamaError("--sigma smooths the offline protocols (paper, clean); the online protocol uses the causal "
                        "smoothing calibrated in the checkpoint: drop --sigma, or use --protocol all")
    try:
        w = FusionWeights.parse(weights) if weights else None
    except ValueError as exc:
        raise MamaError(str(exc)) from None
    out = out or eval_out(checkpoint, dataset)
    result = run(EvalOptions(dataset=dataset, data_root=data_root, checkpoint=checkpoint, out=out,
                             protocols=protocols, weights=w, fit_weights=fit_weights, oracle=oracle,
                             sigma=D.sigma if sigma is None else sigma, batch_size=batch_size, device=device, motion_weights=motion_weights,
                             label_weights=label_weights, feature_store=feature_store,
                             amp=amp, compile=compile))
    if result:  # under torchrun only rank 0 reports
        from mama.evaluate.report import headline_sentence

        print_table(result)
        typer.echo(headline_sentence(result))
        typer.echo(f"report: {out / 'report.html'}")


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    short = {"generator": "G", "generator+destroyer": "G+D"}
    t = Table(title=f"{result['dataset']}: frame-level metrics ({result['headline']['frames']} frames; "
                    "G = generator, G+D = with destroyer)")
    for c in ("protocol", "model", "smooth", "micro AUC", "macro AUC", "EER", "AP", "weights a,b,c,d", "test labels"):
        t.add_column(c, no_wrap=True)
    for r in result["rows"]:
        f = lambda x: "-" if x != x else f"{x:.4f}"  # noqa: E731  (NaN -> "-")
        used = "YES: " + r["weights_from"] if r["test_labels_used"] else "no"
        t.add_row(r["protocol"], short.get(r["model"], r["model"]), f"{r['smoothing']:g}", f(r["micro_auc"]),
                  f(r["macro_auc"]), f(r["eer"]), f(r["ap"]), r["weights"], used)
    console = Console(width=max(Console().width, 130))
    console.print(t)
    if result.get("ablation"):
        a = Table(title="stream ablation (the paper's fusion taken apart, the same streams re-fused; no test label used)")
        keys = [k for k in result["ablation"][0] if k.startswith("micro_auc")]
        for c in ("streams", "weights a,b,c,d", *keys):
            a.add_column(c, no_wrap=True)
        for r in result["ablation"]:
            a.add_row(r["streams"], r["weights"], *(f"{r[k]:.4f}" for k in keys))
        console.print(a)
    loc = result.get("localisation")
    if loc:
        console.print(
            f"destroyer localisation (pixel masks): damage AUROC {loc['damage_pixel_auroc']:.4f} "
            f"(generator error {loc['generator_error_pixel_auroc']:.4f}); destroyed (> 0.5) inside anomalies "
            f"{loc['damage_above_0.5_inside']:.1%}, outside {loc['damage_above_0.5_outside']:.1%}; "
            f"{loc['damage_share_of_pixels_above_0.5_in_anomalies']:.1%} of destroyed pixels are anomalous "
            f"({loc['anomalous_pixels'] / (loc['anomalous_pixels'] + loc['normal_pixels']):.1%} of all pixels are)")
