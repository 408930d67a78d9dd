#!/usr/bin/env bash
# The test command: installs what it needs, then runs the whole suite against real
# redis-server / sshd processes it starts (and stops) on 127.0.0.1, and a real Docker Engine.
#
# Docker: the engine is checked first. None reachable fails the run, loudly, unless CLUSTERBAK_SKIP_DOCKER=1
# is set on purpose (the Docker tests are then skipped, and say so). The local Redis image is built or reused
# (scripts/build-test-image.sh), and so are the fleet images of every server version (scripts/build-images.sh);
# whatever the tests made in Docker is removed at the end, even after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

loud() { printf '\n%s\n%s\n%s\n\n' "==========================================================================" "$*" \
  "==========================================================================" >&2; }

# The static checks first (seconds, and they fail the run): ruff, then mypy (strict on model/ and plan/; pyproject.toml).
failed=()
.venv/bin/ruff check clusterbak tests benchmarks scripts || failed+=(ruff)
.venv/bin/mypy || failed+=(mypy)
if [ ${#failed[@]} -gt 0 ]; then
  loud "STATIC CHECKS FAILED: ${failed[*]} (see above); pytest was not run"
  exit 1
fi
echo "static checks: ruff and mypy clean" >&2

# The S3-protocol server of the object-storage tests (tests/integration/test_s3*.py): built once, then cached.
t0=$(date +%s)
CLUSTERBAK_S3S_FS=$(scripts/build-s3s-fs.sh)
export CLUSTERBAK_S3S_FS
echo "s3s-fs: $CLUSTERBAK_S3S_FS ready in $(( $(date +%s) - t0 ))s" >&2

export CLUSTERBAK_TEST_RUN=${CLUSTERBAK_TEST_RUN:-ci$(date +%s)$$}
if [ "${CLUSTERBAK_SKIP_DOCKER:-0}" = 1 ]; then
  loud "CLUSTERBAK_SKIP_DOCKER=1: the Docker tests are SKIPPED deliberately (nothing runs on a Docker Engine)"
elif ! why=$(.venv/bin/python -c 'import docker; docker.from_env(timeout=10).ping()' 2>&1); then
  loud "NO DOCKER ENGINE: the Docker end-to-end tests cannot run: $(printf '%s' "$why" | tail -n 1)
Start dockerd (or set DOCKER_HOST). To run the suite without them on purpose: CLUSTERBAK_SKIP_DOCKER=1 $0"
  exit 1
else
  t0=$(date +%s)
  CLUSTERBAK_TEST_IMAGE=$(scripts/build-test-image.sh)
  export CLUSTERBAK_TEST_IMAGE
  echo "docker: test image $CLUSTERBAK_TEST_IMAGE ready in $(( $(date +%s) - t0 ))s, run label org.clusterbak.test-run=$CLUSTERBAK_TEST_RUN" >&2
  # the fleet images, one per server version (debootstrap + docker import, cached under ~/.cache/clusterbak;
  # ~2 min cold on 2 cores, under a second warm): the version matrix runs on them
  t0=$(date +%s)
  fleet=$(scripts/build-images.sh)
  CLUSTERBAK_FLEET_IMAGES=$(printf '%s\n' "$fleet" | awk '{printf "%s%s=%s", (NR > 1 ? "," : ""), $1, $2}')
  export CLUSTERBAK_FLEET_IMAGES
  echo "docker: fleet images ready in $(( $(date +%s) - t0 ))s: $CLUSTERBAK_FLEET_IMAGES" >&2
  cleanup() {
    .venv/bin/python -m clusterbak.lab.docker_lab purge "org.clusterbak.test-run=$CLUSTERBAK_TEST_RUN" || true
    .venv/bin/python -m clusterbak.lab.docker_lab purge \
      "com.docker.compose.project=clusterbak-test-$CLUSTERBAK_TEST_RUN-compose" || true
  }
  trap cleanup EXIT
fi

.venv/bin/python -m pytest -q "$@"
