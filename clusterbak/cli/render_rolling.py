"""Views of `rolling-restart`: the plan, progress notes, the per-node report. Printing only through a Renderer."""

from __future__ import annotations

from collections.abc import Callable

from rich.markup import escape

from clusterbak.cli.render import Renderer

ACTION_TEXT = {"restart": "restart", "failover": "CLUSTER FAILOVER", "failback": "CLUSTER FAILOVER (back)"}


def show_plan(r: Renderer, plan: dict, records: list[dict] | None = None, refusals: tuple[str, ...] = ()) -> None:
    done = {x["index"]: x["status"] for x in records or ()}
    rows, styles = [], []
    for s in plan["steps"]:
        if s["action"] == "restart":
            detail = s["command"]
        else:
            detail = f"{s['demote_address']} becomes its replica" + (f"; {s['why'].split(' on ', 1)[-1]}"
                                                                      if s["action"] == "failover" else "")
        row = [s["index"] + 1, s["phase"], ACTION_TEXT[s["action"]], s["address"], s["shard"],
               s["expect_master_address"], detail]
        if records is not None:
            row.append(done.get(s["index"], ""))
        rows.append(row)
        styles.append("dim" if done.get(s["index"]) == "done" else None)
    columns = ["#", "phase", "action", "node", "shard", "master after", "command / effect"]
    if records is not None:
        columns.append("status")
    r.table(f"rolling restart plan: {len(plan['targets'])} nodes, {len(plan['steps'])} steps, "
            f"failover mode {plan['failover_mode']}", columns, rows, styles)
    for line in plan["warnings"]:
        r.line(f"[yellow]warning:[/] {escape(line)}")
    for line in refusals:
        r.line(f"[bold red]refused:[/] {escape(line)}")


def progress(r: Renderer) -> Callable[[str, dict], None]:
    """Progress notes on stderr as the engine reports events (silent with --json)."""

    def on_event(kind: str, d: dict) -> None:
        if kind == "step":
            again = " (again: re-checking)" if d["retry"] else ""
            r.note(f"[bold]step {d['index'] + 1}/{d['total']}[/] {ACTION_TEXT[d['action']]} {d['address']}{again}: "
                   f"{escape(d['why'])}")
        elif kind == "command":
            r.note(f"  {d['address']}: [dim]{escape(d['command'])}[/]")
        elif kind == "restarted":
            r.note(f"  {d['address']} back after {_s(d.get('downtime_s'))}, in sync after {_s(d.get('gate_s'))}")
        elif kind == "switched":
            r.note(f"  {d['address']} is master, {d['demoted']} its replica: write window {_s(d.get('window_s'))}, "
                   f"every node agrees after {_s(d.get('confirm_s'))}")
        elif kind == "note":
            r.note(f"  {escape(d['message'])}")

    return on_event


def stopping(r: Renderer) -> None:
    r.note("[yellow]Ctrl-C: stopping after the current step and its gates (Ctrl-C again to stop at once; "
           "--resume re-checks that step)[/]")


def show_report(r: Renderer, result: dict) -> None:
    rows, styles = [], []
    for n in result["nodes"]:
        if n["target"]:
            restarted = "yes" if n["status"] == "done" else n["status"]
        else:
            restarted = "-"
        same = n["role_after"] in (None, n["role_before"])
        rows.append((n["address"], n["node_id"][:8], n["shard"], n["role_before"], n["role_after"] or "?",
                     restarted, _s(n["downtime_s"]), _s(n["gate_s"]), _windows(n["windows_s"])))
        styles.append(None if same and restarted in ("yes", "-") else "red")
    r.table(f"rolling restart: {result['status']}", ("node", "id", "shard", "role before", "role after", "restarted",
                                                      "downtime", "back in sync", "write window (failover + back)"),
            rows, styles)
    r.line(f"{result['steps_done']}/{result['steps_total']} steps done; this run took {result['duration_s']:.1f}s "
           f"({result['elapsed_since_start_s']:.1f}s since the rolling restart began)")
    for line in (result.get("final") or {}).get("warnings", []):
        r.line(f"[yellow]warning:[/] {escape(line)}")
    if result["status"] != "ok":
        r.error(result["error"])
        _serving(r, result)
        r.line(f"[bold]what to do:[/] {escape(result['advice'] or '')}")


def _serving(r: Renderer, result: dict) -> None:
    """Who serves each shard, as read from every reachable node when the run stopped (never from the plan)."""
    for shard, summary in result["serving_detail"].items():
        r.line(f"[bold]now:[/] shard {shard} {escape(summary)}")


def show_roles_report(r: Renderer, result: dict) -> None:
    rows = [(x["shard"], x["master"], x["from"], _s(x["window_s"])) for x in result["switched"]]
    r.table(f"restore roles: {result['status']}", ("shard", "master again", "was served by", "write window"), rows)
    _serving(r, result)
    if result["status"] != "ok":
        r.error(result["error"])
        r.line(f"[bold]what to do:[/] {escape(result['advice'] or '')}")


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _windows(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sum(values):.2f}s" + (f" ({' + '.join(f'{v:.2f}' for v in values)})" if len(values) > 1 else "")
