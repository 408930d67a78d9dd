"""The only module that prints. Rich for people; one JSON envelope on stdout for --json."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from clusterbak.errors import EXIT_OK, EXIT_PRECONDITION, EXIT_STEP_FAILED, EXIT_USAGE

STATUS = {EXIT_OK: "ok", EXIT_USAGE: "usage_error", EXIT_PRECONDITION: "refused", EXIT_STEP_FAILED: "failed"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim", "ok": "green"}


@dataclass
class Outcome:
    data: Any = None
    exit_code: int = EXIT_OK
    errors: list[str] = field(default_factory=list)


class Renderer:
    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, soft_wrap=False)
        if not self.out.is_terminal:
            self.out = Console(highlight=False, soft_wrap=False, width=160)
        self.err = Console(stderr=True, highlight=False)

    # --- envelopes and errors -------------------------------------------------
    def envelope(self, command: str, outcome: Outcome) -> None:
        if not self.json_mode:
            return
        doc = {"command": command, "status": STATUS.get(outcome.exit_code, "error"),
               "exit_code": outcome.exit_code, "data": outcome.data, "errors": outcome.errors}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def error(self, message: str) -> None:
        if not self.json_mode:
            self.err.print(f"[bold red]error:[/] {_escape(message)}")

    def note(self, message: str) -> None:
        """Progress chatter for people: stderr, and silent with --json."""
        if not self.json_mode:
            self.err.print(message)

    def line(self, message: str) -> None:
        if not self.json_mode:
            self.out.print(message)

    # --- generic shapes ---------------------------------------------------------
    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              styles: Sequence[str | None] | None = None) -> None:
        if self.json_mode:
            return
        table = Table(title=title, title_justify="left", show_lines=False)
        for col in columns:
            table.add_column(col)
        for i, row in enumerate(rows):
            style = styles[i] if styles else None
            table.add_row(*(_escape("" if v is None else str(v)) for v in row), style=style)
        self.out.print(table)

    def kv(self, title: str, pairs: Iterable[tuple[str, Any]]) -> None:
        self.table(title, ("", ""), ((k, v) for k, v in pairs))

    # --- command views ------------------------------------------------------------
    def topology(self, data: dict) -> None:
        if self.json_mode:
            return
        self.out.print(f"[bold]cluster[/] seen from {data['seed']}: {len(data['shards'])} shards, "
                       f"{len(data['nodes'])} nodes, cluster_state {data.get('cluster_state', '?')}")
        for shard in data["shards"]:
            rows, styles = [], []
            for n in shard["nodes"]:
                rows.append((n["role"], n["address"], n["id"][:8], n["config_epoch"], n["link_state"],
                             ",".join(sorted(n["flags"])), n.get("repl_offset"), n.get("lag_bytes"),
                             n.get("used_memory_human"), n.get("keys")))
                styles.append("red" if n.get("failing") or n.get("error") else None)
            self.table(f"shard {shard['index']}  slots {' '.join(shard['slots']) or '-'}",
                       ("role", "address", "id", "epoch", "link", "flags", "offset", "lag", "memory", "keys"),
                       rows, styles)

    def findings(self, findings: list[dict]) -> None:
        if self.json_mode:
            return
        order = {"critical": 0, "warning": 1, "info": 2}
        for f in sorted(findings, key=lambda f: order.get(f["severity"], 3)):
            style = SEVERITY_STYLE.get(f["severity"], "")
            self.out.print(f"[{style}]{f['severity']:<8}[/] {_escape(f['subject'])}: {_escape(f['message'])}")
        crit = sum(1 for f in findings if f["severity"] == "critical")
        warn = sum(1 for f in findings if f["severity"] == "warning")
        verdict = "[bold red]NOT READY[/]" if crit else "[bold green]READY[/]"
        self.out.print(f"{verdict}: {crit} critical, {warn} warnings")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))
