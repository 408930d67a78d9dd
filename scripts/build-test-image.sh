#!/usr/bin/env bash
# Build (or reuse) a small local Redis image for the Docker lab and tests, without any container registry.
#
# The root filesystem is made from this machine's own files: the installed redis-server / redis-cli binaries
# (Debian's redis-server and redis-tools packages), every shared library `ldd` lists for them, and a static
# busybox (Debian's busybox-static, fetched with `apt-get download` from the mirror this machine's apt is
# configured with) for /bin/sh and the few coreutils exec'd commands use. It is imported with `docker import`.
#
# The tag is a hash of the build context plus this script, so an unchanged recipe reuses the image and a
# changed one (a new redis package, a new library, an edited script) builds a new tag.
#
# Prints the image reference (clusterbak-test-redis:<hash>) as the only line on stdout.
# Env: CLUSTERBAK_IMAGE_CACHE (default ~/.cache/clusterbak) keeps the downloaded busybox-static .deb.
set -euo pipefail

REPO=clusterbak-test-redis
CACHE=${CLUSTERBAK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterbak}
SELF=$(readlink -f "$0")
log() { echo "build-test-image: $*" >&2; }

command -v docker >/dev/null || { log "the docker CLI is not installed"; exit 2; }
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || { log "no Docker Engine answers (docker version failed)"; exit 2; }

need=()
[ -x /usr/bin/redis-check-rdb ] || need+=(redis-server)
[ -x /usr/bin/redis-cli ] || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing ${need[*]} from this machine's apt sources"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$CACHE"
busybox_deb=$(ls "$CACHE"/busybox-static_*.deb 2>/dev/null | sort | tail -n 1 || true)
if [ -z "$busybox_deb" ]; then
  log "downloading busybox-static with apt-get download (this machine's apt sources)"
  (cd "$CACHE" && { apt-get download -q busybox-static >/dev/null 2>&1 || { apt-get update -qq && apt-get download -q busybox-static >/dev/null; }; })
  busybox_deb=$(ls "$CACHE"/busybox-static_*.deb | sort | tail -n 1)
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx"/bin "$ctx"/usr/local/bin "$ctx"/data "$ctx"/tmp "$ctx"/etc "$ctx"/usr/local/etc/redis
chmod 1777 "$ctx"/tmp

# busybox and its applets as symlinks in /bin
dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -C "$ctx" ./bin/busybox
for applet in $("$ctx"/bin/busybox --list); do
  [ -e "$ctx/bin/$applet" ] || ln -s busybox "$ctx/bin/$applet"
done

# redis: Debian ships one binary (redis-check-rdb) that acts on its argv[0]; keep that layout
cp -L /usr/bin/redis-check-rdb "$ctx"/usr/local/bin/redis-server
cp -L /usr/bin/redis-cli "$ctx"/usr/local/bin/redis-cli
ln -s redis-server "$ctx"/usr/local/bin/redis-check-rdb
ln -s redis-server "$ctx"/usr/local/bin/redis-check-aof
for lib in $(ldd /usr/bin/redis-check-rdb /usr/bin/redis-cli | awk '$2 == "=>" && $3 ~ /^\//{print $3} $1 ~ /^\// && NF > 1 {print $1}' | sort -u); do
  mkdir -p "$ctx$(dirname "$lib")"
  cp -L "$lib" "$ctx$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\nredis:x:999:999:redis:/data:/bin/sh\n' >"$ctx"/etc/passwd
printf 'root:x:0:\nredis:x:999:\n' >"$ctx"/etc/group
printf 'bind 0.0.0.0\ndir /data\n' >"$ctx"/usr/local/etc/redis/redis.conf

# the tag: a hash over every path, mode, link target and file content, and this script
hash=$( (cd "$ctx" && find . -printf '%p %m %l\n' | LC_ALL=C sort && \
         find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; sha256sum <"$SELF") | sha256sum | cut -c1-12)
image="$REPO:$hash"

if docker image inspect "$image" >/dev/null 2>&1; then
  log "reusing $image"
else
  log "importing $image ($(du -sh "$ctx" | cut -f1) root filesystem)"
  tar --numeric-owner --owner=0 --group=0 -C "$ctx" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/bin' \
    --change 'WORKDIR /data' \
    --change 'VOLUME /data' \
    --change 'EXPOSE 6379' \
    --change 'CMD ["redis-server", "/usr/local/etc/redis/redis.conf"]' \
    --change "LABEL org.clusterbak.recipe=$hash" \
    - "$image" >/dev/null
  for old in $(docker image ls "$REPO" --format '{{.Repository}}:{{.Tag}}' | grep -vxF "$image" || true); do
    docker rmi "$old" >/dev/null 2>&1 && log "removed the outdated $old" || true  # still used by a container: kept
  done
fi
echo "$image"
