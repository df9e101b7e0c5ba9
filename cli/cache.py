"""`mama cache`: what the cache folder holds (prepared frames, features), and clearing it by
kind, by age or all, never an entry a running process holds (mama.cache)."""
from __future__ import annotations

import time
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from mama import cache
from mama.errors import MamaError
from mama.io import cache_dir
from mama.weights import weights_dir

cache_app = typer.Typer(
    help="List what the cache holds (no subcommand), or clear it.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def human_age(seconds: float) -> str:
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "<1m ago"


def _count(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


@cache_app.callback()
def cache_main(ctx: typer.Context) -> None:
    """List the cache (no subcommand), or clear it."""
    if ctx.invoked_subcommand is None:
        list_cache()


@cache_app.command("list")
def list_cache() -> None:
    """Each entry: its kind, video, providers or size, bytes, last use, and whether it is in use."""
    console = Console()
    root = cache_dir()
    found = cache.entries(root)
    now = time.time()
    if found:
        table = Table(title=f"cache {root}", title_justify="left", box=box.SIMPLE_HEAD)
        for column, justify in (("kind", "left"), ("video", "left"), ("what", "left"), ("size", "right"),
                                ("last use", "right"), ("state", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for e in found:
            state = "in use" if e.in_use else ("partial" if not e.complete else "")
            table.add_row(e.kind, e.video, e.detail, human_bytes(e.bytes), human_age(now - e.last_use), state)
        console.print(table)
    else:
        console.print(f"cache {root}: empty", soft_wrap=True)
    for kind in cache.KINDS:
        mine = [e for e in found if e.kind == kind]
        console.print(f"{kind}: {_count(len(mine))}, {human_bytes(sum(e.bytes for e in mine))}")
    weights = weights_dir()
    console.print(f"weights: {human_bytes(cache.weights_bytes(weights))} in {weights} (not cleared here; "
                  "see `mama weights`)")


@cache_app.command("clear")
def clear_cache(
    kind: Optional[list[str]] = typer.Option(None, help=" | ".join(cache.KINDS) + " (repeat for several)"),
    older_than: Optional[str] = typer.Option(None, help="only entries last used longer ago than this: 90m, 12h, 7d, 2w"),
    all_: bool = typer.Option(False, "--all", help="every entry of every kind"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be removed, remove nothing"),
) -> None:
    """Remove cache entries by kind, by age, or all; an entry a running process holds is kept."""
    if all_ and (kind or older_than):
        raise MamaError("--all clears everything; drop it to clear by --kind or --older-than, or drop those")
    if not (all_ or kind or older_than):
        raise MamaError("say what to clear: --kind frames|features, --older-than AGE (e.g. 7d), or --all")
    age = cache.parse_age(older_than) if older_than else None
    result = cache.clear(tuple(kind) if kind else cache.KINDS, age, cache_dir(), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    console = Console()
    console.print(f"{verb} {_count(len(result.removed))}, {human_bytes(result.freed)}", soft_wrap=True)
    for e in result.kept:
        console.print(f"kept {e.kind} {e.video} ({human_bytes(e.bytes)}): in use by a running process",
                      soft_wrap=True)
