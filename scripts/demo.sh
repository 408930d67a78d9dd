#!/usr/bin/env bash
# The demo: a lab cluster on 127.0.0.1, data in it, then what clusterbak sees.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CLUSTERBAK_LAB_DIR=${CLUSTERBAK_LAB_DIR:-$PWD/.clusterbak-lab}
cb() { echo "\$ clusterbak $*" >&2; .venv/bin/clusterbak "$@"; }
.venv/bin/clusterbak lab down >/dev/null 2>&1 || true
cb lab up --base-port "${BASE_PORT:-7000}"
SEED=127.0.0.1:${BASE_PORT:-7000}
INV=$CLUSTERBAK_LAB_DIR/inventory.toml
cb lab load --keys 20000
cb topology --seed "$SEED"
cb check --seed "$SEED" --inventory "$INV"
rm -f "$CLUSTERBAK_LAB_DIR/inventory.rolling-restart.json"  # a fresh lab: no earlier run to resume
cb rolling-restart --seed "$SEED" --inventory "$INV" --dry-run
cb rolling-restart --seed "$SEED" --inventory "$INV" --yes
DEST=$CLUSTERBAK_LAB_DIR/backups
cb backup --seed "$SEED" --inventory "$INV" --dest "$DEST"
ID=$(.venv/bin/clusterbak list --dest "$DEST" --json | .venv/bin/python -c 'import json,sys; print([s["backup_id"] for s in json.load(sys.stdin)["data"]["sets"] if s["status"] == "complete"][-1])')
cb verify "$ID" --dest "$DEST"
cb drill "$ID" --dest "$DEST"
echo "The lab keeps running: stop it with  .venv/bin/clusterbak lab down --dir $CLUSTERBAK_LAB_DIR" >&2
