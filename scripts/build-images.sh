#!/usr/bin/env bash
# Build (or reuse) the fleet images: one Debian root filesystem per suite, made with `debootstrap
# --variant=minbase` from the Debian mirror this machine's apt is configured with, holding the suite's
# redis-server and/or valkey-server plus openssh-server, then `docker import`ed. No container registry.
#
# One root filesystem per SUITE (not per server version): bookworm holds redis 7.0.15 and valkey 8.0.1 (from
# bookworm-backports), trixie holds redis 8.0.2 and valkey 8.1.1, bullseye holds redis 6.0.16. That is three
# debootstraps instead of five; each server version is then a tag on its suite's image:
#   clusterbak-fleet:redis-6.0-<hash>  clusterbak-fleet:redis-7.0-<hash>  clusterbak-fleet:valkey-8.0-<hash>
#   clusterbak-fleet:redis-8.0-<hash>  clusterbak-fleet:valkey-8.1-<hash>
# <hash> is a hash of the suite's recipe (suite, packages, mirror, the rootfs steps), so an unchanged recipe reuses
# the image and a changed one builds anew. The rootfs tarball is cached beside it under
# ${CLUSTERBAK_IMAGE_CACHE:-~/.cache/clusterbak}/rootfs-<suite>-<hash>.tar, so a lost image is re-imported
# without a debootstrap. The suites build in parallel (CLUSTERBAK_IMAGE_JOBS, default 3).
#
# Usage: scripts/build-images.sh [VERSION...]   (default: all five; VERSION as above, e.g. redis-7.0)
# Prints "VERSION IMAGE" lines on stdout, one per version asked for; progress and timings on stderr.
# Env: CLUSTERBAK_DEBIAN_MIRROR overrides the mirror read from /etc/apt/sources.list(.d).
set -euo pipefail

REPO=clusterbak-fleet
CACHE=${CLUSTERBAK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterbak}
JOBS=${CLUSTERBAK_IMAGE_JOBS:-3}
SELF=$(readlink -f "$0")
log() { echo "build-images: $*" >&2; }

ALL_VERSIONS=(redis-6.0 redis-7.0 valkey-8.0 redis-8.0 valkey-8.1)
suite_of() {
  case "$1" in
    redis-6.0) echo bullseye ;;
    redis-7.0|valkey-8.0) echo bookworm ;;
    redis-8.0|valkey-8.1) echo trixie ;;
    *) log "unknown version $1 (known: ${ALL_VERSIONS[*]})"; exit 2 ;;
  esac
}
# packages debootstrap installs from the suite itself; bookworm's valkey comes from backports afterwards
packages_of() {
  case "$1" in
    bullseye) echo "openssh-server,redis-server,redis-tools" ;;
    bookworm) echo "openssh-server,redis-server,redis-tools" ;;
    trixie) echo "openssh-server,redis-server,redis-tools,valkey-server,valkey-tools" ;;
  esac
}
backports_of() {
  case "$1" in
    bookworm) echo "valkey-server valkey-tools" ;;
    *) echo "" ;;
  esac
}

