#!/usr/bin/env bash
# Reject timing with and without the line-side view, one run after the other on the same machine:
# `partguard bench --line` on the shipped example's folder at 30 and 60 parts/s, first as shipped,
# then with [http] (the page open in headless Chromium, polling; /metrics scraped every 100 ms by
# curl) and [mqtt] (every part published to a local mosquitto, a subscriber reading them all).
#
#   bash benches/line_with_telemetry.sh [SECONDS_PER_RATE]      (default 20)
#
# Needs a release build (cargo build --release), chromium, mosquitto, mosquitto-clients and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
bin="$PWD/target/release/partguard"
tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt_port="$(free_port)"

# The shipped example with absolute paths, looping (bench --line paces it at each rate).
sed -e "s|path = \"samples/bottle\"|path = \"$PWD/examples/samples/bottle\"|" \
    -e "s|\"../models/|\"$PWD/models/|" examples/partguard.toml > "$tmp/plain.toml"
cp "$tmp/plain.toml" "$tmp/telemetry.toml"
cat >> "$tmp/telemetry.toml" <<EOF

[http]
listen = "127.0.0.1:0"

[mqtt]
broker = "mqtt://127.0.0.1:$mqtt_port"
topic_prefix = "bench"
qos = 1
status_interval_s = 1.0
EOF

args=(bench --line --rates 30,60 --seconds "$seconds")
echo "== without telemetry"
RUST_LOG=error "$bin" --config "$tmp/plain.toml" "${args[@]}"

echo "== with the page polled by Chromium, /metrics every 100 ms, MQTT every part"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" > "$tmp/mosquitto.conf"
/usr/sbin/mosquitto -c "$tmp/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)
sleep 0.5
mosquitto_sub -p "$mqtt_port" -q 1 -t 'bench/part' > "$tmp/parts.txt" & pids+=($!)
RUST_LOG=info "$bin" --config "$tmp/telemetry.toml" "${args[@]}" > "$tmp/bench.txt" 2> "$tmp/bench.err" &
bench_pid=$!
pids+=("$bench_pid")
addr=""
for _ in $(seq 600); do
    addr="$(grep -o 'telemetry on: page http://[0-9.:]*' "$tmp/bench.txt" | sed 's|.*http://||' || true)"
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/bench.err"; echo "bench never served the page"; exit 1; }
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$tmp/chromium" --remote-debugging-port=0 "http://$addr/" >/dev/null 2>&1 &
pids+=($!)
( while kill -0 "$bench_pid" 2>/dev/null; do curl -s -o /dev/null "http://$addr/metrics"; sleep 0.1; done ) &
pids+=($!)
wait "$bench_pid"
cat "$tmp/bench.txt"
sleep 1
echo "MQTT part messages received by the subscriber: $(wc -l < "$tmp/parts.txt")"
grep -h "\[mqtt\] part results" "$tmp/bench.err" || true
