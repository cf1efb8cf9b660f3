#!/usr/bin/env bash
# A/B benchmark of fleetmq against Mosquitto (and rumqttd, when installed) on loopback.
#
# Each run starts a fresh broker, runs one scenario of fleetmq-bench against it and
# stops it, alternating brokers (A, B, C, A, B, C, ...) so that background load hits
# them alike. Results: one JSON line per run in $OUT/results.jsonl, medians and ratios in
# $OUT/summary.txt and a markdown table in $OUT/table.md. See BENCHMARKS.md.
#
# The persist scenario runs against its own list of broker variants: fleetmq with
# persistence and each sync mode (a fresh data directory per run, under $OUT/data),
# Mosquitto with persistence, and both without.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/run.sh [options]
  --reps N             runs per scenario and broker (default 3)
  --pin                broker on CPU 0, load generator on CPU 1 (taskset)
  --scenarios "LIST"   among: fanin-q0 fanin-q1 fanin-q2 fanout-q0 fanout-q1
                       latency idle idle-bare retained persist idle-tls
                       idle-tls12 tls-handshake-full tls-handshake-resumed
                       fanin-tls-q1 storm (default: all but idle-tls12)
  --brokers "LIST"     among: fleetmq mosquitto rumqttd discard fleetmq-baseline
                       fleetmq-chacha20 fleetmq-client (default: fleetmq
                       mosquitto, and rumqttd when installed); rumqttd runs without
                       TLS, so TLS scenarios skip it; fleetmq-chacha20 and
                       fleetmq-client are fleetmq with cipher_preference =
                       "chacha20" or "client" on its TLS listener (the generator's
                       client lists AES-256-GCM first: ChaCha20-Poly1305 with
                       "chacha20", AES-256-GCM with the default and with "client")
  --baseline PATH      the fleetmq binary run as broker fleetmq-baseline, with the
                       same configuration: A/B of two builds, e.g.
                       --brokers "fleetmq fleetmq-baseline" --baseline /tmp/old/fleetmq
  --persist-brokers "LIST"
                       brokers of the persist scenario, among: fleetmq-always
                       fleetmq-batch fleetmq-never fleetmq mosquitto-persist
                       mosquitto discard, and fleetmq-baseline-batch (the
                       --baseline build with sync = "batch")
                       (default: all but discard and the baseline)
  --publishers N       persist scenario publishers (default 8)
  --window N           persist scenario unacknowledged messages per publisher
                       (default 1)
  --keep-data          keep the persist runs' data directories
  --duration S         seconds of load per throughput/latency run (default 5)
  --connections N      idle scenario connections (default 10000); from 20,000 on
                       they come from several 127.0.0.x source addresses
  --settle S           seconds the idle scenarios' connections stay idle before the
                       broker's memory is measured (default 5: fleetmq parks idle
                       connections after 0.1 to 0.2 s; the figure right after
                       connecting is reported too)
  --storm-connections N  storm scenario clients (default: --connections)
  --storm-rate N       fleetmq's max_connection_rate in the storm scenario
                       (default 5000/s; the other scenarios raise it out of the way)
  --topics N           retained scenario topics (default 100000)
  --out DIR            results directory (default /tmp/fleetmq-bench/DATE)
  --no-build           use the existing release binaries
Environment: FLEETMQ_ARGS replaces the arguments of every fleetmq variant
("-c GENERATED.toml"); MOSQUITTO (default /usr/sbin/mosquitto); CARGO_TARGET_DIR
(default ./target) is where the release binaries are built and taken from; RUMQTTD
(default: rumqttd on PATH or in ~/.cargo/bin, installed with `cargo install rumqttd`);
BENCH_PORT_BASE (default 18830): the brokers listen on the ports above it.
EOF
}

