#!/usr/bin/env bash
# Bridge benchmark: fleetmq's bridge against a Mosquitto bridge configured the same way,
# side by side, both forwarding to the same remote broker (Mosquitto) on loopback.
#
# 1. Throughput: QoS 1 publishers on the local broker, one subscriber on the remote
#    (fleetmq-bench fanin --sub-addr), through the bridge (topic bench/# out, QoS 1).
# 2. Drain: with the remote down, 1,000,000 QoS 1 messages are published locally (all
#    acknowledged); then the remote starts and the time until its (persistent)
#    subscriber has received all of them is measured.
#
# Results go to $OUT/bridge.txt. Numbers on a shared machine are indicative only.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10}"
BACKLOG="${BACKLOG:-1000000}"
PUBLISHERS="${PUBLISHERS:-8}"
MOSQUITTO="${MOSQUITTO:-/usr/sbin/mosquitto}"
# PROFILE=debug runs the debug build (a functional check of the script, not figures).
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-./target}/$PROFILE"
OUT="${OUT:-/tmp/fleetmq-bench/bridge-$(date +%Y%m%d-%H%M%S)}"
LOCAL_PORT="${LOCAL_PORT:-21883}"
REMOTE_PORT="${REMOTE_PORT:-21884}"
BROKERS="${BROKERS:-fleetmq mosquitto}"

mkdir -p "$OUT"
WORK="$(mktemp -d)"
REMOTE_PID=""
cleanup() {
    stop_broker
    if [ -n "$REMOTE_PID" ]; then kill -TERM "$REMOTE_PID" 2>/dev/null || true; wait "$REMOTE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap 'cleanup' EXIT

if [ "${NO_BUILD:-0}" != 1 ]; then
    if [ "$PROFILE" = release ]; then
        cargo build --release --bin fleetmq --bin fleetmq-bench
    else
        cargo build --bin fleetmq --bin fleetmq-bench
    fi
fi

wait_port() {
    for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done
    echo "nothing listens on port $1" >&2; exit 1
}

# The remote: Mosquitto with persistence, so its subscriber's session and queue
# survive the remote's restart in the drain test.
start_remote() {
    cat >"$WORK/remote.conf" <<EOF
listener $REMOTE_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $WORK/remote-data/
max_queued_messages 0
max_inflight_messages 64
EOF
    mkdir -p "$WORK/remote-data"
    "$MOSQUITTO" -c "$WORK/remote.conf" >"$WORK/remote.log" 2>&1 &
    REMOTE_PID=$!
    wait_port "$REMOTE_PORT"
}

stop_remote() {
    kill -TERM "$REMOTE_PID" 2>/dev/null || true
    wait "$REMOTE_PID" 2>/dev/null || true
    REMOTE_PID=""
}

# The local broker under test with a bridge of topic bench/# out at QoS 1.
start_local() {
    local broker="$1"
    rm -rf "$WORK/local-data"
    mkdir -p "$WORK/local-data"
    case "$broker" in
        fleetmq)
            cat >"$WORK/local.toml" <<EOF
[[listeners]]
type = "tcp"
bind = "127.0.0.1:$LOCAL_PORT"
[limits]
max_publish_rate = 100000000
max_queued_messages = 2000000
max_queued_bytes = 1073741824
[storage]
data_dir = "$WORK/local-data"
[metrics]
enabled = false
[[bridges]]
name = "bench"
addresses = ["127.0.0.1:$REMOTE_PORT"]
protocol = "mqttv311"
try_private = true
client_id = "bench-bridge"
reconnect_min_ms = 200
reconnect_max_ms = 1000
[bridges.outbox]
max_messages = 2000000
max_bytes = 1073741824
max_inflight = 64
[[bridges.topics]]
filter = "bench/#"
direction = "out"
qos = 1
EOF
            "$TARGET/fleetmq" -c "$WORK/local.toml" >"$WORK/local.log" 2>&1 &
            ;;
        mosquitto)
            cat >"$WORK/local.conf" <<EOF
listener $LOCAL_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $WORK/local-data/
max_queued_messages 2000000
connection bench
address 127.0.0.1:$REMOTE_PORT
bridge_protocol_version mqttv311
try_private true
remote_clientid bench-bridge
cleansession false
restart_timeout 1
bridge_max_packet_size 0
max_inflight_messages 64
topic bench/# out 1
EOF
            "$MOSQUITTO" -c "$WORK/local.conf" >"$WORK/local.log" 2>&1 &
            ;;
    esac
    BROKER_PID=$!
    wait_port "$LOCAL_PORT"
}

echo "bridge benchmark $(date -u +%FT%TZ), $PROFILE build, $(nproc) CPUs, duration ${DURATION}s, backlog $BACKLOG" | tee "$OUT/bridge.txt"
for broker in $BROKERS; do
    # Throughput.
    rm -rf "$WORK/remote-data"
    start_remote
    start_local "$broker"
    sleep 1 # the bridge connects (reconnect_min_ms / restart_timeout)
    "$TARGET/fleetmq-bench" fanin --addr "127.0.0.1:$LOCAL_PORT" --sub-addr "127.0.0.1:$REMOTE_PORT" \
        --label "$broker-bridge" --broker-pid "$BROKER_PID" --qos 1 --publishers "$PUBLISHERS" \
        --duration "$DURATION" --drain-idle-ms 3000 | tee -a "$OUT/bridge.txt"
    stop_broker

    # Drain of a backlog: create the remote subscriber's persistent session, stop the
    # remote, fill the local outbox, start the remote and time the subscriber.
    mosquitto_sub -p "$REMOTE_PORT" -c -i drain-sub -q 1 -t 'bench/#' -E
    stop_remote
    start_local "$broker"
    # fleetmq-bench's publishers stop at BACKLOG/PUBLISHERS messages each, every one
    # acknowledged (its subscriber runs on the local broker: a second consumer there).
    # (mosquitto_pub -l exits at the end of its input before everything is sent.)
    fill_start=$(date +%s.%N)
    "$TARGET/fleetmq-bench" fanin --addr "127.0.0.1:$LOCAL_PORT" --label "$broker-fill" --qos 1 \
        --publishers "$PUBLISHERS" --messages "$((BACKLOG / PUBLISHERS))" --duration 3600 \
        --drain-idle-ms 1000 >"$WORK/fill.txt"
    fill_end=$(date +%s.%N)
    BACKLOG=$((BACKLOG / PUBLISHERS * PUBLISHERS))
    start_remote
    drain_start=$(date +%s.%N)
    mosquitto_sub -p "$REMOTE_PORT" -c -i drain-sub -q 1 -t 'bench/#' -C "$BACKLOG" >/dev/null
    drain_end=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$BROKER_PID/status" 2>/dev/null || echo "?")
    printf '%s drain: %d messages queued in %.1f s, delivered after the outage in %.1f s (%.0f msg/s); local broker peak RSS %s kB\n' \
        "$broker" "$BACKLOG" "$(echo "$fill_end - $fill_start" | bc)" \
        "$(echo "$drain_end - $drain_start" | bc)" \
        "$(echo "$BACKLOG / ($drain_end - $drain_start)" | bc -l)" "$rss" | tee -a "$OUT/bridge.txt"
    stop_broker
    stop_remote
done
echo "results: $OUT/bridge.txt"
