"""`mama`: the command-line entry point. Each command group lives in its own module."""
from __future__ import annotations

import functools
import sys

import typer

from mama.cli import cache, data, demo, evaluate, export, score, serve, train, weights
from mama.errors import MamaError
from mama.runtime import exit_code_of

app = typer.Typer(
    help="Video anomaly detection: F2LM generator + Destroyer (Making Anomalies More Anomalous).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per command (group), in the order `mama --help` shows them.
def _version(value: bool) -> None:
    if value:
        import mama

        print(f"mama {mama.__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print mama's version and exit.")) -> None:
    """Video anomaly detection: F2LM generator + Destroyer (Making Anomalies More Anomalous)."""


app.add_typer(data.app, name="data", help="Check datasets (verify) and write the synthetic one (synth).")
app.add_typer(weights.weights_app, name="weights", help="List, import or fetch the pretrained weight files.")
app.add_typer(cache.cache_app, name="cache", help="List what the cache holds (frames, features), or clear it.")
app.command("train")(train.train)
app.command("eval")(evaluate.evaluate)
app.command("score")(score.score)
app.command("export")(export.export)
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)


def _stoppable(command):
    """A command that a signal stops (a KeyboardInterrupt, or StopRequest's Interrupted) says
    `interrupted` and exits with 128 + the signal's number (Typer would turn every one into 130)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(exit_code_of(exc)) from None

    return run


for _group in (app, data.app, weights.weights_app):
    for _info in _group.registered_commands:
        _info.callback = _stoppable(_info.callback)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status.

    A user's mistake, a MamaError or a usage error (an unknown option, a value of the wrong
    type), prints one line, `error: ...`, and returns 2: no traceback. A stop by signal returns 128 +
    its number (Ctrl-C 130, SIGTERM 143).
    """
    try:
        code = app(args=argv, prog_name="mama", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except MamaError as exc:
        return _error(str(exc))
    except typer.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # Typer makes Abort of an EOFError: a reader's bug, not a Ctrl-C
            raise exc.__cause__ from None
        print("interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # click's usage errors (Typer vendors click)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mama` or `mama data` alone: the help
            print(ctx.get_help() if ctx is not None else exc)
            return 0
        command = ctx.command_path if ctx is not None else "mama"
        return _error(f"{exc.format_message()} (see `{command} --help`)")
    return code if isinstance(code, int) else 0


def _error(message: str) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr)  # one line, whatever the message
    return 2


def cli() -> None:  # console_scripts entry point
    sys.exit(main())


if __name__ == "__main__":  # `python -m mama.cli.app ...`, e.g. under torchrun
    cli()
