"""The CLI entry point's own handling: an aborted prompt is one line and exit 130, not a traceback."""

from __future__ import annotations

import typer

from clusterbak.cli.entry import ClusterbakGroup


def test_an_aborted_prompt_is_one_line_and_exit_130(capsys):
    app = typer.Typer(cls=ClusterbakGroup)

    @app.command()
    def ask() -> None:
        raise typer.Abort()  # what click raises when a confirmation prompt gets Ctrl-C or EOF

    @app.command()
    def other() -> None:  # two commands: a group, as clusterbak's app is
        pass

    code = typer.main.get_command(app).main(["ask"], standalone_mode=False)
    assert code == 130
    assert capsys.readouterr().err == "error: aborted\n"
