#!/usr/bin/env bash
# CPU a worker uses at fixed live rates (idle, then 100, 300 and 1,000 events/s for 30 s
# each), read from /proc/PID/stat: what README's Sizing quotes. Needs a broker at
# SESSIONWATCH_BOOTSTRAP_SERVERS (default 127.0.0.1:9092; deploy/kafka/broker.py start),
# and uses topics and an app id of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
tag=cpu-$$-$RANDOM
export SESSIONWATCH_KEY=${SESSIONWATCH_KEY:-bench-key} SESSIONWATCH_APP_ID=$tag
export SESSIONWATCH_TOPIC_EVENTS=$tag-events SESSIONWATCH_TOPIC_ALERTS=$tag-alerts
export SESSIONWATCH_TOPIC_ACTIONS=$tag-actions SESSIONWATCH_TOPIC_DLQ=$tag-dlq
sw=.venv/bin/sessionwatch
$sw simulate --users 400 --hours 24 -o "$tmp/day.jsonl" >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$sw worker -q --data-dir "$tmp/data" --web-port "$port" >"$tmp/worker.log" 2>&1 &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null; rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$worker/stat"; }
sleep 25  # joins the group, creates its topics
c0=$(cpu); sleep 20; c1=$(cpu)
python3 -c "print(f'idle: {100 * ($c1 - $c0) / $hz / 20:.0f} % of a core')"
for rate in 100 300 1000; do
  n=$((rate * 30))
  head -n "$n" "$tmp/day.jsonl" >"$tmp/part.jsonl"
  c0=$(cpu); s0=$(date +%s.%N)
  $sw produce --rate "$rate" "$tmp/part.jsonl" >/dev/null 2>&1
  sleep 1  # the last events' processing
  c1=$(cpu); s1=$(date +%s.%N)
  python3 -c "
c, d = ($c1 - $c0) / $hz, $s1 - $s0
print(f'{$rate:>5} events/s: {100 * c / d:.0f} % of a core, {1000 * c / $n:.2f} ms of CPU per event')"
done
