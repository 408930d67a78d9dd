"""Prometheus textfile metrics for node_exporter's textfile collector, written with prometheus_client.

One file per job (backup, verify, drill, prune, rolling-restart). Every file has the run's timestamp, success,
duration and a failure counter that carries over from the previous file, plus the last success timestamp kept
across failed runs (so `time() - clusterbak_last_success_timestamp_seconds` alerts on staleness).
"""

from __future__ import annotations

from pathlib import Path

from clusterbak.errors import UsageError

PREFIX = "clusterbak"


def check_metrics_path(path: str | None) -> None:
    """Before the job runs: the file's directory must exist (a typo must not cost a whole backup's metrics)."""
    if path is None:
        return
    parent = Path(path).absolute().parent
    if not parent.is_dir():
        raise UsageError(f"--metrics-file {path}: directory {parent} does not exist")


def _previous(path: Path, job: str) -> tuple[float, float | None]:
    """(failures so far, last success timestamp) from the file this job wrote last time."""
    from prometheus_client.parser import text_string_to_metric_families  # only when metrics are asked for

    failures, last_success = 0.0, None
    try:
        text = path.read_text()
    except OSError:
        return failures, last_success
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("job") != job:
                    continue
                if sample.name == f"{PREFIX}_failures_total":
                    failures = sample.value
                elif sample.name == f"{PREFIX}_last_success_timestamp_seconds":
                    last_success = sample.value
    except ValueError:  # a damaged file from elsewhere: start counting again
        pass
    return failures, last_success


def write_job_metrics(path: str, job: str, ok: bool, started: float, finished: float, data: dict | None) -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile  # only with --metrics-file

    target = Path(path).absolute()
    failures, last_success = _previous(target, job)
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        names = ["job", *labels]
        key = f"{PREFIX}_{name}"
        metric = gauges.get(key) or Gauge(key, doc, names, registry=reg)
        gauges[key] = metric
        metric.labels(job, *labels.values()).set(value)

    gauges: dict[str, Gauge] = {}
    gauge("last_run_timestamp_seconds", "When the last run of this job ended.", finished)
    gauge("last_run_success", "1 if the last run of this job succeeded, else 0.", 1 if ok else 0)
    gauge("last_run_duration_seconds", "Wall time of the last run of this job.", finished - started)
    if ok:
        last_success = finished
    if last_success is not None:
        gauge("last_success_timestamp_seconds", "When this job last succeeded.", last_success)
    counter = Counter(f"{PREFIX}_failures", "Failed runs of this job (carried over from the previous file).",
                      ["job"], registry=reg)
    counter.labels(job).inc(failures + (0 if ok else 1))
    if ok and data:
        for name, doc, value, labels in DETAILS.get(job, lambda d: [])(data):
            if value is not None:
                gauge(name, doc, value, **labels)
    write_to_textfile(str(target), reg)


def _backup(d: dict) -> list:
    m = d.get("manifest") or {}
    if not m:
        return []
    out = [("backup_bytes", "Bytes of the last backup set.", m["totals"]["raw_bytes"], {"kind": "raw"}),
           ("backup_bytes", "Bytes of the last backup set.", m["totals"]["stored_bytes"], {"kind": "stored"}),
           ("backup_keys", "Keys in the last backup set.", m["totals"]["keys"], {}),
           ("backup_shards", "Shards in the last backup set.", len(m["shards"]), {}),
           ("backup_created_timestamp_seconds", "When the last backup set was taken.", m["created_at_unix"], {})]
    for s in m["shards"]:
        labels = {"shard": str(s["index"]), "source": s["source"]["address"]}
        files = s["aof"]["files"] if "aof" in s else [s["file"]]
        raw = sum(f["raw_size"] for f in files)
        secs = s.get("transfer_seconds") or sum(f.get("transfer_seconds", 0) for f in files)
        out.append(("backup_shard_save_seconds", "BGSAVE (or AOF rewrite) seconds per shard.",
                    s["save"]["duration_s"], labels))
        out.append(("backup_shard_transfer_bytes_per_second", "Transfer rate per shard.",
                    raw / secs if secs else None, labels))
    return out


def _drill(d: dict) -> list:
    return [("drill_rto_seconds", "Drill: seconds from start to a proven cluster.", d.get("rto_seconds"), {}),
            ("drill_rpo_seconds", "Drill: age of the backup's snapshot when the drill ran.", d.get("rpo_seconds"), {}),
            ("drill_keys", "Drill: keys in the restored set.", d.get("keys"), {})]


def _verify(d: dict) -> list:
    files = d.get("files") or []
    return [("verify_files", "Files checked by the last verify.", len(files), {}),
            ("verify_bad_files", "Files that failed the last verify.", sum(1 for f in files if not f["ok"]), {})]


def _prune(d: dict) -> list:
    decisions = d.get("decisions") or []
    return [("prune_deleted_sets", "Sets deleted by the last prune.", len(d.get("deleted") or []), {}),
            ("prune_kept_sets", "Sets kept by the last prune.", sum(1 for x in decisions if x["action"] == "keep"), {})]


def _rolling(d: dict) -> list:
    result = d.get("result") or {}
    return [("rolling_steps_done", "Steps done by the last rolling restart.", result.get("steps_done"), {}),
            ("rolling_nodes", "Nodes restarted by the last rolling restart.",
             len((d.get("plan") or {}).get("targets") or []), {})]


DETAILS = {"backup": _backup, "drill": _drill, "verify": _verify, "prune": _prune, "rolling-restart": _rolling}
