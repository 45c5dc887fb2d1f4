# Shared shell functions of ./scripts/test, ./scripts/run, bench/run and
# scripts/dev-services. Source it; it defines functions and sets nothing global
# except WS_* variables.
#
# Private services live under a run directory ($WS_RUN): a redis-server on a free
# loopback port and a dockerd on a unix socket with its own data root, exec root
# and pid file, no bridge, no iptables. Nothing here touches an engine or a Redis
# that was running before.

WS_ROOT=${WS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
WS_BASE_IMAGE=${WS_BASE_IMAGE:-warmstart-worker:latest}

ws_say() { printf '[warmstart] %s\n' "$*" >&2; }
ws_die() { ws_say "error: $*"; exit 1; }

ws_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Packages the build, the services and the tests need (Debian 12).
WS_PACKAGES=(
  cmake ninja-build g++ pkg-config git
  libboost1.81-dev libhiredis-dev nlohmann-json3-dev catch2 libspdlog-dev libcli11-dev
  libtomlplusplus-dev prometheus-cpp-dev libsystemd-dev libcurl4-openssl-dev libssl-dev
  redis-server docker.io busybox-static curl procps
)

# Installs what is missing, with one `apt-get update` first.
ws_install_deps() {
  local missing=() p
  for p in "${WS_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  ws_say "installing: ${missing[*]}"
  # Installing docker.io or redis-server must not start system-wide services.
  local policy=/usr/sbin/policy-rc.d added_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | ws_as_root tee "$policy" >/dev/null
    ws_as_root chmod +x "$policy"
    added_policy=1
  fi
  local rc=0
  ws_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
  if [ $rc -eq 0 ]; then
    ws_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || rc=$?
  fi
  [ -n "$added_policy" ] && ws_as_root rm -f "$policy"
  [ $rc -eq 0 ] || ws_die "apt-get failed installing ${missing[*]}"
}

# The Debian packages to add to ws_install_deps for Node.js and npm (the BullMQ
# peer of bench/run): only those whose command is missing, so that one
# `apt-get update` covers everything. A node from elsewhere that ships its own
# npm is used as it is (Debian's npm package would try to replace it).
ws_node_packages_missing() {
  command -v node >/dev/null 2>&1 || echo nodejs
  command -v npm >/dev/null 2>&1 || echo npm
}

# Configures $1 (default build/). Extra args go to cmake.
ws_configure() {
  local dir=${1:-$WS_ROOT/build}; shift || true
  cmake -S "$WS_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null ||
    ws_die "cmake configure failed"
}

# Configures and builds into $1 (default build/). Extra args go to cmake.
ws_build() {
  local dir=${1:-$WS_ROOT/build}; shift || true
  ws_configure "$dir" "$@"
  cmake --build "$dir" -j "$(nproc)" || ws_die "build failed"
}

# Configures $1 and builds only the named targets: ws_build_targets build warmstart
ws_build_targets() {
  local dir=$1; shift
  ws_configure "$dir"
  cmake --build "$dir" -j "$(nproc)" --target "$@" || ws_die "build of $* failed"
}

# Creates the run directory (short path: unix socket paths are limited to 108 bytes).
ws_make_run_dir() {
  WS_RUN=${WARMSTART_RUN_DIR:-$(mktemp -d /tmp/warmstart-run.XXXXXX)}
  mkdir -p "$WS_RUN"
  export WS_RUN
}

# Starts redis-server on a free loopback port. Sets WS_REDIS_PORT, WS_REDIS_URL.
ws_start_redis() {
  mkdir -p "$WS_RUN/redis"
  local port tries
  for tries in $(seq 1 20); do
    port=$((20000 + RANDOM % 20000))
    redis-server --bind 127.0.0.1 --port "$port" --dir "$WS_RUN/redis" --daemonize yes \
      --pidfile "$WS_RUN/redis.pid" --logfile "$WS_RUN/redis.log" --save "" \
      --appendonly no --protected-mode yes >/dev/null 2>&1 || continue
    for _ in $(seq 1 50); do
      redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && {
        WS_REDIS_PORT=$port
        WS_REDIS_URL="redis://127.0.0.1:$port/0"
        export WS_REDIS_PORT WS_REDIS_URL
        ws_say "redis-server on 127.0.0.1:$port"
        return 0
      }
      [ -f "$WS_RUN/redis.pid" ] || sleep 0.05
      sleep 0.05
    done
    ws_stop_redis
  done
  ws_die "could not start redis-server (see $WS_RUN/redis.log)"
}

ws_stop_redis() {
  [ -f "$WS_RUN/redis.pid" ] || return 0
  local pid; pid=$(cat "$WS_RUN/redis.pid" 2>/dev/null)
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; }
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$WS_RUN/redis.pid"
}

