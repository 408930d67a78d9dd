"""docs/scheduling.md's systemd units and crontab, run as written against a lab (no unit is installed).

Paths the page uses on a real host are mapped to this test's directories; the command lines themselves are taken
verbatim from the page.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

DOC = Path(__file__).resolve().parents[2] / "docs" / "scheduling.md"
EXAMPLE_SEED = "10.0.0.11:6379"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def unit_values(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


@pytest.fixture
def host(lab, tmp_path):
    """The page's paths, made real under tmp_path; PATH has `clusterbak` and a `logger` that records its calls."""
    root = tmp_path
    mapping = {"/usr/local/bin/clusterbak": str(root / "bin" / "clusterbak"),
               "/var/lib/node_exporter/textfile_collector": str(root / "metrics"),
               "/etc/clusterbak/": str(root / "etc") + "/", "/var/backups/redis": str(root / "dest"),
               EXAMPLE_SEED: lab.seed}
    for d in ("bin", "metrics", "etc"):
        (root / d).mkdir()
    (root / "bin" / "clusterbak").write_text(f"#!/bin/sh\nexec {sys.executable} -m clusterbak \"$@\"\n")
    (root / "bin" / "logger").write_text(f"#!/bin/sh\necho \"$@\" >> {root / 'logger.calls'}\n")
    for f in ("clusterbak", "logger"):
        (root / "bin" / f).chmod(0o755)
    shutil.copy(lab.inventory, root / "etc" / "inventory.toml")
    (toml,) = blocks("toml")
    (root / "etc" / "clusterbak.toml").write_text(toml)

    def sub(text: str) -> str:
        for old, new in mapping.items():
            text = text.replace(old, new)
        return text

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERBAK_") and k != "COLUMNS"}
    env["PATH"] = f"{root / 'bin'}:{env['PATH']}"
    return root, sub, env


def env_file(sub, env: dict) -> dict:
    (text,) = blocks("sh")
    out = dict(env)
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = sub(value)
    return out


@pytest.mark.slow
def test_systemd_units_and_crontab_run_as_written(lab, host):
    root, sub, env = host
    run_env = env_file(sub, env)
    services = [u for u in blocks("ini") if "[Service]" in u]
    timers = [u for u in blocks("ini") if "[Timer]" in u]
    assert len(services) == 2 and len(timers) == 2
    assert all(unit_values(t, "OnCalendar") for t in timers)
    for unit in services:
        assert unit_values(unit, "EnvironmentFile") == ["/etc/clusterbak/clusterbak.env"]
        assert unit_values(unit, "Type") == ["oneshot"]
        for line in unit_values(unit, "ExecStart"):  # systemd runs ExecStart without a shell: so do we
            done = subprocess.run(shlex.split(sub(line)), env=run_env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (line, done.stderr)
            assert done.stderr == "" and len(done.stdout.splitlines()) == 1, (line, done.stdout, done.stderr)

    (crontab,) = blocks("crontab")
    cron_env = dict(env)
    jobs = []
    for line in crontab.splitlines():
        if re.match(r"^[A-Z_]+=", line):
            key, value = line.split("=", 1)
            cron_env[key] = sub(value)
        elif line.strip():
            jobs.append(line.split(None, 5)[5])
    assert len(jobs) == 3
    for command in jobs:  # cron hands the command to sh
        done = subprocess.run(["sh", "-c", sub(command)], env=cron_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stderr == "", (command, done.stderr)
    assert not (root / "logger.calls").exists()  # the monitoring line found nothing to complain about

    sets = [p for p in (root / "dest").iterdir() if p.is_dir()]
    assert len(sets) == 2 and all((p / "verify.json").is_file() for p in sets)
    for job in ("backup", "verify", "prune", "drill"):
        text = (root / "metrics" / f"clusterbak_{job}.prom").read_text()
        success = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "clusterbak_last_run_success"]
        assert success == [1.0], job
