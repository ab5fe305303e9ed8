#!/usr/bin/env bash
# The main job, end to end on this machine: set up .venv, make sure a local MQTT broker runs,
# start the daemon on the bundled models and sample video (configs/demo.yaml), and print the
# predictions as a subscriber receives them. Runs DEMO_SECONDS (default 30), then stops the
# daemon with SIGTERM (it publishes its offline status and exits 0).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PY=.venv/bin/python
SECONDS_TO_RUN="${DEMO_SECONDS:-30}"
export PATH="$PATH:/usr/sbin"

port_open() { "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null; }

BROKER_PID=""
export MQTT_HOST=127.0.0.1 MQTT_PORT="${MQTT_PORT:-1883}"
if ! port_open "$MQTT_PORT"; then
    if ! command -v mosquitto >/dev/null; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
        else
            echo "no MQTT broker on 127.0.0.1:$MQTT_PORT and no mosquitto: sudo apt-get install mosquitto" >&2
            exit 1
        fi
    fi
    mosquitto -p "$MQTT_PORT" >/tmp/edge-runtime-demo-broker.log 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 50); do port_open "$MQTT_PORT" && break; sleep 0.1; done
    echo "started a local mosquitto on 127.0.0.1:$MQTT_PORT"
fi

export EDGE_STATE_DIR="${EDGE_STATE_DIR:-$PWD/state}"
.venv/bin/edge-runtime validate configs/demo.yaml
"$PY" scripts/watch.py --host 127.0.0.1 --port "$MQTT_PORT" --seconds "$((SECONDS_TO_RUN + 3))" &
WATCH_PID=$!
sleep 1
.venv/bin/edge-runtime run configs/demo.yaml &
DAEMON_PID=$!
cleanup() {
    kill -TERM "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" || true
    wait "$WATCH_PID" 2>/dev/null || true
    [[ -n "$BROKER_PID" ]] && kill "$BROKER_PID" 2>/dev/null || true
}
trap cleanup EXIT
sleep "$SECONDS_TO_RUN"