# Paths of private engine N (1 = the default engine; 2, 3, ... = extra
# engines for fleet tests). Sets WS_E_SOCK, WS_E_DATA, WS_E_EXEC, WS_E_PID,
# WS_E_LOG, WS_E_CONF, WS_E_KEY, WS_E_NS. Engine 1 keeps the historical names.
ws_engine_paths() {
  local n=${1:-1} s=
  [ "$n" = 1 ] || s=$n
  WS_E_SOCK="$WS_RUN/docker$s.sock"
  WS_E_DATA="$WS_RUN/docker$s-data"
  WS_E_EXEC="$WS_RUN/docker$s-exec"
  WS_E_PID="$WS_RUN/dockerd$s.pid"
  WS_E_LOG="$WS_RUN/dockerd$s.log"
  WS_E_CONF="$WS_RUN/daemon$s.json"
  # Its own trust key: every dockerd otherwise reads /etc/docker/key.json and
  # two engines on one machine report the same engine ID (docker info).
  WS_E_KEY="$WS_RUN/docker$s-key.json"
  WS_E_NS="warmstart-$(basename "$WS_RUN")${s:+-e$s}"
}

# Starts private dockerd N (default 1). Sets WS_DOCKER_SOCKET and WS_DOCKER (a
# docker CLI command bound to it) for engine 1, WS_DOCKER_SOCKET_N and
# WS_DOCKER_N for engine N.
ws_start_dockerd() {
  local n=${1:-1} running=
  ws_engine_paths "$n"
  # Already up (a repeated start-engine): reuse it, never a second dockerd on its roots.
  curl -sf --unix-socket "$WS_E_SOCK" http://d/_ping >/dev/null 2>&1 && running=1
  mkdir -p "$WS_E_DATA" "$WS_E_EXEC"
  [ -f "$WS_E_CONF" ] || printf '{"deprecated-key-path": "%s"}\n' "$WS_E_KEY" >"$WS_E_CONF"
  # dockerd runs as root; the socket's group is the caller's so tests need no sudo.
  [ -n "$running" ] || ws_as_root dockerd --config-file "$WS_E_CONF" \
    --data-root "$WS_E_DATA" --exec-root "$WS_E_EXEC" \
    --pidfile "$WS_E_PID" -H "unix://$WS_E_SOCK" --group "$(id -g)" \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --containerd-namespace "$WS_E_NS" --containerd-plugins-namespace "$WS_E_NS-plugins" \
    >"$WS_E_LOG" 2>&1 &
  if [ "$n" = 1 ]; then
    WS_DOCKER_SOCKET="$WS_E_SOCK"
    WS_DOCKER="docker -H unix://$WS_E_SOCK"
    export WS_DOCKER_SOCKET WS_DOCKER
  else
    printf -v "WS_DOCKER_SOCKET_$n" '%s' "$WS_E_SOCK"
    printf -v "WS_DOCKER_$n" '%s' "docker -H unix://$WS_E_SOCK"
    export "WS_DOCKER_SOCKET_$n" "WS_DOCKER_$n"
  fi
  for _ in $(seq 1 200); do
    if [ -S "$WS_E_SOCK" ] && curl -sf --unix-socket "$WS_E_SOCK" http://d/_ping >/dev/null 2>&1; then
      ws_say "dockerd $n on unix://$WS_E_SOCK (engine $(ws_engine_id "$n"))"
      return 0
    fi
    sleep 0.1
  done
  tail -20 "$WS_E_LOG" >&2
  ws_die "dockerd $n did not come up"
}

# The engine ID private dockerd N reports (docker info .ID).
ws_engine_id() {
  ws_engine_paths "${1:-1}"
  docker -H "unix://$WS_E_SOCK" info --format '{{.ID}}' 2>/dev/null
}

