"""The only module that prints. Rich for people; one JSON envelope on stdout for --json."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from clusterbak.errors import EXIT_OK, EXIT_PRECONDITION, EXIT_STEP_FAILED, EXIT_USAGE

STATUS = {EXIT_OK: "ok", EXIT_USAGE: "usage_error", EXIT_PRECONDITION: "refused", EXIT_STEP_FAILED: "failed",
          130: "interrupted"}
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


    def confirm(self, question: str) -> bool:
        """Ask on the terminal; never with --json or without a terminal (the caller then refuses)."""
        import typer

        if self.json_mode or not sys.stdin.isatty():
            return False
        return typer.confirm(question, default=False, err=True)

    def backup_plan(self, plan: dict, gate: list[str]) -> None:
        if self.json_mode:
            return
        self.table(f"backup plan {plan['backup_id']} (source: {plan['source_mode']})",
                   ("shard", "slots", "snapshot on", "role", "host", "file", "why"),
                   [(s["index"], " ".join(s["slots"]), s["source_address"] or "-", s["source_role"] or "-",
                     s["host"] or "-", s["rdb_path"] or "-", s["refusal"] or s["why"]) for s in plan["shards"]],
                   ["red" if s["refusal"] else None for s in plan["shards"]])
        self.table("nodes.conf of every node", ("node", "role", "host", "file"),
                   [(n["address"], n["role"], n["host"], n["nodes_conf_path"] or n["refusal"]) for n in plan["node_files"]])
        for line in gate:
            self.out.print(f"[bold red]gate:[/] {_escape(line)}")
        for line in plan["refusals"]:
            self.out.print(f"[bold red]refused:[/] {_escape(line)}")

    def backup_summary(self, m: dict) -> None:
        if self.json_mode:
            return
        rows = []
        for s in m["shards"]:
            files = s["aof"]["files"] if "aof" in s else [s["file"]]
            raw, stored = sum(f["raw_size"] for f in files), sum(f["stored_size"] for f in files)
            secs = s.get("transfer_seconds") or sum(f.get("transfer_seconds", 0) for f in files)
            rate = f"{raw / secs / 1e6:.0f} MB/s" if secs else "-"
            check = f"{len(files)} AOF files" if "aof" in s else s["file"]["crc64"]
            rows.append((s["index"], s["source"]["address"], s["source"]["role"], s["rdb"]["keys"],
                         _size(raw), _size(stored), f"{s['save']['duration_s']:.2f}s", f"{secs:.2f}s", rate, check))
        self.table(f"backup {m['backup_id']} ({m['created_at']}, {m['kind']})",
                   ("shard", "source", "role", "keys", "data", "stored", "snapshot", "transfer", "rate", "crc64 / files"),
                   rows)
        self.out.print(f"{m['totals']['keys']} keys, {_size(m['totals']['raw_bytes'])} raw, "
                       f"{_size(m['totals']['stored_bytes'])} stored, {len(m['nodes'])} nodes.conf, "
                       f"cross-shard skew {m['skew_seconds']}s, took {m['duration_s']}s")

    def sets(self, rows: list[dict]) -> None:
        self.table("backup sets", ("id", "status", "verified", "kind", "age", "shards", "size", "reason"),
                   [(x["backup_id"], x["status"], x.get("verified", "never"), x["kind"] or "-", _age(x["age_s"]),
                     x["shards"] or "-", _size(x["size"]), x.get("reason") or "") for x in rows],
                   [None if x["status"] == "complete" and x.get("verified") != "failed" else "yellow" for x in rows])


    def restore_plan(self, plan: dict) -> None:
        if self.json_mode:
            return
        self.table(f"restore plan for backup {plan['backup_id']}",
                   ("node", "role", "shard", "nodes.conf", "dump", "stop", "start", "replaces"),
                   [(n["old_address"] if n["old_address"] == n["new_address"] else f"{n['old_address']} -> {n['new_address']}",
                     n["role"], n["shard"],
                     f"{n['nodes_conf_path']}{' (rewritten)' if n['rewrite_nodes_conf'] else ''}",
                     f"{n['aof_dir']}/{n['aof_base_name']} (AOF base)" if n["aof_dir"] else n["rdb_path"],
                     n["stop"], n["start"], f"{n['replaces_keys']} keys") for n in plan["nodes"]],
                   ["red" if n["refusal"] else None for n in plan["nodes"]])
        self.out.print("steps: " + " -> ".join(plan["steps"]))
        for line in plan["warnings"]:
            self.out.print(f"[yellow]warning:[/] {_escape(line)}")
        for line in plan["refusals"]:
            self.out.print(f"[bold red]refused:[/] {_escape(line)}")

    def verdict(self, checks: list[dict]) -> None:
        self.table("verdict", ("check", "subject", "result", "detail"),
                   [(x["check"], x["subject"], "ok" if x["ok"] else "FAILED", x["detail"]) for x in checks],
                   [None if x["ok"] else "bold red" for x in checks])

    def drill_report(self, rep: dict) -> None:
        if self.json_mode:
            return
        self.kv(f"drill of backup {rep['backup_id']}: {'PASSED' if rep['ok'] else 'FAILED'}", [
            ("RTO", f"{rep['rto_seconds']} s"), ("RPO (backup age)", f"{rep['rpo_seconds']} s"),
            ("keys", rep["keys"]), ("raw", _size(rep["raw_bytes"])), ("stored", _size(rep["stored_bytes"])),
            ("restore rate", f"{rep['restore_rate_mb_s']} MB/s"),
            ("types read", ", ".join(f"{k} {v['read']}" for k, v in rep["samples"].items())),
            ("lab", rep["lab"]["seed"] + (f" (kept: clusterbak lab down --dir {rep['lab']['dir']})" if rep["lab"]["kept"] else " (removed)"))])


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


class BackupProgress:
    """Per shard: a BGSAVE wait, then bytes transferred. Silent with --json. Thread-safe via rich's Progress."""

    def __init__(self, renderer: Renderer, shards: list[dict]) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.enabled = not renderer.json_mode
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=renderer.err, transient=False)
        self.tasks = {}
        self.shards = {s["index"]: s for s in shards}

    def __enter__(self):
        if self.enabled:
            self.progress.start()
            for i, s in self.shards.items():
                self.tasks[i] = self.progress.add_task(f"shard {i} {s['source_address']}: waiting", total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()

    def __call__(self, kind: str, data: dict) -> None:
        if not self.enabled or "shard" not in data:
            return
        task, addr = self.tasks[data["shard"]], self.shards[data["shard"]]["source_address"]
        if kind == "bgsave":
            self.progress.update(task, description=f"shard {data['shard']} {addr}: BGSAVE")
        elif kind == "transfer":
            self.progress.reset(task, description=f"shard {data['shard']} {addr}: transfer", total=None)
        elif kind == "bytes":
            self.progress.advance(task, data["bytes"])
        elif kind == "fetched":
            self.progress.update(task, description=f"shard {data['shard']} {addr}: verified",
                                 total=data["bytes"], completed=data["bytes"])


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
