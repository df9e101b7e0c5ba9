"""A run's figures on their way out: a step's losses read back from the device, and the progress bar."""
from __future__ import annotations

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# A step's losses stay on the device (reading one back waits for the step to finish); they are
# read back together every READBACK_EVERY steps (the steps logged, with the first and the last)
# and before a validation, a save or a stop.
READBACK_EVERY = 10


def as_floats(scalars: dict) -> dict:
    """A step's figures (device tensors and floats) as floats, read back in one transfer."""
    tensors = [v.detach().float().reshape(()) for v in scalars.values() if torch.is_tensor(v)]
    values = iter(torch.stack(tensors).cpu().tolist() if tensors else [])
    return {k: next(values) if torch.is_tensor(v) else float(v) for k, v in scalars.items()}


def progress_bar(stage: str, shown: bool) -> Progress:
    columns = (TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.2f} it/s"), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}"))
    return Progress(*columns, disable=not shown, transient=False)


def bar_info(scalars: dict[str, float]) -> str:
    """The first three figures, as the bar shows them."""
    return " ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in list(scalars.items())[:3])
