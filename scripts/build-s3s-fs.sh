#!/usr/bin/env bash
# Build (once) and cache s3s-fs 0.14.1, the S3-protocol server the tests, the demo and the benchmarks use.
# Prints the binary's path on stdout; how long it took on stderr. 0.14.1 builds with this machine's rustc
# (0.17 needs a newer one). Cache: ~/.cache/clusterbak/s3s-fs (override with CLUSTERBAK_S3S_FS_ROOT).
set -euo pipefail
VERSION=0.14.1
export PATH="$HOME/.cargo/bin:$PATH"  # rustup installs there
ROOT=${CLUSTERBAK_S3S_FS_ROOT:-$HOME/.cache/clusterbak/s3s-fs}
BIN=$ROOT/bin/s3s-fs
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "s3s-fs: cached $BIN" >&2
  echo "$BIN"
  exit 0
fi
command -v cargo >/dev/null || { echo "s3s-fs: cargo is not installed (apt-get install cargo, or rustup)" >&2; exit 1; }
t0=$(date +%s)
echo "s3s-fs: building $VERSION with cargo (about 2-3 minutes, once)" >&2
cargo install "s3s-fs@$VERSION" --locked --features binary --root "$ROOT" --quiet >&2
echo "s3s-fs: built $BIN in $(( $(date +%s) - t0 ))s" >&2
echo "$BIN"