mirror() {
  if [ -n "${CLUSTERBAK_DEBIAN_MIRROR:-}" ]; then echo "$CLUSTERBAK_DEBIAN_MIRROR"; return; fi
  local uri
  # deb822 .sources: the first URIs of a stanza whose Suites are not a -security suite
  uri=$(awk 'BEGIN{RS=""; FS="\n"} {u=""; s=""; for(i=1;i<=NF;i++){ if($i ~ /^URIs:/){split($i,a," "); u=a[2]} if($i ~ /^Suites:/){s=$i} }
         if(u != "" && s !~ /-security/ && u ~ /debian\/?$/){print u; exit}}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $3 !~ /-security/ {for(i=2;i<=NF;i++) if($i !~ /^\[/){print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt/sources.list(.d); set CLUSTERBAK_DEBIAN_MIRROR"; exit 2; }
  echo "${uri%/}"
}

command -v docker >/dev/null || { log "the docker CLI is not installed"; exit 2; }
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || { log "no Docker Engine answers (docker version failed)"; exit 2; }
if ! command -v debootstrap >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing debootstrap from this machine's apt sources"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
fi
[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root (run as root or with sudo)"; exit 2; }

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=("${ALL_VERSIONS[@]}")
MIRROR=$(mirror)
mkdir -p "$CACHE"

recipe_hash() {  # suite -> 12 hex digits
  # the recipe: the suite, its packages, the mirror and the steps that shape the root filesystem (not the rest
  # of this script, so editing its logging or parallelism reuses the images)
  { printf '%s\n' "$1" "$(packages_of "$1")" "$(backports_of "$1")" "$MIRROR"; declare -f finish_rootfs; } \
    | sha256sum | cut -c1-12
}

# The steps inside the new root filesystem after debootstrap: backports packages, no baked host keys (each
# container makes its own at start), no daemons started by package scripts, apt caches dropped.
finish_rootfs() {  # suite dir
  local suite=$1 dir=$2 extra
  extra=$(backports_of "$suite")
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"; chmod 755 "$dir/usr/sbin/policy-rc.d"
  if [ -n "$extra" ]; then
    echo "deb $MIRROR $suite-backports main" >"$dir/etc/apt/sources.list.d/backports.list"
    chroot "$dir" apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -qq --no-install-recommends -t "$suite-backports" $extra >/dev/null
    rm -f "$dir/etc/apt/sources.list.d/backports.list"
  fi
  rm -f "$dir"/etc/ssh/ssh_host_* "$dir/usr/sbin/policy-rc.d"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
  mkdir -p "$dir/run/sshd" "$dir/data"
  chroot "$dir" chown redis:redis /data
  # where the servers are, whatever the suite calls them
  for bin in redis-server valkey-server; do
    [ -x "$dir/usr/bin/$bin" ] && echo "$bin" >>"$dir/etc/clusterbak-servers"
  done
  true
}

build_suite() {  # suite -> "suite image-id-or-tag"; all output to its log
  local suite=$1 hash tag tarball t0 dir
  hash=$(recipe_hash "$suite")
  tag="$REPO:$suite-$hash"
  tarball="$CACHE/rootfs-$suite-$hash.tar"
  t0=$(date +%s)
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$suite: reusing $tag"
    return 0
  fi
  if [ ! -s "$tarball" ]; then
    dir=$(mktemp -d "$CACHE/rootfs-$suite-XXXXXX")
    log "$suite: debootstrap --variant=minbase ($(packages_of "$suite")) from the configured mirror"
    if ! debootstrap --variant=minbase --include="$(packages_of "$suite")" "$suite" "$dir" "$MIRROR" \
         >"$dir.log" 2>&1; then
      log "$suite: debootstrap FAILED; last lines of $dir.log:"; tail -n 15 "$dir.log" >&2; rm -rf "$dir"; return 1
    fi
    finish_rootfs "$suite" "$dir" >>"$dir.log" 2>&1 || { log "$suite: finishing the rootfs FAILED (see $dir.log)"; tail -n 15 "$dir.log" >&2; rm -rf "$dir"; return 1; }
    tar --numeric-owner -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$dir" "$dir.log"
    log "$suite: root filesystem $(du -h "$tarball" | cut -f1) in $(( $(date +%s) - t0 ))s"
  fi
  docker import --change 'WORKDIR /data' --change "LABEL org.clusterbak.recipe=$hash" \
    --change "LABEL org.clusterbak.suite=$suite" "$tarball" "$tag" >/dev/null
  for old in $(docker image ls "$REPO" --format '{{.Repository}}:{{.Tag}}' | grep "^$REPO:$suite-" | grep -vxF "$tag" || true); do
    docker rmi "$old" >/dev/null 2>&1 && log "removed the outdated $old" || true
  done
  for old in $(ls "$CACHE"/rootfs-"$suite"-*.tar 2>/dev/null | grep -vxF "$tarball" || true); do rm -f "$old"; done
  log "$suite: $tag ready in $(( $(date +%s) - t0 ))s"
}

T0=$(date +%s)
suites=()
for v in "${versions[@]}"; do
  s=$(suite_of "$v")
  [[ " ${suites[*]-} " == *" $s "* ]] || suites+=("$s")
done
log "mirror from apt sources; suites ${suites[*]} (jobs $JOBS)"
pids=(); failed=0
for s in "${suites[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  build_suite "$s" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ $failed -eq 0 ] || { log "some suite failed to build"; exit 1; }

for v in "${versions[@]}"; do
  s=$(suite_of "$v"); hash=$(recipe_hash "$s")
  vtag="$REPO:$v-$hash"
  docker image inspect "$vtag" >/dev/null 2>&1 || docker tag "$REPO:$s-$hash" "$vtag"
  for old in $(docker image ls "$REPO" --format '{{.Repository}}:{{.Tag}}' | grep "^$REPO:$v-" | grep -vxF "$vtag" || true); do
    docker rmi "$old" >/dev/null 2>&1 || true  # an outdated tag of this version
  done
  echo "$v $vtag"
done
log "all done in $(( $(date +%s) - T0 ))s"
