# shellcheck shell=bash
# Shell functions of deploy/build-image, deploy/smoke and deploy/check. Source it
# after scripts/lib/common.sh; it defines functions and WS_DEPLOY_* variables only.
#
# No registry is reachable, so the Debian 12 base images of deploy/Dockerfile are
# made here: a debootstrap'd bookworm minbase root (cached as a tarball, the same
# one ../shared/tools/fresh-machine.sh caches), the packages of each base
# installed into a copy of it with apt-get in a chroot (the Debian archive is the
# only source), slimmed, cached as a tarball keyed by its package list, and
# `docker import`ed. The image build itself then runs with no network at all.

WS_DEPLOY_DIR="$WS_ROOT/deploy"
WS_DEPLOY_IMAGE=${WS_DEPLOY_IMAGE:-warmstart-router:latest}
WS_DEPLOY_BUILD_BASE=warmstart-build-base:bookworm
WS_DEPLOY_RUNTIME_BASE=warmstart-runtime-base:bookworm
WS_DEPLOY_REDIS_IMAGE=warmstart-redis:bookworm
# Prepared roots are big (the build base is ~1 GB): not under /tmp, which may be tmpfs.
WS_DEPLOY_CACHE=${WARMSTART_DEPLOY_CACHE:-/var/cache/warmstart-deploy}
WS_DEPLOY_MINBASE=${FRESH_CACHE:-/tmp/fresh-cache/bookworm-minbase.tar}
WS_DEPLOY_UID=10001 # the image's `warmstart` user and group

# What the build stage compiles with (scripts/lib/common.sh WS_PACKAGES, less the services).
WS_DEPLOY_BUILD_PACKAGES=(
  cmake ninja-build g++ pkg-config binutils
  libboost1.81-dev libhiredis-dev nlohmann-json3-dev catch2 libspdlog-dev libcli11-dev
  libtomlplusplus-dev prometheus-cpp-dev libsystemd-dev libcurl4-openssl-dev libssl-dev
)
# What `ldd warmstart` needs (deploy/smoke checks that nothing is "not found"), plus
# curl for the HEALTHCHECK.
WS_DEPLOY_RUNTIME_PACKAGES=(
  libhiredis0.14 libcurl4 libspdlog1.10 libfmt9 libssl3 libsystemd0
  libprometheus-cpp-core1.0 libtomlplusplus3 curl
)
# Redis for the compose file's `redis` service (deploy/smoke only; a real
# deployment may use any Redis 7 image).
WS_DEPLOY_REDIS_PACKAGES=(redis-server)

# The Debian mirror the machine's own apt sources name (debootstrap's default otherwise).
ws_deploy_mirror() {
  local m=
  [ -f /etc/apt/sources.list.d/debian.sources ] &&
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -z "$m" ] && [ -f /etc/apt/sources.list ] &&
    m=$(awk '$1 == "deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list)
  printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# The cached minbase tarball (made once with debootstrap).
ws_deploy_minbase() {
  [ -f "$WS_DEPLOY_MINBASE" ] && return 0
  command -v debootstrap >/dev/null || ws_die "debootstrap is missing (ws_install_deps debootstrap)"
  local root
  root=$(mktemp -d /var/tmp/warmstart-minbase.XXXXXX)
  ws_say "debootstrap bookworm minbase from $(ws_deploy_mirror) (once; cached as $WS_DEPLOY_MINBASE)"
  ws_as_root debootstrap --variant=minbase bookworm "$root" "$(ws_deploy_mirror)" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    ws_as_root rm -rf "$root" "$root.log"
    ws_die "debootstrap failed"
  }
  mkdir -p "$(dirname "$WS_DEPLOY_MINBASE")"
  ws_as_root tar -C "$root" -cf "$WS_DEPLOY_MINBASE.tmp.$$" . && mv "$WS_DEPLOY_MINBASE.tmp.$$" "$WS_DEPLOY_MINBASE"
  ws_as_root rm -rf "$root" "$root.log"
}