# Stops private dockerd N (default 1), the containerd and shims it started,
# and unmounts what it left under its roots.
ws_stop_dockerd() {
  ws_engine_paths "${1:-1}"
  local pid
  pid=$(cat "$WS_E_PID" 2>/dev/null) || true
  if [ -n "$pid" ]; then
    ws_as_root kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    ws_as_root kill -9 "$pid" 2>/dev/null || true
  fi
  # The containerd and shims that this dockerd started carry its exec root in argv.
  local p
  for p in $(pgrep -f -- "$WS_E_EXEC/" 2>/dev/null); do ws_as_root kill -9 "$p" 2>/dev/null || true; done
  # Unmount anything left under its roots (overlay mounts, shm, netns).
  local m
  for m in $(awk -v a="$WS_E_DATA/" -v b="$WS_E_EXEC/" \
    'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/mounts | sort -r); do
    ws_as_root umount -l "$m" 2>/dev/null || true
  done
}

# The engines started in this run: 1 and every extra one that has an exec
# root (its dockerd may have died and taken its pid file along; its shims not).
ws_engines() {
  local d n
  echo 1
  for d in "$WS_RUN"/docker[0-9]*-exec; do
    [ -d "$d" ] || continue
    n=${d##*/docker}
    echo "${n%-exec}"
  done
}

# Imports the worker base image: a busybox-static root filesystem with an applet
# symlink for each command, through `docker import` (no registry needed).
# Engine N (default 1) with a second argument.
ws_import_base_image() {
  local image=${1:-$WS_BASE_IMAGE} rootfs docker_cmd
  ws_engine_paths "${2:-1}"
  docker_cmd="docker -H unix://$WS_E_SOCK"
  rootfs=$(mktemp -d "$WS_RUN/rootfs.XXXXXX")
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/work" "$rootfs/etc"
  cp /bin/busybox "$rootfs/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  chmod 1777 "$rootfs/tmp"
  echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
  echo "nobody:x:65534:65534:nobody:/nonexistent:/bin/false" >>"$rootfs/etc/passwd"
  if $docker_cmd image inspect "$image" >/dev/null 2>&1; then
    rm -rf "$rootfs"
    ws_say "base image $image already in engine ${2:-1}"
    return 0
  fi
  tar -C "$rootfs" -c . | $docker_cmd import \
    -c 'ENV PATH=/bin' -c 'WORKDIR /work' -c 'CMD ["/bin/sh"]' - "$image" >/dev/null ||
    ws_die "docker import of $image failed"
  rm -rf "$rootfs"
  ws_say "base image $image imported into engine ${2:-1}"
}

# Fails when containers or images other than the base image are left in
# engine N (default 1).
ws_check_engine_clean() {
  local n=${1:-1} containers base_id others docker_cmd
  ws_engine_paths "$n"
  docker_cmd="docker -H unix://$WS_E_SOCK"
  containers=$($docker_cmd ps -aq | wc -l)
  base_id=$($docker_cmd images -q --no-trunc "$WS_BASE_IMAGE" | head -1)
  others=$($docker_cmd images -aq --no-trunc | sort -u | grep -vc "^${base_id}\$")
  if [ "$containers" -ne 0 ] || [ "$others" -ne 0 ]; then
    ws_say "left behind in engine $n: $containers container(s), $others image(s) besides the base image:"
    $docker_cmd ps -a >&2
    $docker_cmd images -a >&2
    return 1
  fi
  ws_say "engine $n clean: no container and no image besides $WS_BASE_IMAGE left"
}

ws_stop_all() {
  [ -n "${WS_RUN:-}" ] && [ -d "$WS_RUN" ] || return 0
  ws_stop_redis
  local n
  for n in $(ws_engines | sort -rn); do ws_stop_dockerd "$n"; done
  # Anything still mounted under the run dir.
  local m
  for m in $(awk -v r="$WS_RUN/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
    ws_as_root umount -l "$m" 2>/dev/null || true
  done
  if [ -z "${WARMSTART_KEEP_RUN_DIR:-}" ]; then
    ws_as_root rm -rf "$WS_RUN" 2>/dev/null || ws_say "note: $WS_RUN not fully removed"
  fi
}
