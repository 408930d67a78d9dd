"""The only module that prints. Rich for people; one JSON envelope on stdout for --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clusterbak.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PRECONDITION, EXIT_STEP_FAILED, EXIT_USAGE

STATUS = {EXIT_OK: "ok", EXIT_USAGE: "usage_error", EXIT_PRECONDITION: "refused", EXIT_STEP_FAILED: "failed",
          EXIT_INTERRUPTED: "interrupted"}
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim", "ok": "green"}


@dataclass
class Outcome:
    data: Any = None
    exit_code: int = EXIT_OK
    errors: list[str] = field(default_factory=list)


NON_TTY_WIDTH = 1000  # a log (no terminal, no COLUMNS): a table row stays one line however wide


def _console(stderr: bool, width: int | None, file=None) -> Console:
    """A terminal gets colour and wrapping at its width; a pipe, a file, cron or journald get plain text: one line
    per message (soft wrap), no colour codes. COLUMNS, when set, is the width either way."""
    from rich.console import Console  # here, not at import: a --json or --quiet run may never print with rich

    console = Console(stderr=stderr, highlight=False, width=width, file=file)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, highlight=False, soft_wrap=True, no_color=True, color_system=None,
                   width=width or (None if os.environ.get("COLUMNS", "").isdigit() else NON_TTY_WIDTH), file=file)


class Renderer:
    def __init__(self, json_mode: bool = False, quiet: bool = False, width: int | None = None,
                 out=None, err=None) -> None:
        self.json_mode = json_mode
        self.quiet = quiet  # --quiet: no tables or progress, only errors and the verdict line
        self._width, self._files = width, (out, err)
        self._out: Console | None = None
        self._err: Console | None = None

    @property
    def out(self) -> Console:
        """stdout's console, made on first use (rich is imported then: start-up cost, issue 14)."""
        if self._out is None:
            self._out = _console(False, self._width, self._files[0])
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(True, self._width, self._files[1])
        return self._err

    @property
    def silent(self) -> bool:
        """No tables or chatter: --json (the envelope says it all) or --quiet (cron: errors and verdicts only)."""
        return self.json_mode or self.quiet

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
        """Progress chatter for people: stderr, and silent with --json or --quiet."""
        if not self.silent:
            self.err.print(message)

    def line(self, message: str, markup: bool = True) -> None:
        if not self.silent:
            self.out.print(message if markup else _escape(message))

    def verdict_line(self, message: str) -> None:
        """The one line a mutating command ends with (what, how long, where); printed even with --quiet."""
        if not self.json_mode:
            self.out.print(_escape(message), soft_wrap=True)

    # --- generic shapes ---------------------------------------------------------
    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              styles: Sequence[str | None] | None = None, optional: Sequence[str] = ()) -> None:
        """Nothing is ever cut off: when the table is wider than the console, the `optional` columns are dropped
        (in that order) first; whatever still does not fit folds onto the next line instead of ending in `…`."""
        if self.silent:
            return
        rows = [["" if v is None else str(v) for v in row] for row in rows]
        keep = list(range(len(columns)))
        drop = [columns.index(name) for name in optional if name in columns]
        while True:
            table = _table(title, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows], styles)
            if _natural_width(self.out, table) <= self.out.width:
                self.out.print(table)
                return
            if not drop:
                break
            keep.remove(drop.pop(0))
        # still too wide: one record per row, every value whole on its own line (grep finds a path in one piece)
        if title:
            self.out.print(_escape(title), soft_wrap=True)
        for i, row in enumerate(rows):
            style = styles[i] if styles else None
            self.out.print(f"  {_escape(row[0])}", style=style, soft_wrap=True)
            for col, value in zip(columns[1:], row[1:], strict=False):
                if value:
                    self.out.print(f"    {_escape(col or '-')}: {_escape(value)}", style=style, soft_wrap=True)

    def kv(self, title: str, pairs: Iterable[tuple[str, Any]]) -> None:
        self.table(title, ("", ""), ((k, v) for k, v in pairs))

    # --- command views ------------------------------------------------------------
    def topology(self, data: dict) -> None:
        if self.silent:
            return
        self.out.print(f"[bold]cluster[/] seen from {data['seed']}: {len(data['shards'])} shards, "
                       f"{len(data['nodes'])} nodes, cluster_state {data.get('cluster_state', '?')}")
        for shard in data["shards"]:
            rows, styles = [], []
            for n in shard["nodes"]:
                rows.append((n["role"], n["address"], n["id"], n["config_epoch"], n["link_state"],
                             ",".join(sorted(n["flags"])), n.get("repl_offset"), n.get("lag_bytes"),
                             n.get("used_memory_human"), n.get("keys")))
                styles.append("red" if n.get("failing") or n.get("error") else None)
            self.table(f"shard {shard['index']}  slots {' '.join(shard['slots']) or '-'}",
                       ("role", "address", "id", "epoch", "link", "flags", "offset", "lag", "memory", "keys"),
                       rows, styles, optional=("flags", "epoch", "link", "offset", "memory", "lag", "keys"))

    def findings(self, findings: list[dict]) -> None:
        if self.silent:
            return
        order = {"critical": 0, "warning": 1, "info": 2}
        for f in sorted(findings, key=lambda f: order.get(f["severity"], 3)):
            style = SEVERITY_STYLE.get(f["severity"], "")
            self.out.print(f"[{style}]{f['severity']:<8}[/] {_escape(f['subject'])}: {_escape(f['message'])}")
        crit = sum(1 for f in findings if f["severity"] == "critical")
        warn = sum(1 for f in findings if f["severity"] == "warning")
        verdict = "[bold red]NOT READY[/]" if crit else "[bold green]READY[/]"
        self.out.print(f"{verdict}: {crit} critical, {warn} warnings")


    def backup_checks(self, dest: str, checks: list[dict]) -> None:
        """Every backup check, Barman-style: the OK ones too."""
        if self.silent:
            return
        styles = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red"}
        self.out.print(f"[bold]backups[/] in {_escape(dest)}:")
        for x in checks:
            self.out.print(f"  {_escape(x['name'])}: [{styles[x['status']]}]{x['status']}[/] ({_escape(x['detail'])})")
        crit = sum(1 for x in checks if x["status"] == "CRITICAL")
        warn = sum(1 for x in checks if x["status"] == "WARNING")
        verdict = "[bold red]BACKUPS NOT OK[/]" if crit else "[bold green]BACKUPS OK[/]"
        self.out.print(f"{verdict}: {crit} critical, {warn} warnings")

    def confirm(self, question: str) -> bool:
        """Ask on the terminal; never with --json or without a terminal (the caller then refuses)."""
        import typer

        if self.json_mode or not sys.stdin.isatty():
            return False
        return typer.confirm(question, default=False, err=True)

    def backup_plan(self, plan: dict, gate: list[str], run: dict | None = None) -> None:
        if self.silent:
            return
        if run is not None:  # every option the run will use: a --dry-run shows all that will happen
            self.line(f"backup run: to {run['dest']}, {plan['kind']}, {run['parallel']} shard(s) in flight, "
                      f"{run['saves_per_host']} save(s) per host, compress {run['compress']}, "
                      + ("replica snapshots streamed over PSYNC (--via sync), " if run.get("via") == "sync" else "")
                      + f"save timeout {run['timeout']:g}s, catch-up timeout {run['catch_up_timeout']:g}s"
                      + (", appendfsync no during the copy" if run["relax_fsync"] else "")
                      + (f", encrypted to {len(run['encrypted_to'])} recipient(s)" if run["encrypted_to"] else "")
                      + (", manifest signed" if run["signed"] else "")
                      + (", new host keys accepted" if run["accept_new_host_keys"] else "")
                      + (", --force (cluster gate ignored)" if run["force"] else ""), markup=False)
        self.table(f"backup plan {plan['backup_id']} (source: {plan['source_mode']})",
                   ("shard", "slots", "snapshot on", "role", "host", "file", "why"),
                   [(s["index"], " ".join(s["slots"]), s["source_address"] or "-", s["source_role"] or "-",
                     s["host"] or "-", _snapshot_file(s, run), s["refusal"] or s["why"]) for s in plan["shards"]],
                   ["red" if s["refusal"] else None for s in plan["shards"]])
        self.table("nodes.conf, config file and users of every node", ("node", "role", "host", "file", "config file",
                                                                       "users"),
                   [(n["address"], n["role"], n["host"], n["nodes_conf_path"] or n["refusal"],
                     n.get("config_file") or "-", n.get("aclfile") or "ACL LIST") for n in plan["node_files"]])
        hosts = plan.get("hosts") or []
        if hosts:
            self.table(f"memory assumed per host during the saves (--saves-per-host {plan.get('saves_per_host', 1)})",
                       ("host", "saves at once", "used_memory", "+ copy-on-write", "= assumed", "host memory",
                        "copy-on-write from"),
                       [(h["host"], h["saves"], _size(h["used_memory"]), _size(h["cow"]), _size(h["assumed"]),
                         _size(h["total_system_memory"]) if h["total_system_memory"] else "-", h["cow_from"])
                        for h in hosts],
                       ["yellow" if h["total_system_memory"] and h["assumed"] > h["total_system_memory"] else None
                        for h in hosts], optional=("copy-on-write from",))
        for line in plan.get("warnings") or []:
            self.out.print(f"[yellow]warning:[/] {_escape(line)}")
        for line in gate:
            self.out.print(f"[bold red]gate:[/] {_escape(line)}")
        for line in plan["refusals"]:
            self.out.print(f"[bold red]refused:[/] {_escape(line)}")

    def backup_summary(self, m: dict) -> None:
        """A set's summary. `show` passes a stored manifest, which is untrusted: the reader validated what steers
        paths and commands, but informational fields may be absent, so every one here has a fallback."""
        if self.silent:
            return
        rows = []
        for s in m["shards"]:
            files = s["aof"]["files"] if "aof" in s else [s["file"]]
            raw = sum(f.get("raw_size") or 0 for f in files)
            stored = sum(f.get("stored_size") or 0 for f in files)
            secs = s.get("transfer_seconds") or sum(f.get("transfer_seconds", 0) for f in files)
            rate = f"{raw / secs / 1e6:.0f} MB/s" if secs else "-"
            check = f"{len(files)} AOF files" if "aof" in s else (s["file"].get("crc64") or "-")
            snapshot = _get(s, "save", "duration_s")
            rows.append((s["index"], s["source"]["address"], _get(s, "source", "role"), _get(s, "rdb", "keys"),
                         _size(raw), _size(stored), f"{snapshot:.2f}s" if isinstance(snapshot, (int, float)) else "-",
                         f"{secs:.2f}s", rate, check))
        self.table(
            f"backup {m['backup_id']} ({m.get('created_at', '-')}, {m.get('kind', 'rdb')})",
            ("shard", "source", "role", "keys", "data", "stored", "snapshot", "transfer", "rate", "crc64 / files"),
            rows,
        )
        totals = m.get("totals") or {}
        self.out.print(f"{totals.get('keys', '-')} keys, {_size(totals.get('raw_bytes') or 0)} raw, "
                       f"{_size(totals.get('stored_bytes') or 0)} stored, {len(m['nodes'])} nodes.conf, "
                       f"cross-shard skew {m.get('skew_seconds', '-')}s, took {m.get('duration_s', '-')}s")

    TIMING_COLUMNS = (("wait_host_s", "wait host"), ("catch_up_s", "catch up"), ("bgsave_s", "BGSAVE"),
                      ("wait_transfer_s", "wait slot"),
                      ("connect_s", "connect"), ("transfer_s", "transfer"), ("verify_s", "  verify"),
                      ("store_s", "  store"), ("fsync_s", "  fsync"))

    def backup_timings(self, m: dict) -> None:
        """Where each shard's time went (`--timings`): transfer includes verify, store and fsync (one pass)."""
        if self.silent:
            return
        rows = []
        for s in m["shards"]:
            t = s.get("timings") or {}
            cow = _get(s, "save", "rdb_last_cow_size")
            cells = (f"{t[k]:.2f}s" if isinstance(t.get(k), (int, float)) else "-" for k, _ in self.TIMING_COLUMNS)
            rows.append((s["index"], s["source"]["address"], *cells, _size(cow) if isinstance(cow, int) else "-"))
        self.table("where the time went, per shard (transfer includes verify, store and fsync: one pass)",
                   ("shard", "source", *(label for _, label in self.TIMING_COLUMNS), "fork COW"), rows)
        run = m.get("timings") or {}
        if run:
            self.out.print(f"shards {run.get('shards_s', '-')}s (in parallel), then nodes.conf and node files "
                           f"{run.get('node_files_s', '-')}s")

    def backup_verdict(self, m: dict, path: str) -> None:
        self.verdict_line(f"backup {m['backup_id']}: complete, {len(m['shards'])} shards, {m['totals']['keys']} keys, "
                          f"{_size(m['totals']['stored_bytes'])} stored, took {m['duration_s']:.1f}s, in {path}")

    def sets(self, rows: list[dict]) -> None:
        verified = {None: "-", True: "ok", False: "FAILED"}
        self.table("backup sets", ("id", "status", "verified", "kind", "age", "shards", "size"),
                   [(x["backup_id"], x["status"] + (f": {x['problem']}" if x.get("problem") else ""),
                     verified[x.get("verified")], x["kind"] or "-", _age(x["age_s"]), x["shards"] or "-",
                     _size(x["size"])) for x in rows],
                   [None if x["status"] == "complete" and x.get("verified") is not False else "yellow" for x in rows],
                   optional=("kind", "shards"))

    def backup_files(self, m: dict) -> None:
        """Every file of a set, and the replication offsets each shard's snapshot was taken at."""
        rows = []
        for s in m["shards"]:
            files = s["aof"]["files"] if "aof" in s else [s["file"]]
            for f in files:
                rows.append((f"shard {s['index']}", f["path"], f.get("source_path", "-"), _size(f["stored_size"]),
                             f["sha256"][:16], f"{s.get('source_repl_offset')} / {s.get('master_repl_offset')}"))
        for n in m["nodes"]:
            f = n["nodes_conf"]
            rows.append((n["address"], f["path"], f.get("source_path", "-"), _size(f["size"]), f["sha256"][:16], ""))
        self.table(f"files of backup {m['backup_id']}",
                   ("of", "file in set", "taken from", "stored", "sha256", "offset source / master"), rows,
                   optional=("sha256", "taken from", "offset source / master"))


    def restore_plan(self, plan: dict) -> None:
        if self.silent:
            return
        self.table(
            f"restore plan for backup {plan['backup_id']}",
            ("node", "role", "shard", "nodes.conf", "dump", "stop", "start", "replaces"),
            [
                (
                    n["old_address"]
                    if n["old_address"] == n["new_address"]
                    else f"{n['old_address']} -> {n['new_address']}",
                    n["role"],
                    n["shard"],
                    f"{n['nodes_conf_path']}{' (rewritten)' if n['rewrite_nodes_conf'] else ''}",
                    f"{n['aof_dir']}/{n['aof_base_name']} (AOF base)" if n["aof_dir"] else n["rdb_path"],
                    n["stop"],
                    n["start"],
                    f"{n['replaces_keys']} keys",
                )
                for n in plan["nodes"]
            ],
            ["red" if n["refusal"] else None for n in plan["nodes"]],
            optional=("start", "stop", "replaces", "shard", "role"),
        )
        self.out.print("steps: " + " -> ".join(plan["steps"]))
        self.node_extras_plan(plan["nodes"])
        for line in plan["warnings"]:
            self.out.print(f"[yellow]warning:[/] {_escape(line)}")
        for line in plan["refusals"]:
            self.out.print(f"[bold red]refused:[/] {_escape(line)}")

    def node_extras_plan(self, nodes: list[dict]) -> None:
        """--with-config / --with-acl: where each file goes and which directives change (values come masked)."""
        for n in nodes:
            if not n.get("config_path") and not n.get("acl_path"):
                continue
            placed = [f"config file -> {n['config_path']}"] if n.get("config_path") else []
            placed += [f"users -> {n['acl_path']}"] if n.get("acl_path") else []
            self.out.print(f"[bold]{_escape(n['new_address'])}[/]: {_escape(', '.join(placed))}")
            if n.get("config_path"):
                self.table(None, ("directive", "now", "after restore"),
                           [(c["directive"], "-" if c["before"] is None else c["before"],
                             "-" if c["after"] is None else c["after"]) for c in n["config_changes"]])

    def secret_files(self, m: dict) -> None:
        """Which secrets-bearing files a set holds: names and sizes, never content."""
        if self.silent:
            return
        rows = []
        for n in m.get("nodes", []):
            if n.get("config_file"):
                rows.append((n["address"], "config file", n["config_file"]["path"], n["config_file"]["size"]))
            if n.get("acl"):
                kind = "users (ACL LIST)" if n["acl"].get("source") == "acl-list" else "users (aclfile)"
                rows.append((n["address"], kind, n["acl"]["path"], n["acl"]["size"]))
        if rows:
            self.table("files holding secrets (stored 0600, content never shown)", ("node", "holds", "file", "bytes"),
                       rows)
        mods = sorted({f"{x['name']} {x['ver']}" for n in m.get("nodes", []) for x in n.get("modules") or []})
        if mods:
            self.line("modules the data may need: " + _escape(", ".join(mods)))
        for line in m.get("warnings") or []:
            self.line(f"[yellow]warning:[/] {_escape(line)}")

    def verdict(self, checks: list[dict]) -> None:
        self.table("verdict", ("check", "subject", "result", "detail"),
                   [(x["check"], x["subject"], "ok" if x["ok"] else "FAILED", x["detail"]) for x in checks],
                   [None if x["ok"] else "bold red" for x in checks])

    def drill_report(self, rep: dict) -> None:
        if self.silent:
            return
        self.kv(
            f"drill of backup {rep['backup_id']}: {'PASSED' if rep['ok'] else 'FAILED'}",
            [
                ("RTO", f"{rep['rto_seconds']} s"),
                ("RTO parts", ", ".join(f"{k.replace('_', ' ')} {v:.2f} s"
                                        for k, v in rep.get("rto_phases", {}).items())),
                ("RPO (backup age)", f"{rep['rpo_seconds']} s"),
                ("keys", rep["keys"]),
                ("raw", _size(rep["raw_bytes"])),
                ("stored", _size(rep["stored_bytes"])),
                ("restore rate", f"{rep['restore_rate_mb_s']} MB/s"),
                ("types read", ", ".join(f"{k} {v['read']}" for k, v in rep["samples"].items())),
                (
                    "lab",
                    rep["lab"]["seed"]
                    + (
                        f" (kept: clusterbak lab down --dir {rep['lab']['dir']})"
                        if rep["lab"]["kept"]
                        else " (removed)"
                    ),
                ),
            ],
        )