# ws_deploy_root NAME PACKAGE... : prints the path of a cached tarball of the
# minbase root with PACKAGEs installed (no recommends) and docs, man pages,
# locales, apt lists and caches removed. The cache key is the package list.
ws_deploy_root() {
  local name=$1; shift
  local key out root
  key=$(printf '%s\n' "bookworm-v1" "$@" | sha256sum | cut -c1-12)
  out="$WS_DEPLOY_CACHE/$name-$key.tar"
  if [ -f "$out" ]; then
    printf '%s\n' "$out"
    return 0
  fi
  ws_deploy_minbase
  ws_as_root mkdir -p "$WS_DEPLOY_CACHE"
  root=$(mktemp -d /var/tmp/warmstart-root.XXXXXX)
  ws_as_root tar -C "$root" -xf "$WS_DEPLOY_MINBASE"
  ws_say "preparing $name root: apt-get install $* (cached as $out)"
  ws_as_root cp /etc/resolv.conf "$root/etc/resolv.conf"
  # No service starts inside the root; no documentation is unpacked.
  printf '#!/bin/sh\nexit 101\n' | ws_as_root tee "$root/usr/sbin/policy-rc.d" >/dev/null
  ws_as_root chmod +x "$root/usr/sbin/policy-rc.d"
  ws_as_root tee "$root/etc/dpkg/dpkg.cfg.d/warmstart-slim" >/dev/null <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  # A private mount namespace: /proc and /dev for the maintainer scripts, gone afterwards.
  if ! ws_as_root unshare -m --propagation private sh -c '
      R=$1; shift
      mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" || exit 1
      chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends \"\$@\" && apt-get clean" _ "$@"
    ' _ "$root" "$@" >"$root.log" 2>&1; then
    tail -30 "$root.log" >&2
    ws_as_root rm -rf "$root" "$root.log"
    ws_die "apt-get in the $name root failed"
  fi
  ws_as_root sh -c 'R=$1
    rm -f "$R/usr/sbin/policy-rc.d" "$R/etc/resolv.conf"
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/* "$R"/var/cache/debconf/*-old \
      "$R"/var/log/apt/* "$R"/var/log/dpkg.log "$R"/tmp/* "$R"/var/tmp/*
    find "$R/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* "$R"/usr/share/lintian/*
  ' _ "$root"
  ws_as_root tar -C "$root" --numeric-owner -cf "$out.tmp.$$" . && ws_as_root mv "$out.tmp.$$" "$out"
  ws_as_root rm -rf "$root" "$root.log"
  printf '%s\n' "$out"
}

# ws_deploy_import NAME IMAGE PACKAGE... : the prepared root as IMAGE on $WS_DOCKER
# (skipped when the engine has it already).
ws_deploy_import() {
  local name=$1 image=$2; shift 2
  $WS_DOCKER image inspect "$image" >/dev/null 2>&1 && return 0
  local tar
  tar=$(ws_deploy_root "$name" "$@") || exit 1
  $WS_DOCKER import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' \
    "$tar" "$image" >/dev/null || ws_die "docker import of $image failed"
  ws_say "base image $image imported ($(ws_deploy_image_size "$image"))"
}

ws_deploy_image_size() {
  local bytes
  bytes=$($WS_DOCKER image inspect -f '{{.Size}}' "$1") || return 1
  awk -v b="$bytes" 'BEGIN { printf "%.1f MB\n", b / 1000000 }'
}

# The build context: the files git knows of (tracked and untracked-but-not-ignored,
# as they are in the work tree), so build/ and run directories never go in.
ws_deploy_context_tar() {
  if git -C "$WS_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$WS_ROOT" && git ls-files -z --cached --others --exclude-standard |
      xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _ |
      tar --null -T - -cf -)
  else
    tar -C "$WS_ROOT" --exclude='./build*' --exclude=./.run --exclude=./.git -cf - .
  fi
}

# ws_deploy_build_image [TAG]: the two bases, then deploy/Dockerfile with the
# classic builder (no BuildKit, no network: `--network none`).
ws_deploy_build_image() {
  local tag=${1:-$WS_DEPLOY_IMAGE} revision=unknown
  ws_deploy_import build "$WS_DEPLOY_BUILD_BASE" "${WS_DEPLOY_BUILD_PACKAGES[@]}"
  ws_deploy_import runtime "$WS_DEPLOY_RUNTIME_BASE" "${WS_DEPLOY_RUNTIME_PACKAGES[@]}"
  revision=$(git -C "$WS_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
  ws_say "building $tag from deploy/Dockerfile (the router compiles inside; takes a while)"
  local log=${WS_RUN:-/tmp}/image-build.$$.log
  if ! ws_deploy_context_tar | DOCKER_BUILDKIT=0 $WS_DOCKER build --network none \
    --build-arg BUILD_BASE="$WS_DEPLOY_BUILD_BASE" --build-arg RUNTIME_BASE="$WS_DEPLOY_RUNTIME_BASE" \
    --build-arg REVISION="$revision" --build-arg JOBS="$(nproc)" \
    -f deploy/Dockerfile -t "$tag" - >"$log" 2>&1; then
    tail -40 "$log" >&2
    ws_die "docker build of $tag failed (log: $log)"
  fi
  rm -f "$log"
  ws_say "image $tag built: $(ws_deploy_image_size "$tag")"
}
