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
# The same cluster off-site: an S3 server (s3s-fs, built once with cargo), age-encrypted and signed.
S3S=$(scripts/build-s3s-fs.sh)
export CLUSTERBAK_S3S_FS=$S3S
.venv/bin/python -m clusterbak.lab.s3server stop "$CLUSTERBAK_LAB_DIR/s3" >/dev/null 2>&1 || true
eval "$(.venv/bin/python -m clusterbak.lab.s3server start "$CLUSTERBAK_LAB_DIR/s3" --bucket demo)"
trap '.venv/bin/python -m clusterbak.lab.s3server stop "$CLUSTERBAK_LAB_DIR/s3"' EXIT
KEYS=$CLUSTERBAK_LAB_DIR/keys-$(date +%s)
.venv/bin/clusterbak keys generate --out "$KEYS" >/dev/null
RECIPIENT=$(grep -o 'age1[a-z0-9]*' "$KEYS/age-identity.txt")
cb backup --seed "$SEED" --inventory "$INV" --dest s3://demo/lab --s3-path-style --encrypt-to "$RECIPIENT" \
  --sign-key "$KEYS/signing-key.pem"
S3ID=$(.venv/bin/clusterbak list --dest s3://demo/lab --json | .venv/bin/python -c 'import json,sys; print([s["backup_id"] for s in json.load(sys.stdin)["data"]["sets"] if s["status"] == "complete"][-1])')
cb verify "$S3ID" --dest s3://demo/lab --verify-key "$KEYS/verify-key.pem" --identity "$KEYS/age-identity.txt"
echo "The lab keeps running: stop it with  .venv/bin/clusterbak lab down --dir $CLUSTERBAK_LAB_DIR" >&2
