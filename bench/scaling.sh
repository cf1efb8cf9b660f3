#!/usr/bin/env bash
# Multi-core scaling of fleetmq: QoS 0 and QoS 1 fan-in with many publishers, the
# broker restricted with taskset to 1, 2, 4, ... cores, and Mosquitto (one thread) on
# one core for reference. Prints a table of msg/s per core count and the speed-up over
# one core, and writes it with the raw results to the output directory.
#
# Self-contained: it builds nothing and needs only bash, coreutils, taskset, timeout,
# the two release binaries and optionally mosquitto. See BENCHMARKS.md.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/scaling.sh --fleetmq PATH --bench PATH [options]
  --fleetmq PATH       fleetmq release binary
  --bench PATH         fleetmq-bench release binary
  --mosquitto PATH     Mosquitto binary (default: mosquitto from PATH, then
                       /usr/sbin/mosquitto; skipped when absent); "none" skips it
  --out DIR            results directory (default: $OUT, else
                       /tmp/fleetmq-scaling/DATE)
  --duration S         seconds of load per run (default 8)
  --reps N             runs per configuration (default 2; medians are reported)
  --cores "LIST"       broker core counts (default: 1 2 4 ... up to all CPUs)
  --scenarios "LIST"   among: fanin-q0 fanin-q1 (default: both)
  --publishers N       publishing connections (default 64)
  --subscribers N      subscribers sharing the topics (default 8; 1 is a single
                       subscriber on bench/+)
  --budget S           stop starting runs that could end after S seconds
                       (default 450)
CPU layout: of the CPUs this script may use (its affinity), the broker gets the
first k; the generator gets the upper half when k is at most half of them, and
otherwise shares all of them with the broker (marked "shared" in the table).
Mosquitto runs on the first CPU with the generator on the upper half.
EOF
}

FLEETMQ=""
BENCH=""
MOSQUITTO=""
OUT="${OUT:-}"
DURATION=8
REPS=2
CORES=""
SCENARIOS="fanin-q0 fanin-q1"
PUBLISHERS=64
SUBSCRIBERS=8
BUDGET=450
while [ $# -gt 0 ]; do
    case "$1" in
        --fleetmq) FLEETMQ="$2"; shift 2 ;;
        --bench) BENCH="$2"; shift 2 ;;
        --mosquitto) MOSQUITTO="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --reps) REPS="$2"; shift 2 ;;
        --cores) CORES="$2"; shift 2 ;;
        --scenarios) SCENARIOS="$2"; shift 2 ;;
        --publishers) PUBLISHERS="$2"; shift 2 ;;
        --subscribers) SUBSCRIBERS="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "scaling.sh: $*" >&2; exit 2; }
