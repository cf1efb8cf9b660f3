# Sourced by the benchmark scripts: starting and stopping the broker under test and
# checking its port. (Copy bench/ as a whole to run a script on another machine.)

# The broker process started last; stop_broker ends it.
BROKER_PID=""
# Tenths of a second a broker gets to exit after SIGTERM before it is killed.
STOP_WAIT_TENTHS=50

# Whether something accepts connections on 127.0.0.1 port $1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Stops the broker started last: SIGTERM, then SIGKILL after STOP_WAIT_TENTHS.
stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq "$STOP_WAIT_TENTHS"); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}

# On exit (INT and TERM included) stop the broker and remove the scratch directory
# $WORK; a script that must do more first defines its own `cleanup` afterwards.
cleanup() {
    stop_broker
    if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap 'cleanup' EXIT
trap 'exit 130' INT TERM