REPS=3
PIN=0
SCENARIOS="fanin-q0 fanin-q1 fanin-q2 fanout-q0 fanout-q1 latency idle idle-bare retained persist idle-tls tls-handshake-full tls-handshake-resumed fanin-tls-q1 storm"
BROKERS=""
PERSIST_BROKERS="fleetmq-batch fleetmq-never fleetmq-always mosquitto-persist fleetmq mosquitto"
PUBLISHERS=8
WINDOW=1
KEEP_DATA=0
DURATION=5
CONNECTIONS=10000
SETTLE=5
STORM_CONNECTIONS=""
STORM_RATE=5000
TOPICS=100000
OUT=""
BUILD=1
BASELINE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        --pin) PIN=1; shift ;;
        --scenarios) SCENARIOS="$2"; shift 2 ;;
        --brokers) BROKERS="$2"; shift 2 ;;
        --persist-brokers) PERSIST_BROKERS="$2"; shift 2 ;;
        --publishers) PUBLISHERS="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --keep-data) KEEP_DATA=1; shift ;;
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --settle) SETTLE="$2"; shift 2 ;;
        --storm-connections) STORM_CONNECTIONS="$2"; shift 2 ;;
        --storm-rate) STORM_RATE="$2"; shift 2 ;;
        --topics) TOPICS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --baseline) BASELINE="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$TARGET_DIR/release/fleetmq-bench"
FLEETMQ="$TARGET_DIR/release/fleetmq"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
RUMQTTD="${RUMQTTD:-$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")}"
if [ -z "$BROKERS" ]; then
    BROKERS="fleetmq mosquitto"
    [ -x "$RUMQTTD" ] && BROKERS="$BROKERS rumqttd"
fi
STORM_CONNECTIONS="${STORM_CONNECTIONS:-$CONNECTIONS}"
OUT="${OUT:-${TMPDIR:-/tmp}/fleetmq-bench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
CLK_TCK="$(getconf CLK_TCK)"
# Mosquitto's queue and inflight limits are set to fleetmq's defaults (src/limits.rs).
MAX_QUEUED=1000
MAX_INFLIGHT=32
P="${BENCH_PORT_BASE:-18830}"
declare -A PORT=([fleetmq]=$((P + 1)) [mosquitto]=$((P + 2)) [discard]=$((P + 3)) [rumqttd]=$((P + 4)))
declare -A TLS_PORT=([fleetmq]=$((P + 11)) [mosquitto]=$((P + 12)))
FLEETMQ_METRICS_PORT=$((P + 9))
# fleetmq's connection rate limit; the storm scenario sets its own.
CONNECTION_RATE=1000000000

# Idle connections need descriptors on both ends (raising the hard limit needs root).
MOST_CONNECTIONS=$((CONNECTIONS > STORM_CONNECTIONS ? CONNECTIONS : STORM_CONNECTIONS))
NEED_FDS=$((MOST_CONNECTIONS * 2 + 4096))
WANT_FDS=$((NEED_FDS > 65536 ? NEED_FDS : 65536))
ulimit -n "$WANT_FDS" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NEED_FDS" ]; then
    echo "warning: descriptor limit $(ulimit -n) is below the $NEED_FDS that $MOST_CONNECTIONS" \
        "connections need (raising it needs root); runs will stop short" >&2
fi
# One source address has about 28,000 ephemeral ports towards one broker port.
SOURCES=$((MOST_CONNECTIONS / 20000 + 1))

BROKER_CPU=()
BENCH_CPU=()
if [ "$PIN" = 1 ]; then
    BROKER_CPU=(taskset -c 0)
    BENCH_CPU=(taskset -c 1)
fi

if [ "$BUILD" = 1 ]; then
    cargo build --release --bin fleetmq --bin fleetmq-bench
fi

