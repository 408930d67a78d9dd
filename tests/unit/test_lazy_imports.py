"""Start-up cost: the CLI imports heavy libraries only for the commands that use them (issue 14)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_loads_without_boto3_prometheus_paramiko_or_docker():
    probe = ("import sys, clusterbak.cli.app, clusterbak.engine.backup; clusterbak.cli.app.app; "
             "print(sorted(m for m in ('boto3', 'botocore', 'prometheus_client', 'paramiko', 'docker') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