[ -x "$FLEETMQ" ] || die "--fleetmq must name the fleetmq binary"
[ -x "$BENCH" ] || die "--bench must name the fleetmq-bench binary"
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
case "$DURATION" in ''|*[!0-9]*) die "--duration takes whole seconds" ;; esac
if [ -z "$MOSQUITTO" ]; then
    MOSQUITTO="$(command -v mosquitto || true)"
    [ -n "$MOSQUITTO" ] || { [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto; } || true
elif [ "$MOSQUITTO" = none ]; then
    MOSQUITTO=""
fi
if [ -n "$MOSQUITTO" ] && [ ! -x "$MOSQUITTO" ]; then
    echo "mosquitto not found at $MOSQUITTO; skipping it" >&2
    MOSQUITTO=""
fi
FLEETMQ="$(cd "$(dirname "$FLEETMQ")" && pwd)/$(basename "$FLEETMQ")"
BENCH="$(cd "$(dirname "$BENCH")" && pwd)/$(basename "$BENCH")"

# The CPUs this script may use, e.g. "0-3,8-11" -> 0 1 2 3 8 9 10 11.
expand_cpus() {
    local part lo hi
    for part in ${1//,/ }; do
        lo="${part%-*}"; hi="${part#*-}"
        seq "$lo" "$hi"
    done
}
mapfile -t CPUS < <(expand_cpus "$(taskset -pc $$ | sed 's/.*: *//')")
NCPU="${#CPUS[@]}"
if [ -z "$CORES" ]; then
    k=1
    while [ "$k" -lt "$NCPU" ]; do CORES="$CORES $k"; k=$((k * 2)); done
    CORES="$CORES $NCPU"
fi
cpu_list() { # first $1 CPUs, or CPUs $2..$3-1 of the list
    local from="${2:-0}" to="${3:-$1}" out="" i
    for ((i = from; i < to; i++)); do out="$out${out:+,}${CPUS[$i]}"; done
    echo "$out"
}
HALF=$((NCPU / 2))
GEN_UPPER="$(cpu_list 0 "$HALF" "$NCPU")"
ALL_CPUS="$(cpu_list "$NCPU")"

OUT="${OUT:-${TMPDIR:-/tmp}/fleetmq-scaling/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
CLK_TCK="$(getconf CLK_TCK)"
FLEETMQ_PORT=18841
MOSQUITTO_PORT=18842
METRICS_PORT=18849
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# fleetmq's defaults with the per-client publish and per-listener connection rate
# limits out of the way, queue and inflight limits as in bench/run.sh, the in-memory
# store when the build has the persistence setting, and quiet logs.
cat >"$WORK/probe.toml" <<EOF
[storage]
persistence = false
EOF
STORAGE=""
if "$FLEETMQ" check-config -c "$WORK/probe.toml" >/dev/null 2>&1; then
    STORAGE=$'\n[storage]\npersistence = false'
fi
cat >"$WORK/fleetmq.toml" <<EOF
[[listeners]]
type = "tcp"
bind = "127.0.0.1:$FLEETMQ_PORT"
allow_anonymous = true

[limits]
max_queued_messages = 1000
max_inflight_messages = 32
max_connections = 100000
max_connection_rate = 1000000000
max_publish_rate = 1000000000

[metrics]
bind = "127.0.0.1:$METRICS_PORT"

[log]
level = "warn"
$STORAGE
EOF
cat >"$WORK/mosquitto.conf" <<EOF
listener $MOSQUITTO_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000
max_inflight_messages 32
set_tcp_nodelay true
log_dest none
EOF

# start_broker NAME CPULIST
start_broker() {
    local name="$1" cpus="$2" port
    case "$name" in
        fleetmq)
            port=$FLEETMQ_PORT
            if port_open "$port"; then echo "port $port is in use" >&2; return 1; fi
            taskset -c "$cpus" "$FLEETMQ" -c "$WORK/fleetmq.toml" >>"$OUT/fleetmq.log" 2>&1 &
            ;;
        mosquitto)
            port=$MOSQUITTO_PORT
            if port_open "$port"; then echo "port $port is in use" >&2; return 1; fi
            taskset -c "$cpus" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$OUT/mosquitto.log" 2>&1 &
            ;;
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

# One configuration per line: broker, core count, broker CPUs, generator CPUs.
CONFIGS=()
for k in $CORES; do
    if [ "$k" -lt 1 ] || [ "$k" -gt "$NCPU" ]; then
        echo "skipping $k cores: this machine lets the script use $NCPU" >&2
        continue
    fi
    if [ "$k" -le "$HALF" ]; then
        CONFIGS+=("fleetmq $k $(cpu_list "$k") $GEN_UPPER")
    else
        CONFIGS+=("fleetmq $k $(cpu_list "$k") $ALL_CPUS")
    fi
done
if [ -n "$MOSQUITTO" ]; then
    if [ "$HALF" -ge 1 ]; then
        CONFIGS+=("mosquitto 1 ${CPUS[0]} $GEN_UPPER")
    else
        CONFIGS+=("mosquitto 1 ${CPUS[0]} $ALL_CPUS")
    fi
fi

# A run: connections, DURATION of load, at most 3 s of draining, broker start and stop.
RUN_LIMIT=$((DURATION + 30))
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -sr), CPUs usable: $NCPU ($ALL_CPUS), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "fleetmq: $FLEETMQ ($("$FLEETMQ" --version 2>/dev/null || echo unknown))"
    echo "mosquitto: ${MOSQUITTO:-absent}${MOSQUITTO:+ ($("$MOSQUITTO" -h 2>/dev/null | head -1))}"
    echo "options: duration=${DURATION}s reps=$REPS publishers=$PUBLISHERS subscribers=$SUBSCRIBERS budget=${BUDGET}s"
    echo "configurations (broker cores broker-CPUs generator-CPUs):"
    printf '  %s\n' "${CONFIGS[@]}"
    echo "load before: $(uptime)"
} | tee "$OUT/meta.txt"

