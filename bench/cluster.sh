#!/usr/bin/env bash
# One fleetmq node against a three-node cluster on loopback (see BENCHMARKS.md,
# "Cluster"):
#   - fan-in at QoS 0 and 1: one node; three nodes with publishers and subscriber on the
#     same node; three nodes with publishers on node 1 and the subscriber on node 2
#     (every message crosses a node link): delivered msg/s, CPU per delivered message of
#     the publishers' node and of all nodes together;
#   - latency at QoS 1, 5,000 msg/s: same node against across nodes (p50/p99);
#   - takeover time: a persistent session owned by node 1 taken by a CONNECT on node 2,
#     against a reconnect to its own node (mosquitto_pub, median of --takeovers);
#   - session replication (--parts replication): persistent QoS 1 fan-in (publishers
#     and a clean-session-false subscriber on node 1) on one node, on three nodes with
#     replication_factor 1 and with 2: acknowledged msg/s, PUBACK latency p50/p99, CPU
#     of all nodes per acknowledged message.
#   - persistent QoS 2 across nodes (--parts qos2): persistent QoS 2 publishers on node
#     1, a persistent subscriber on node 2, replication_factor 2: acknowledged (PUBREC)
#     msg/s, PUBREC latency p50/p99. Such a message goes to node 2 only once its packet
#     id is on node 1's backup; run it with --fleetmq against another build for an A/B.
# Results: $OUT/results.jsonl (fleetmq-bench's JSON lines) and $OUT/summary.txt.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'USAGE'
usage: bench/cluster.sh [options]
  --duration S     seconds of load per run (default 5)
  --publishers N   fan-in publishers (default 8)
  --takeovers N    takeovers timed (default 20)
  --window N       replication part: unacknowledged messages per publisher (default 16)
  --parts "LIST"   among: fanin latency takeover replication qos2 (default: all)
  --fleetmq PATH   the fleetmq binary the nodes run (default: the profile's build)
  --out DIR        results directory (default /tmp/fleetmq-cluster-bench/DATE)
  --profile P      cargo profile whose binaries run: release (default) or debug
  --no-build       use the existing binaries
Environment: CARGO_TARGET_DIR (default ./target).
Node x (1 to 3) uses ports 1x883 (MQTT), 1x884 (metrics), 1x885 (link), 1x886 (admin)
on 127.0.0.1: they must be free. Needs mosquitto_pub for the takeover times.
USAGE
}

DURATION=5
PUBLISHERS=8
TAKEOVERS=20
WINDOW=16
PARTS="fanin latency takeover replication qos2"
FLEETMQ=""
OUT=""
PROFILE=release
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --publishers) PUBLISHERS="$2"; shift 2 ;;
        --takeovers) TAKEOVERS="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --parts) PARTS="$2"; shift 2 ;;
        --fleetmq) FLEETMQ="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "$BUILD" = 1 ]; then
    if [ "$PROFILE" = release ]; then
        cargo build --release --bin fleetmq --bin fleetmq-bench
    else
        cargo build --bin fleetmq --bin fleetmq-bench
    fi
fi
FLEETMQ="${FLEETMQ:-$TARGET_DIR/$PROFILE/fleetmq}"
BENCH="$TARGET_DIR/$PROFILE/fleetmq-bench"
OUT="${OUT:-${TMPDIR:-/tmp}/fleetmq-cluster-bench/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
CLK_TCK="$(getconf CLK_TCK)"

# Ports: MQTT 1x883, links 1x885, admin 1x886, metrics 1x884 for node x.
NODE_PIDS=()
stop_nodes() {
    for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
}
cleanup() {
    stop_nodes
    rm -rf "$WORK"
}

