"""The `frameseek` command line (minimal; the server stream owns the full version)."""

import typer

from .media_cli import register

app = typer.Typer(no_args_is_help=True, add_completion=False)
register(app)


@app.callback()
def _root() -> None:
    """frameseek: find where images and video clips appear inside a video library."""


def main() -> None:
    app()