FAILED=0
SKIPPED=0
for rep in $(seq "$REPS"); do
    for scenario in $SCENARIOS; do
        case "$scenario" in
            fanin-q0|fanin-q1) ;;
            *) die "unknown scenario $scenario" ;;
        esac
        for config in "${CONFIGS[@]}"; do
            read -r broker k bcpus gcpus <<<"$config"
            if [ $((SECONDS + RUN_LIMIT)) -gt "$BUDGET" ]; then
                echo "budget: skipping $scenario $broker ${k}c #$rep" >&2
                SKIPPED=$((SKIPPED + 1))
                continue
            fi
            start_broker "$broker" "$bcpus" || { FAILED=$((FAILED + 1)); continue; }
            port=$FLEETMQ_PORT
            [ "$broker" = mosquitto ] && port=$MOSQUITTO_PORT
            if ! timeout "$RUN_LIMIT" taskset -c "$gcpus" "$BENCH" fanin \
                --qos "${scenario#fanin-q}" --duration "$DURATION" \
                --publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS" \
                --drain-idle-ms 1000 --drain-max-ms 3000 \
                --addr "127.0.0.1:$port" --broker-pid "$BROKER_PID" \
                --label "$broker-${k}c" --clk-tck "$CLK_TCK" \
                >>"$OUT/results.jsonl" 2>"$WORK/stderr"; then
                echo "run failed: $scenario $broker ${k}c #$rep" >&2
                FAILED=$((FAILED + 1))
            fi
            sed "s/^/[$rep] /" "$WORK/stderr" | tee -a "$OUT/bench.log"
            stop_broker
        done
    done
done
echo "load after: $(uptime)" | tee -a "$OUT/meta.txt"

# The value of a numeric field in one flat JSON line.
field() {
    grep -o "\"$2\":[^,}]*" <<<"$1" | head -1 | cut -d: -f2
}
# Median of the field over the results of one scenario and label.
median_of() {
    local case="$1" label="$2" key="$3" line
    grep -F "\"case\":\"$case\"" "$OUT/results.jsonl" 2>/dev/null \
        | grep -F "\"broker\":\"$label\"" | while read -r line; do
            field "$line" "$key"
        done | grep -v '^$' | sort -g | awk '
            { v[NR] = $1 }
            END {
                if (NR == 0) { print "-"; exit }
                m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                print m
            }'
}
fmt() { # number -> rounded, "-" stays
    [ "$1" = - ] && { echo -; return; }
    awk -v v="$1" 'BEGIN { if (v >= 100) printf "%.0f", v; else printf "%.2f", v }'
}
ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'
}

{
    echo "| scenario | broker | cores | CPUs (broker / generator) | delivered msg/s | speed-up | published or acked msg/s | speed-up | delivered / expected | broker cores busy | generator cores busy |"
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for scenario in $SCENARIOS; do
        rate_key=published_per_s
        [ "$scenario" = fanin-q1 ] && rate_key=acked_per_s
        base_d="$(median_of "$scenario" fleetmq-1c delivered_per_s)"
        base_p="$(median_of "$scenario" fleetmq-1c "$rate_key")"
        for config in "${CONFIGS[@]}"; do
            read -r broker k bcpus gcpus <<<"$config"
            label="$broker-${k}c"
            d="$(median_of "$scenario" "$label" delivered_per_s)"
            p="$(median_of "$scenario" "$label" "$rate_key")"
            shared=""
            [ "$gcpus" = "$ALL_CPUS" ] && shared=" (shared)"
            echo "| $scenario | $broker | $k | $bcpus / $gcpus$shared | $(fmt "$d") | $(ratio "$d" "$base_d") | $(fmt "$p") | $(ratio "$p" "$base_p") | $(fmt "$(median_of "$scenario" "$label" delivery_ratio)") | $(fmt "$(median_of "$scenario" "$label" broker_load_cores)") | $(fmt "$(median_of "$scenario" "$label" bench_load_cores)") |"
        done
    done
    echo
    echo "Medians of $REPS runs of ${DURATION}s, $PUBLISHERS publishers, $SUBSCRIBERS subscribers."
    echo "Speed-up: over fleetmq on 1 core, same scenario. Published: QoS 0 publishes the"
    echo "broker read; acked: QoS 1 publishes it acknowledged; delivered: summed over the"
    echo "subscribers. Cores busy: CPU time over wall time while the publishers ran."
} >"$OUT/scaling.md"
echo
cat "$OUT/scaling.md"
echo "results in $OUT ($FAILED failed, $SKIPPED skipped for the time budget)"