# Starts nodes 1..$1 ($1 = 1: a single node without [cluster]) on fresh data, with
# replication_factor $2 (default: the broker's default).
start_nodes() {
    local size="$1" factor="${2:-}" id
    rm -rf "$WORK"/data* "$WORK"/*.toml
    for id in $(seq "$size"); do
        cat >"$WORK/node$id.toml" <<CONFIG
[[listeners]]
type = "tcp"
bind = "127.0.0.1:1${id}883"
allow_anonymous = true

[limits]
max_connections = 100000
max_connection_rate = 1000000000
max_publish_rate = 1000000000

[storage]
data_dir = "$WORK/data$id"

[metrics]
bind = "127.0.0.1:1${id}884"

[admin]
bind = "127.0.0.1:1${id}886"

[sys]
interval_secs = 0

[log]
level = "warn"
CONFIG
        if [ "$size" -gt 1 ]; then
            cat >>"$WORK/node$id.toml" <<CONFIG

[cluster]
node_id = $id
bind = "127.0.0.1:1${id}885"
peers = [$(for p in $(seq "$size"); do printf '"%s@127.0.0.1:1%s885",' "$p" "$p"; done)]
CONFIG
            if [ -n "$factor" ]; then
                echo "replication_factor = $factor" >>"$WORK/node$id.toml"
            fi
        fi
        "$FLEETMQ" -c "$WORK/node$id.toml" 2>>"$OUT/node$id.log" &
        NODE_PIDS+=($!)
    done
    for id in $(seq "$size"); do
        for _ in $(seq 100); do port_open "1${id}883" && break; sleep 0.1; done
    done
    if [ "$size" -gt 1 ]; then
        # Every node follows a leader (`"leader":null` until then).
        for id in $(seq "$size"); do
            for _ in $(seq 100); do
                "$FLEETMQ" cluster status --json --url "http://127.0.0.1:1${id}886" 2>/dev/null |
                    grep -q '"leader":[0-9]' && break
                sleep 0.1
            done
        done
    fi
}

# CPU clock ticks (user + system) of every running node.
cluster_ticks() {
    local total=0 pid
    for pid in "${NODE_PIDS[@]}"; do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
CLUSTER_CPU=()

# fanin LABEL QOS PUB_NODE SUB_NODE
fanin() {
    local before after line delivered
    before=$(cluster_ticks)
    line=$("$BENCH" fanin --addr "127.0.0.1:1${3}883" --subscriber-addr "127.0.0.1:1${4}883" \
        --broker-pid "${NODE_PIDS[$(($3 - 1))]}" --clk-tck "$CLK_TCK" --label "$1" \
        --qos "$2" --duration "$DURATION" --publishers "$PUBLISHERS")
    after=$(cluster_ticks)
    echo "$line" | tee -a "$OUT/results.jsonl"
    delivered=$(grep -o '"delivered":[0-9.e+]*' <<<"$line" | cut -d: -f2)
    CLUSTER_CPU+=("$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v d="${delivered:-0}" -v l="$1" -v q="$2" \
        'BEGIN { printf "%-24s QoS %s: %.2f us CPU of all nodes per delivered msg\n", l, q, (d > 0 ? t / hz * 1e6 / d : 0) }')")
}

# latency LABEL PUB_NODE SUB_NODE
latency() {
    "$BENCH" latency --addr "127.0.0.1:1${2}883" --subscriber-addr "127.0.0.1:1${3}883" \
        --broker-pid "${NODE_PIDS[$(($2 - 1))]}" --clk-tck "$CLK_TCK" --label "$1" \
        --duration "$DURATION" | tee -a "$OUT/results.jsonl"
}

# Milliseconds of one persistent connect + QoS 1 publish + disconnect of client $1 on node $2.
connect_ms() {
    local start end
    start=$(date +%s%N)
    mosquitto_pub -h 127.0.0.1 -p "1${2}883" -i "$1" -c -q 1 -t bench/takeover -m x
    end=$(date +%s%N)
    echo $(((end - start) / 1000000))
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

if has_part fanin; then
    for qos in 0 1; do
        start_nodes 1
        fanin "one-node" "$qos" 1 1
        stop_nodes
        start_nodes 3
        fanin "three-nodes-same-node" "$qos" 1 1
        fanin "three-nodes-across" "$qos" 1 2
        stop_nodes
    done
fi

if has_part latency; then
    start_nodes 3
    latency "three-nodes-same-node" 1 1
    latency "three-nodes-across" 1 2
    stop_nodes
fi

same=(); moved=()
if has_part takeover; then
    start_nodes 3
    for i in $(seq "$TAKEOVERS"); do
        connect_ms "stay-$i" 1 >/dev/null
        same+=("$(connect_ms "stay-$i" 1)")
        connect_ms "move-$i" 1 >/dev/null
        moved+=("$(connect_ms "move-$i" 2)")
    done
    stop_nodes
fi

# persist LABEL [EXTRA...]: persistent QoS 1 fan-in on node 1 of the running nodes
# (EXTRA: more fleetmq-bench persist options).
persist() {
    local before after line acked label="$1"
    shift
    before=$(cluster_ticks)
    line=$("$BENCH" persist --addr 127.0.0.1:11883 --broker-pid "${NODE_PIDS[0]}" \
        --clk-tck "$CLK_TCK" --label "$label" --duration "$DURATION" \
        --publishers "$PUBLISHERS" --window "$WINDOW" "$@")
    after=$(cluster_ticks)
    echo "$line" | tee -a "$OUT/results.jsonl"
    acked=$(grep -o '"acked":[0-9.e+]*' <<<"$line" | cut -d: -f2)
    CLUSTER_CPU+=("$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v d="${acked:-0}" -v l="$label" \
        'BEGIN { printf "%-24s persistent: %.2f us CPU of all nodes per acknowledged msg\n", l, (d > 0 ? t / hz * 1e6 / d : 0) }')")
}

if has_part replication; then
    start_nodes 1
    persist "one-node"
    stop_nodes
    start_nodes 3 1
    persist "three-nodes-factor-1"
    stop_nodes
    start_nodes 3 2
    persist "three-nodes-factor-2"
    stop_nodes
fi

if has_part qos2; then
    start_nodes 3 2
    persist "three-nodes-factor-2-q2-across" --qos 2 --persistent-publishers \
        --subscriber-addr 127.0.0.1:12883
    # What the subscriber's node dropped, by reason (a subscriber slower than the
    # publishers fills its session's queue).
    curl -s http://127.0.0.1:12884/metrics | grep '^fleetmq_messages_dropped_total' |
        grep -v ' 0$' | sed 's/^/node 2 /' >>"$OUT/dropped.txt" || true
    stop_nodes
fi

{
    "$BENCH" report "$OUT/results.jsonl" || true
    printf '%s\n' "${CLUSTER_CPU[@]}"
    if [ -s "$OUT/dropped.txt" ]; then cat "$OUT/dropped.txt"; fi
    if has_part takeover; then
        echo "reconnect to the owning node, ms (median of $TAKEOVERS): $(printf '%s\n' "${same[@]}" | median)"
        echo "takeover from another node, ms (median of $TAKEOVERS):  $(printf '%s\n' "${moved[@]}" | median)"
    fi
} | tee "$OUT/summary.txt"
echo "results in $OUT"
