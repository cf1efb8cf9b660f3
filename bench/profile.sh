#!/usr/bin/env bash
# Per-message cost profile of fleetmq under one load of fleetmq-bench.
#
#   callgrind: the broker runs under valgrind --tool=callgrind; counters are zeroed
#              just before the load starts and dumped when it ends, so the dump holds
#              the user-space instructions of that load only (repeatable, unlike time
#              on a shared machine). Kernel work (syscalls) is not counted.
#   perf:      the broker runs normally and `perf record -e cpu-clock -g` samples it
#              (user and kernel) while the load runs: time, not instructions.
#
# Queues are raised out of the way (max_queued_messages) so that every message is
# delivered even when the profiled broker is slow: the cost per message is then the
# cost of a message taken, routed and delivered. See "Where the time goes" in
# BENCHMARKS.md.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/profile.sh [options]
  --scenario NAME   fanout-q0 or fanout-q1 (1 publisher, 16 subscribers), fanin-q0 (8
                    publishers, 1 subscriber), fanin-q1 (8 publishers,
                    window 32, 1 subscriber), persist-batch (persist scenario, 8
                    publishers, window 1, sync = "batch"), persist-never, persist-always
                    (default fanout-q0)
  --tool NAME       callgrind or perf (default callgrind)
  --messages N      messages per publisher (default: 20000 fanout-q0 and fanin-q0, 5000 fanout-q1
                    and fanin-q1,
                    2000 persist-*)
  --duration S      perf only: seconds of load (default 5)
  --out DIR         output directory (default /tmp/fleetmq-profile/DATE)
  --fleetmq PATH    (default $CARGO_TARGET_DIR/release/fleetmq, CARGO_TARGET_DIR
  --bench PATH       defaulting to ./target)
  --top N           functions listed (default 40)
EOF
}

SCENARIO=fanout-q0
TOOL=callgrind
MESSAGES=""
DURATION=5
OUT=""
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
FLEETMQ="$TARGET_DIR/release/fleetmq"
BENCH="$TARGET_DIR/release/fleetmq-bench"
TOP=40
while [ $# -gt 0 ]; do
    case "$1" in
        --scenario) SCENARIO="$2"; shift 2 ;;
        --tool) TOOL="$2"; shift 2 ;;
        --messages) MESSAGES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --fleetmq) FLEETMQ="$2"; shift 2 ;;
        --bench) BENCH="$2"; shift 2 ;;
        --top) TOP="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
OUT="${OUT:-${TMPDIR:-/tmp}/fleetmq-profile/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
PORT=18851
CLK_TCK="$(getconf CLK_TCK)"

SYNC=""
case "$SCENARIO" in
    fanout-q0) ARGS=(fanout --qos 0 --subscribers 16); : "${MESSAGES:=20000}" ;;
    fanout-q1) ARGS=(fanout --qos 1 --subscribers 16); : "${MESSAGES:=5000}" ;;
    fanin-q0) ARGS=(fanin --qos 0 --publishers 8); : "${MESSAGES:=20000}" ;;
    fanin-q1) ARGS=(fanin --qos 1 --publishers 8); : "${MESSAGES:=5000}" ;;
    persist-batch|persist-never|persist-always)
        ARGS=(persist --publishers 8 --window 1); : "${MESSAGES:=2000}"
        SYNC="${SCENARIO#persist-}" ;;
    *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
if [ "$TOOL" = callgrind ]; then
    # Bounded by the message count; the time bounds only guard against a stall.
    ARGS+=(--messages "$MESSAGES" --duration 600 --drain-idle-ms 20000)
else
    ARGS+=(--duration "$DURATION")
fi

cat >"$WORK/fleetmq.toml" <<EOF
[[listeners]]
type = "tcp"
bind = "127.0.0.1:$PORT"
allow_anonymous = true

[limits]
max_queued_messages = 10000000
max_inflight_messages = 32
max_connections = 100000
max_connection_rate = 1000000000
max_publish_rate = 1000000000

[metrics]
bind = "127.0.0.1:18859"

[log]
level = "warn"
EOF
if [ -n "$SYNC" ]; then
    mkdir -p "$OUT/data"
    printf '\n[storage]\npersistence = true\nsync = "%s"\ndata_dir = "%s"\n' \
        "$SYNC" "$OUT/data" >>"$WORK/fleetmq.toml"
