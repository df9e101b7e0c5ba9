"""`mama weights`: list, import and fetch the pretrained weight files (mama.weights)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

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
    table = Table(title="known weight files")
    for column in ("name", "file", "status", "path (found, or where it goes)", "sha256 expected", "for"):
        table.add_column(column, overflow="fold")
    for entry in registry.REGISTRY.values():
        found = registry.find_weights(entry.name)
        status = "[green]found[/green]" if found else "[red]missing[/red]"
        path = found or registry.weights_dir() / entry.file_name
        table.add_row(entry.name, entry.file_name, status, str(path), entry.sha256_text, entry.purpose)
    console.print(table)
    console.print(f"searched: weights dir {registry.weights_dir()} (set $MAMA_WEIGHTS to change), "
                  f"then torch hub cache {registry.hub_checkpoints_dir()}", soft_wrap=True)
    console.print("install a downloaded file with `mama weights import FILE`, or download one with "
                  "`mama weights fetch NAME`", soft_wrap=True)


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
