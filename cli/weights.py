"""`mama weights`: list, import and fetch the pretrained weight files (mama.weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mama import weights as registry

weights_app = typer.Typer(
    help="Pretrained weights: list what is found (no subcommand), import a file, or fetch one.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@weights_app.callback()
def weights_main(ctx: typer.Context) -> None:
    """List the known weight files (no subcommand), import a file, or fetch one."""
    if ctx.invoked_subcommand is None:
        list_weights()


@weights_app.command("list")
def list_weights() -> None:
    """List the known weight files, whether each is found, and where they are looked for."""
    console = Console()
    # A block per file rather than a table: a path does not fit a column of an 80-column terminal.
    for entry in registry.REGISTRY.values():
        found = registry.find_weights(entry.name)
        status = "[green]found[/green]" if found else "[red]missing[/red]"
        path = found or registry.weights_dir() / entry.file_name
        console.print(f"[bold]{entry.name}[/bold]  {status}", highlight=False)
        for key, value in (("for", entry.purpose), ("file", entry.file_name), ("path", path), ("sha256", entry.sha256_text)):
            console.print(f"  {key:<7}{value}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"searched: weights dir {registry.weights_dir()} (set $MAMA_WEIGHTS to change), "
                  f"then torch hub cache {registry.hub_checkpoints_dir()}", highlight=False)
    console.print("install a downloaded file with `mama weights import FILE`, or download one with "
                  "`mama weights fetch NAME`", highlight=False)


@weights_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="a downloaded weights file")],
    name: Annotated[str | None, typer.Option(help="registry name; default: from the file name")] = None,
) -> None:
    """Verify FILE (size, sha256 where known, loads as its architecture) and install it."""
    dest = registry.import_weights(file, name)
    Console().print(f"installed {dest}", soft_wrap=True)


@weights_app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(registry.REGISTRY)}")],
    url: Annotated[str | None, typer.Option(help="download from this URL instead")] = None,
) -> None:
    """Download NAME into the weights dir (resumes a partial download, verifies it)."""
    dest = registry.fetch_weights(name, url)
    Console().print(f"installed {dest}", soft_wrap=True)