# A CA and a server certificate for localhost, for every broker's TLS listener.
"$FLEETMQ" gen-certs --out "$WORK/certs" >/dev/null
# Mosquitto drops its privileges before it reads them.
chmod a+r "$WORK"/certs/*
chmod a+rx "$WORK" "$WORK/certs"

# Whether this fleetmq build knows [storage] persistence and sync (older builds refuse
# unknown keys). Without them the persistent variants are skipped.
fleetmq_has_persistence() {
    cat >"$WORK/probe.toml" <<EOF
[storage]
persistence = false
sync = "batch"
EOF
    "$FLEETMQ" check-config -c "$WORK/probe.toml" >/dev/null 2>&1
}

# Whether this fleetmq build knows a TLS listener's cipher_preference.
fleetmq_has_cipher_preference() {
    cat >"$WORK/probe-tls.toml" <<EOF
[[listeners]]
type = "tls"
bind = "127.0.0.1:${TLS_PORT[fleetmq]}"
[listeners.tls]
cert = "$WORK/certs/server.pem"
key = "$WORK/certs/server.key"
cipher_preference = "chacha20"
EOF
    "$FLEETMQ" check-config -c "$WORK/probe-tls.toml" >/dev/null 2>&1
}

# fleetmq's defaults, except: its per-client publish and per-listener connection
# rate limits are raised out of the way (Mosquitto has neither by default), the
# connection limit leaves room for the idle scenario, metrics move to a port of
# their own, and logs stay quiet as Mosquitto's do. $1 is the sync mode of a
# persistent variant (with $2 its data directory), or empty for the in-memory store;
# $3 the TLS listener's cipher_preference, or empty for the default.
write_fleetmq_conf() {
    local sync="$1" data="${2:-}" cipher="${3:-}"
    cat >"$WORK/fleetmq.toml" <<EOF
[[listeners]]
type = "tcp"
bind = "127.0.0.1:${PORT[fleetmq]}"
allow_anonymous = true

[[listeners]]
type = "tls"
bind = "127.0.0.1:${TLS_PORT[fleetmq]}"
allow_anonymous = true

[listeners.tls]
cert = "$WORK/certs/server.pem"
key = "$WORK/certs/server.key"
${cipher:+cipher_preference = \"$cipher\"}

[limits]
max_queued_messages = $MAX_QUEUED
max_inflight_messages = $MAX_INFLIGHT
max_connections = $((MOST_CONNECTIONS + 1000))
max_connection_rate = $CONNECTION_RATE
max_publish_rate = 1000000000

[metrics]
bind = "127.0.0.1:$FLEETMQ_METRICS_PORT"

[log]
level = "warn"
EOF
    if [ -n "$sync" ]; then
        cat >>"$WORK/fleetmq.toml" <<EOF

[storage]
persistence = true
sync = "$sync"
data_dir = "$data"
EOF
    elif [ "$HAS_PERSISTENCE" = 1 ]; then
        printf '\n[storage]\npersistence = false\n' >>"$WORK/fleetmq.toml"
    fi
}

# $1: a directory for persistence (saved at the default autosave interval and on
# shutdown), or empty for none.
write_mosquitto_conf() {
    local data="$1"
    cat >"$WORK/mosquitto.conf" <<EOF
allow_anonymous true
max_queued_messages $MAX_QUEUED
max_inflight_messages $MAX_INFLIGHT
set_tcp_nodelay true
log_dest none
listener ${PORT[mosquitto]} 127.0.0.1
listener ${TLS_PORT[mosquitto]} 127.0.0.1
certfile $WORK/certs/server.pem
keyfile $WORK/certs/server.key
EOF
    if [ -n "$data" ]; then
        printf 'persistence true\npersistence_location %s/\n' "$data" >>"$WORK/mosquitto.conf"
    else
        echo "persistence false" >>"$WORK/mosquitto.conf"
    fi
}

# rumqttd 0.20 with one MQTT 3.1.1 listener, its connection limit above the idle
# scenario's, and no delay between accepted connections.
write_rumqttd_conf() {
    cat >"$WORK/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = $((MOST_CONNECTIONS + 1000))
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:${PORT[rumqttd]}"
next_connection_delay_ms = 0

[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 100
dynamic_filters = true
EOF
}

# Broker variant -> the port of its family (fleetmq-batch -> fleetmq).
port_of() {
    echo "${PORT[${1%%-*}]}"
}

# Whether a variant can run with this build; says why not.
available() {
    case "$1" in
        fleetmq-always|fleetmq-batch|fleetmq-never)
            if [ "$HAS_PERSISTENCE" != 1 ]; then
                echo "skipping $1: this fleetmq build has no [storage] persistence/sync" >&2
                return 1
            fi ;;
        fleetmq-chacha20|fleetmq-client)
            if [ "$HAS_CIPHER_PREFERENCE" != 1 ]; then
                echo "skipping $1: this fleetmq build has no cipher_preference" >&2
                return 1
            fi ;;
        fleetmq-baseline|fleetmq-baseline-batch)
            if [ ! -x "$BASELINE" ]; then
                echo "skipping $1: --baseline names no executable" >&2
                return 1
            fi ;;
        rumqttd)
            if [ ! -x "$RUMQTTD" ]; then
                echo "skipping $1: not installed (cargo install rumqttd)" >&2
                return 1
            fi ;;
        fleetmq|mosquitto|mosquitto-persist|discard) ;;
        *) echo "unknown broker $1" >&2; return 1 ;;
    esac
}

# $2: the fresh data directory of a persistent variant.
start_broker() {
    local name="$1" data="${2:-}" port
    port="$(port_of "$1")"
    # Something else on the port would be measured in place of the broker.
    if port_open "$port"; then
        echo "port $port is already in use; not starting $name" >&2
        return 1
    fi
    case "$name" in
        fleetmq|fleetmq-always|fleetmq-batch|fleetmq-never)
            local sync=""
            [ "$name" = fleetmq ] || sync="${name#fleetmq-}"
            write_fleetmq_conf "$sync" "$data"
            # shellcheck disable=SC2086
            "${BROKER_CPU[@]}" "$FLEETMQ" ${FLEETMQ_ARGS:--c $WORK/fleetmq.toml} \
                >>"$OUT/fleetmq.log" 2>&1 &
            ;;
        fleetmq-chacha20|fleetmq-client)
            write_fleetmq_conf "" "" "${name#fleetmq-}"
            # shellcheck disable=SC2086
            "${BROKER_CPU[@]}" "$FLEETMQ" ${FLEETMQ_ARGS:--c $WORK/fleetmq.toml} \
                >>"$OUT/$name.log" 2>&1 &
            ;;
        fleetmq-baseline|fleetmq-baseline-batch)
            local sync=""
            [ "$name" = fleetmq-baseline ] || sync="${name#fleetmq-baseline-}"
            write_fleetmq_conf "$sync" "$data"
            # shellcheck disable=SC2086
            "${BROKER_CPU[@]}" "$BASELINE" ${FLEETMQ_ARGS:--c $WORK/fleetmq.toml} \
                >>"$OUT/$name.log" 2>&1 &
            ;;
        mosquitto|mosquitto-persist)
            write_mosquitto_conf "$data"
            "${BROKER_CPU[@]}" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$OUT/mosquitto.log" 2>&1 &
            ;;
        rumqttd)
            write_rumqttd_conf
            "${BROKER_CPU[@]}" "$RUMQTTD" -c "$WORK/rumqttd.toml" >>"$OUT/rumqttd.log" 2>&1 &
            ;;
        discard)
            "${BROKER_CPU[@]}" "$BENCH" discard-server --bind "127.0.0.1:$port" \
                >>"$OUT/discard.log" 2>&1 &
            ;;
        *) echo "unknown broker $name" >&2; return 1 ;;
    esac
    BROKER_PID=$!
    for _ in $(seq 100); do
        if port_open "$port" && kill -0 "$BROKER_PID" 2>/dev/null; then
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "$name did not start listening on port $port (see $OUT/$name.log)" >&2
    stop_broker
    return 1
}

scenario_args() {
    case "$1" in
        fanin-q0|fanin-q1|fanin-q2) echo "fanin --qos ${1#fanin-q} --duration $DURATION" ;;
        fanout-q0|fanout-q1) echo "fanout --qos ${1#fanout-q} --duration $DURATION" ;;
        latency) echo "latency --duration $DURATION --warmup 1" ;;
        idle) echo "idle --connections $CONNECTIONS --keep-alive 60 --subscribe --sources $SOURCES --settle $SETTLE" ;;
        idle-bare) echo "idle --connections $CONNECTIONS --sources $SOURCES --settle $SETTLE" ;;
        idle-tls) echo "idle --connections $CONNECTIONS --keep-alive 60 --subscribe --sources $SOURCES --tls-ca $WORK/certs/ca.pem --settle $SETTLE" ;;
        idle-tls12) echo "idle --connections $CONNECTIONS --keep-alive 60 --subscribe --sources $SOURCES --tls-ca $WORK/certs/ca.pem --tls12 --settle $SETTLE" ;;
        tls-handshake-full) echo "tls-handshake --connections 2000 --tls-ca $WORK/certs/ca.pem" ;;
        tls-handshake-resumed) echo "tls-handshake --connections 2000 --resume --tls-ca $WORK/certs/ca.pem" ;;
        fanin-tls-q1) echo "fanin --qos 1 --duration $DURATION --tls-ca $WORK/certs/ca.pem" ;;
        storm) echo "storm --connections $STORM_CONNECTIONS --sources $SOURCES" ;;
        retained) echo "retained --topics $TOPICS" ;;
        persist) echo "persist --duration $DURATION --publishers $PUBLISHERS --window $WINDOW" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(nproc) CPUs, $(uname -sr)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "options: reps=$REPS pin=$PIN duration=${DURATION}s connections=$CONNECTIONS topics=$TOPICS publishers=$PUBLISHERS window=$WINDOW"
    echo "mosquitto: $("$MOSQUITTO" -h 2>/dev/null | head -1)"
    echo "rumqttd: $([ -x "$RUMQTTD" ] && "$RUMQTTD" --version 2>/dev/null || echo "not installed")"
    echo "load before: $(uptime)"
} >"$OUT/meta.txt"

HAS_PERSISTENCE=0
if fleetmq_has_persistence; then
    HAS_PERSISTENCE=1
fi
echo "fleetmq [storage] persistence/sync: $([ "$HAS_PERSISTENCE" = 1 ] && echo yes || echo no)" >>"$OUT/meta.txt"
HAS_CIPHER_PREFERENCE=0
if fleetmq_has_cipher_preference; then
    HAS_CIPHER_PREFERENCE=1
fi
cat "$OUT/meta.txt"

FAILED=0
for scenario in $SCENARIOS; do
    read -r -a ARGS <<<"$(scenario_args "$scenario")"
    # Generous bound on one run: its own limits plus the connect and drain phases.
    LIMIT=$((DURATION * 3 + 120))
    RUN_BROKERS="$BROKERS"
    [ "$scenario" = persist ] && RUN_BROKERS="$PERSIST_BROKERS"
    SELECTED=""
    for broker in $RUN_BROKERS; do
        if available "$broker"; then
            if [[ "$scenario" == *tls* && -z "${TLS_PORT[${broker%%-*}]:-}" ]]; then
                echo "skipping $broker in $scenario: no TLS listener configured" >&2
                continue
            fi
            SELECTED="$SELECTED $broker"
        fi
    done
    CONNECTION_RATE=1000000000
    [ "$scenario" = storm ] && CONNECTION_RATE="$STORM_RATE"
    # Storms and 100,000 idle connections take longer than the throughput runs.
    case "$scenario" in
        idle*|storm) LIMIT=$((LIMIT + MOST_CONNECTIONS / 200)) ;;
    esac
    for rep in $(seq "$REPS"); do
        for broker in $SELECTED; do
            DATA=""
            case "$broker" in
                fleetmq-chacha20|fleetmq-client) ;;
                fleetmq-*|mosquitto-persist)
                    DATA="$OUT/data/$scenario-$broker-$rep"
                    rm -rf "$DATA"
                    mkdir -p "$DATA"
                    # Mosquitto started as root saves as the mosquitto user.
                    chmod a+rwx "$DATA" ;;
            esac
            if ! start_broker "$broker" "$DATA"; then
                FAILED=$((FAILED + 1))
                continue
            fi
            ADDR_PORT="$(port_of "$broker")"
            [[ "$scenario" == *tls* ]] && ADDR_PORT="${TLS_PORT[${broker%%-*}]}"
            if ! timeout "$LIMIT" "${BENCH_CPU[@]}" "$BENCH" "${ARGS[@]}" \
                --addr "127.0.0.1:$ADDR_PORT" --broker-pid "$BROKER_PID" \
                --label "$broker" --clk-tck "$CLK_TCK" \
                >>"$OUT/results.jsonl" 2>"$WORK/stderr"; then
                echo "run failed: $scenario #$rep on $broker" >&2
                FAILED=$((FAILED + 1))
            fi
            sed "s/^/[$rep] /" "$WORK/stderr"
            cat "$WORK/stderr" >>"$OUT/bench.log"
            stop_broker
            if [ -n "$DATA" ]; then
                echo "$scenario $broker #$rep: $(du -sk "$DATA" | cut -f1) KiB on disk after the run" \
                    >>"$OUT/data-sizes.txt"
                [ "$KEEP_DATA" = 1 ] || rm -rf "$DATA"
            fi
        done
    done
done

echo "load after: $(uptime)" | tee -a "$OUT/meta.txt"
A="$(echo "$BROKERS" | awk '{print $1}')"
B="$(echo "$BROKERS" | awk '{print ($2 == "" ? "mosquitto" : $2)}')"
# The first broker against every other one.
MORE_RATIOS=()
for other in $(echo "$BROKERS" | cut -s -d' ' -f3-); do
    [ "$other" = "$A" ] || [ "$other" = "$B" ] || MORE_RATIOS+=(--ratio "$A/$other")
done
: >"$OUT/summary.txt"
: >"$OUT/table.md"
if grep -qv '"case":"persist-q1"' "$OUT/results.jsonl" 2>/dev/null; then
    "$BENCH" report --a "$A" --b "$B" "${MORE_RATIOS[@]}" --skip-cases persist-q1 "$OUT/results.jsonl" | tee "$OUT/summary.txt"
    "$BENCH" report --a "$A" --b "$B" "${MORE_RATIOS[@]}" --skip-cases persist-q1 --markdown "$OUT/results.jsonl" >"$OUT/table.md"
fi
# The persist scenario: batch against never (the cost of durable acknowledgements),
# fleetmq batch against Mosquitto with persistence, and the in-memory pair.
if grep -q '"case":"persist-q1"' "$OUT/results.jsonl" 2>/dev/null; then
    PERSIST_REPORT=(--cases persist-q1 --a fleetmq-batch --b fleetmq-never
        --ratio fleetmq-batch/mosquitto-persist --ratio fleetmq-always/fleetmq-never
        --ratio fleetmq/mosquitto)
    if [[ " $PERSIST_BROKERS " == *" fleetmq-baseline-batch "* ]]; then
        PERSIST_REPORT+=(--ratio fleetmq-batch/fleetmq-baseline-batch)
    fi
    PERSIST_REPORT+=("$OUT/results.jsonl")
    "$BENCH" report "${PERSIST_REPORT[@]}" | tee -a "$OUT/summary.txt"
    { echo; "$BENCH" report --markdown "${PERSIST_REPORT[@]}"; } >>"$OUT/table.md"
fi
rmdir "$OUT/data" 2>/dev/null || true
echo "results in $OUT ($FAILED failed runs)"
