"""Start-up cost (issue 14): a command line builds and imports only the module of the command it names; the
table that says which module that is covers every command, and nothing else changes for the operator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from clusterbak.cli import app as cli_app

ROOT = Path(__file__).resolve().parents[2]


def names(app: typer.Typer) -> list[str]:
    return list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_table_names_every_command_of_the_app_in_its_help_order():
    assert names(cli_app.build()) == list(cli_app.COMMANDS)
    assert names(cli_app.app) == list(cli_app.COMMANDS)


def test_each_command_alone_is_the_same_command():
    full = typer.main.get_command(cli_app.build()).commands  # type: ignore[attr-defined]
    for name in cli_app.COMMANDS:
        alone = typer.main.get_command(cli_app.for_argv([name, "--help"])).commands  # type: ignore[attr-defined]
        assert name in alone
        assert [p.name for p in alone[name].params] == [p.name for p in full[name].params]


def test_options_first_or_an_unknown_word_get_every_command():
    for argv in ([], ["--version"], ["--help"], ["bakcup"], ["--install-completion", "backup"]):
        assert names(cli_app.for_argv(argv)) == list(cli_app.COMMANDS)


def test_a_backup_command_line_does_not_import_the_other_commands():
    probe = ("import sys; sys.argv = ['clusterbak', 'backup', '--help']\n"
             "from clusterbak.cli.app import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('clusterbak.cli.restore_cmd', 'clusterbak.cli.rolling_cmd', "
             "'clusterbak.cli.restore_keys_cmd', 'clusterbak.cli.lab_cmd', 'clusterbak.lab.cluster', "
             "'clusterbak.engine.rolling', 'clusterbak.engine.restore') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "Usage:" in out.stdout
    assert out.stderr.strip() == "[]"


def test_a_json_run_renders_without_importing_rich():
    probe = ("import sys\n"
             "from clusterbak.cli.render import BackupProgress, Outcome, Renderer\n"
             "r = Renderer(json_mode=True)\n"
             "with BackupProgress(r, [{'index': 0, 'source_address': 'a:1'}]) as p:\n"
             "    p('bgsave', {'shard': 0})\n"
             "r.error('x')\n"
             "r.envelope('backup', Outcome(data={}))\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert '"status": "ok"' in out.stdout
    assert out.stderr.strip() == "[]"
