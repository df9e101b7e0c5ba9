"""The `mama` command line (Typer). Installed as mama.cli."""
