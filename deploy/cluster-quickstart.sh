#!/usr/bin/env bash
# A three-node fleetmq cluster on this machine, for trying it out: MQTT on 127.0.0.1
# ports 1883, 2883 and 3883, node links on 7881-7883, metrics on 9881-9883's
# neighbours (19881-19883), admin API (and `fleetmq cluster`) on 9885-9887. State
# under
# ./cluster-demo/. Stop it with Ctrl-C.
#
#   deploy/cluster-quickstart.sh            # builds (release) and starts three nodes
#   FLEETMQ=/usr/bin/fleetmq deploy/cluster-quickstart.sh
set -euo pipefail

root="${CLUSTER_DIR:-$PWD/cluster-demo}"
fleetmq="${FLEETMQ:-}"
if [[ -z "$fleetmq" ]]; then
    cargo build --release --quiet
    fleetmq="${CARGO_TARGET_DIR:-target}/release/fleetmq"
fi
mkdir -p "$root"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM

for id in 1 2 3; do
    cat > "$root/node$id.toml" <<CONFIG
[[listeners]]
type = "tcp"
bind = "127.0.0.1:${id}883"
allow_anonymous = true

[storage]
data_dir = "$root/data$id"

[metrics]
bind = "127.0.0.1:1988$id"

[log]
level = "info,openraft=warn"

[admin]
bind = "127.0.0.1:$((9884 + id))"

[cluster]
node_id = $id
bind = "127.0.0.1:788$id"
peers = ["1@127.0.0.1:7881", "2@127.0.0.1:7882", "3@127.0.0.1:7883"]
CONFIG
    "$fleetmq" -c "$root/node$id.toml" 2> "$root/node$id.log" &
    pids+=($!)
done

echo "waiting for a leader..."
for _ in $(seq 100); do
    if "$fleetmq" cluster status -c "$root/node1.toml" 2>/dev/null | grep -q leader; then
        break
    fi
    sleep 0.1
done
"$fleetmq" cluster status -c "$root/node1.toml"
cat <<HELP

Three nodes are running (logs in $root/node*.log). Try:
  mosquitto_sub -p 2883 -t 'demo/#' -v        # subscribe on node 2
  mosquitto_pub -p 1883 -t demo/1 -m hello     # publish on node 1
  $fleetmq cluster status -c $root/node2.toml --json
Ctrl-C stops all three.
HELP
wait