else
    # The in-memory broker, as bench/run.sh compares it (clean sessions write nothing
    # either way); also what a build without the rocksdb feature can run.
    printf '\n[storage]\npersistence = false\n' >>"$WORK/fleetmq.toml"
fi
cp "$WORK/fleetmq.toml" "$OUT/fleetmq.toml"

PERF_PID=""
# Under valgrind the broker writes its profile as it exits, which takes a while.
STOP_WAIT_TENTHS=300
cleanup() {
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null
    stop_broker
    rm -rf "$WORK"
}
if port_open "$PORT"; then echo "port $PORT is in use" >&2; exit 1; fi

if [ "$TOOL" = callgrind ]; then
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
        "$FLEETMQ" -c "$WORK/fleetmq.toml" >"$OUT/broker.log" 2>&1 &
else
    "$FLEETMQ" -c "$WORK/fleetmq.toml" >"$OUT/broker.log" 2>&1 &
fi
BROKER_PID=$!
for _ in $(seq 600); do
    port_open "$PORT" && break
    kill -0 "$BROKER_PID" 2>/dev/null || { echo "broker exited, see $OUT/broker.log" >&2; exit 1; }
    sleep 0.1
done

if [ "$TOOL" = callgrind ]; then
    callgrind_control -z "$BROKER_PID" >/dev/null
else
    perf record -e cpu-clock -F 1999 -g -p "$BROKER_PID" -o "$OUT/perf.data" \
        >"$OUT/perf-record.log" 2>&1 &
    PERF_PID=$!
    sleep 0.5
fi
"$BENCH" "${ARGS[@]}" --addr "127.0.0.1:$PORT" --broker-pid "$BROKER_PID" \
    --label "fleetmq-$TOOL" --clk-tck "$CLK_TCK" >"$OUT/result.json" 2>"$OUT/bench.log"
cat "$OUT/bench.log"
DELIVERED="$(grep -o '"delivered":[0-9]*' "$OUT/result.json" | cut -d: -f2)"
PUBLISHED="$(grep -o '"published":[0-9]*' "$OUT/result.json" | cut -d: -f2)"

if [ "$TOOL" = callgrind ]; then
    callgrind_control -d "$BROKER_PID" >/dev/null
    sleep 1
    DUMP="$(ls -t "$OUT"/callgrind.out.* | grep -v '\.txt$' | head -1)"
    TOTAL="$(grep -m1 '^summary:\|^totals:' "$DUMP" | awk '{print $2}')"
    {
        echo "scenario $SCENARIO: ${ARGS[*]}"
        echo "published $PUBLISHED, delivered $DELIVERED"
        echo "instructions (user space, all broker threads): $TOTAL"
        awk -v t="$TOTAL" -v d="$DELIVERED" -v p="$PUBLISHED" 'BEGIN {
            printf "per delivered message: %.0f\nper published message: %.0f\n", t / d, t / p }'
        echo
        callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null | head -$((TOP + 25))
        echo
        echo "exclusive (self) costs:"
        callgrind_annotate "$DUMP" 2>/dev/null | head -$((TOP + 25))
    } | tee "$OUT/profile.txt"
else
    kill -INT "$PERF_PID"
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    {
        echo "scenario $SCENARIO: ${ARGS[*]}"
        echo "published $PUBLISHED, delivered $DELIVERED"
        echo "share of samples by object (kernel = [kernel.kallsyms]):"
        perf report -i "$OUT/perf.data" --stdio --no-children --sort dso 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -10
        echo
        perf report -i "$OUT/perf.data" --stdio --no-children --sort sym -g none \
            --percent-limit 0.7 2>/dev/null | grep -v '^#' | grep -v '^$' | head -"$TOP"
        echo
        echo "inclusive (children):"
        perf report -i "$OUT/perf.data" --stdio --children --sort sym -g none \
            --percent-limit 3 2>/dev/null | grep -v '^#' | grep -v '^$' | head -"$TOP"
    } | tee "$OUT/profile.txt"
fi
echo "profile in $OUT/profile.txt"
