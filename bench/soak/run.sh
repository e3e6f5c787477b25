#!/usr/bin/env bash
# The soak: two `cigate serve` instances on one PostgreSQL database, DURATION seconds of
# mixed traffic spread over both (unified reads, proxied reads, job runs sent twice with
# one Idempotency-Key, each time to a different instance), job events delivered to a
# receiver that refuses one delivery in ten, and about 5 % of the simulator's answers
# replaced by faults (503s, 500s, dropped connections, bodies cut in the middle).
# Samples both servers' RSS and open file descriptors; at the end waits for the outbox
# to drain and checks what reached the receiver and what ran at Buddy. Prints a
# Markdown report on stdout (bench/soak/soak.py says what each line means).
#
#   bench/soak/run.sh                 # 30 minutes; needs python3, curl, PostgreSQL at $PG
#   DURATION=120 bench/soak/run.sh    # a quick look
#
# Tunables (environment): PG (postgres://postgres@127.0.0.1:5432/test), DURATION (1800),
# CLIENTS (4), FAULT_RATE (0.05), PROFILE (release: what `cargo run --release` builds),
# PORT_BASE (18381). Logs go to $WORK (printed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
PROFILE=${PROFILE:-release}
PORT_BASE=${PORT_BASE:-18381}
WORK=$(mktemp -d /tmp/cigate-soak.XXXXXX)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/cigate"
echo "logs: $WORK" >&2

for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --profile "$PROFILE" -p cigate >&2)

PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop_all EXIT
wait_http() { for _ in $(seq 400); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

export CIGATE_MASTER_KEY
CIGATE_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
token="soak-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
sim_port=$PORT_BASE
# A budget far beyond the traffic: the soak is about faults, not Buddy's rate limit.
"$BIN" sim --listen "127.0.0.1:$sim_port" --rate-limit 100000000/3600 --token "$token" \
  >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
sim="http://127.0.0.1:$sim_port"
wait_http "$sim/__sim/health"

export CIGATE_DATABASE_URL=$PG CIGATE_DATABASE_SCHEMA="soak_$$"
"$BIN" migrate >"$WORK/migrate.log" 2>&1
api_token=$("$BIN" api-token create)
urls=() pids=()
for i in 1 2; do
  port=$((PORT_BASE + i))
  # The defaults of `cigate serve`, but for what the soak needs: private upstreams (the
  # simulator), job events polled every 2 s (so runs make events), and a retry schedule
  # short enough that refused deliveries are retried within the run.
  CIGATE_LISTEN="127.0.0.1:$port" CIGATE_ALLOW_PRIVATE_UPSTREAMS=true \
    CIGATE_EVENT_POLL_INTERVAL=2s CIGATE_WEBHOOK_RETRY_SCHEDULE=1s,2s,5s,10s,20s,30s \
    "$BIN" serve >"$WORK/serve-$i.log" 2>&1 &
  PIDS+=($!)
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
  wait_http "http://127.0.0.1:$port/readyz"
done

python3 "$ROOT/bench/soak/soak.py" --token "$api_token" --buddy-token "$token" --sim "$sim" \
  --urls "${urls[@]}" --pids "${pids[@]}" --duration "${DURATION:-1800}" \
  --clients "${CLIENTS:-4}" --fault-rate "${FAULT_RATE:-0.05}" --port "$((PORT_BASE + 10))" \
  --profile "$PROFILE"
status=$?
stop_all
if command -v psql >/dev/null; then
  psql -q "$PG" -c "DROP SCHEMA \"$CIGATE_DATABASE_SCHEMA\" CASCADE" >/dev/null 2>&1 || true
fi
exit $status