def _natural_width(console: Console, table: Table) -> int:
    """The width the table takes with every cell on one line (rich clamps measurements to the console's width)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(100_000), table).maximum


def _table(title: str | None, columns: Sequence[str], rows: list[list[str]], styles) -> Table:
    """Every cell on one line (no_wrap): measured, it says whether the table fits without cutting anything."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=True)
    for i, row in enumerate(rows):
        table.add_row(*(_escape(v) for v in row), style=styles[i] if styles else None)
    return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


class BackupProgress:
    """Per shard: a BGSAVE wait, then bytes transferred. Silent with --json. Thread-safe via rich's Progress."""

    def __init__(self, renderer: Renderer, shards: list[dict]) -> None:
        self.enabled = not renderer.silent
        self.progress: Any = None  # rich's Progress, only for a run that shows it
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), console=renderer.err, transient=False)
        self.tasks: dict[str, TaskID] = {}
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


class NodeProgress:
    """restore and drill: one line per target node, named, with bytes placed and the time remaining, as it goes
    stopped -> placing -> placed -> started. Silent with --json or --quiet; in a log (no terminal) rich prints the
    final state once."""

    PHASES = ("stopped", "placed", "started")

    def __init__(self, renderer: Renderer, sizes: dict[str, int]) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.enabled = not renderer.silent
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TimeRemainingColumn(), console=renderer.err, transient=False)
        self.sizes = dict(sizes)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self):
        if self.enabled:
            self.progress.start()
            self._add(self.sizes)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()

    def _add(self, sizes: dict[str, int]) -> None:
        for address, size in sizes.items():
            if address not in self.tasks:
                self.tasks[address] = self.progress.add_task(f"{address}: waiting", total=size or None)

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "plan":  # a drill knows its targets only once its lab is up
            self.sizes.update(data["sizes"])
            if self.enabled:
                self._add(data["sizes"])
            return
        task = self.tasks.get(data.get("node", ""))
        if not self.enabled or task is None:
            return
        if kind == "bytes":
            self.progress.update(task, description=f"{data['node']}: placing", advance=data["bytes"])
        elif kind in self.PHASES:
            self.progress.update(task, description=f"{data['node']}: {kind}")


def _get(d: dict, *keys: str) -> Any:
    value: Any = d
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return "-" if value is None else value


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    n = float(size)
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


def _snapshot_file(shard: dict, run: dict | None) -> str:
    """Where a shard's snapshot comes from: the replica's PSYNC stream (--via sync) or its dump file."""
    if run is not None and run.get("via") == "sync" and shard["source_role"] == "replica":
        return "PSYNC stream"
    return shard["rdb_path"] or "-"
