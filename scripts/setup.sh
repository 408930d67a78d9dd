#!/usr/bin/env bash
# Shared by demo.sh and test.sh: install the Debian packages and a venv with clusterbak in it.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v zstd >/dev/null || need+=(zstd)
command -v openssl >/dev/null || need+=(openssl)  # the TLS lab's certificates
command -v age >/dev/null || need+=(age)  # the stock age CLI: encrypted sets must decrypt with it (tests)
command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] || need+=(cargo)  # builds s3s-fs (build-s3s-fs.sh)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing ${need[*]} (apt, from this machine's configured mirror)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test,lint]'  # lint: ruff and mypy, run by test.sh
.venv/bin/python -m pip install -q 'moto[server]'  # moto_server: the S3 Object Lock tests (s3s-fs lacks Object Lock)
