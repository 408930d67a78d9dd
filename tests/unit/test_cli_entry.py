"""The CLI entry point's own handling: an aborted prompt is one line and exit 130, not a traceback."""

from __future__ import annotations

import json

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


def test_a_string_choice_is_checked_by_typer_before_the_command_runs(capsys):
    from clusterbak.cli.app import app

    code = typer.main.get_command(app).main(["lab", "up", "--fleet", "--version", "redis-9.9", "--json"],
                                            standalone_mode=False)
    assert code == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "usage_error"
    assert "'redis-9.9' is not one of 'redis-6.0', 'redis-7.0', 'valkey-8.0', 'redis-8.0', 'valkey-8.1'" \
        in doc["errors"][0]
