#!/usr/bin/env bash
# The test command: installs what it needs, then runs the whole suite against real
# redis-server / sshd processes it starts (and stops) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
