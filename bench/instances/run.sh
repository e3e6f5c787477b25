#!/usr/bin/env bash
# Several `cigate serve` processes on one PostgreSQL database sharing one Buddy account's
# rate budget: CALLS proxied GETs from 20 clients spread round-robin over 1, 2 and 3
# instances, against the simulator at 20 per 10 s with the reading an independent Buddy
# chose (window opened by the token's first request, reset floored to whole seconds,
# over-budget calls answered 429 and not counted), once per budget setting
# (CIGATE_RATE_BUDGET: `auto`, the default, is `shared` on PostgreSQL; `local` is the
# per-process governor). Event polling is off so only the measured calls spend budget.
#
#   bench/instances/run.sh     # needs: python3, curl, PostgreSQL at $PG
#
# Tunables (environment): PG (postgres://postgres@127.0.0.1:5432/test), CALLS (60),
# MODES ("auto local"), COUNTS ("1 2 3"), PORT_BASE (18281).
# Prints one Markdown table row per run on stdout; logs go to $WORK (printed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PG=${PG:-postgres://postgres@127.0.0.1:5432/test}
CALLS=${CALLS:-60}
MODES=${MODES:-auto local}
COUNTS=${COUNTS:-1 2 3}
PORT_BASE=${PORT_BASE:-18281}
WORK=$(mktemp -d /tmp/cigate-instances-bench.XXXXXX)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/dist/cigate"
echo "logs: $WORK" >&2

for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --profile dist -p cigate >&2)

PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop_all EXIT

wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

export CIGATE_MASTER_KEY
CIGATE_MASTER_KEY=$(head -c 32 /dev/urandom | base64)

echo "| budget | instances | calls | throttled by Buddy | failed | elapsed | budget used |"
echo "|---|---:|---:|---:|---:|---:|---:|"
run=0
for mode in $MODES; do
  for n in $COUNTS; do
    run=$((run + 1))
    sim_port=$PORT_BASE
    token="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    "$BIN" sim --listen "127.0.0.1:$sim_port" --rate-limit 20/10 --token "$token" \
      >"$WORK/sim-$run.log" 2>&1 &
    PIDS+=($!)
    sim="http://127.0.0.1:$sim_port"
    wait_http "$sim/__sim/health"

    export CIGATE_DATABASE_URL=$PG CIGATE_DATABASE_SCHEMA="bench_instances_${$}_$run"
    "$BIN" migrate >"$WORK/migrate-$run.log" 2>&1
    api_token=$("$BIN" api-token create)
    urls=()
    for i in $(seq "$n"); do
      port=$((PORT_BASE + i))
      CIGATE_LISTEN="127.0.0.1:$port" CIGATE_ALLOW_PRIVATE_UPSTREAMS=true \
        CIGATE_RATE_BUDGET=$mode CIGATE_EVENT_POLL_INTERVAL=0 CIGATE_LOG=warn \
        "$BIN" serve >"$WORK/serve-$run-$i.log" 2>&1 &
      PIDS+=($!)
      urls+=("http://127.0.0.1:$port")
      wait_http "http://127.0.0.1:$port/healthz"
    done

    account=$(curl -sf -X POST "${urls[0]}/integrated-account" \
      -H "Authorization: Bearer $api_token" -H 'Content-Type: application/json' \
      -d "{\"tenant_id\":\"bench\",\"integration\":\"buddy\",\"authentication_method\":\"api_key\",\"context\":{\"api_key\":\"$token\",\"base_url\":\"$sim\"}}" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    # Linking spent a few units of the first window; count from here.
    curl -sf -X DELETE "$sim/__sim/requests" >/dev/null

    python3 - "$CALLS" "$api_token" "$account" "$sim" "$mode" "$n" "${urls[@]}" <<'PY'
import json, sys, threading, time, urllib.request, urllib.error
calls, token, account, sim, mode, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
urls = sys.argv[7:]
lock = threading.Lock()
state = {"next": 0, "failed": 0}
def client(i):
    base = urls[i % len(urls)]
    while True:
        with lock:
            if state["next"] >= calls:
                return
            state["next"] += 1
        req = urllib.request.Request(f"{base}/proxy/workspaces?integrated_account_id={account}",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
        except Exception:
            with lock:
                state["failed"] += 1
start = time.monotonic()
threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - start
with urllib.request.urlopen(f"{sim}/__sim/requests") as r:
    throttled = json.load(r)["throttled"]
used = 100.0 * calls / elapsed / 2.0  # 20 per 10 s = 2 per second
print(f"| {mode} | {n} | {calls} | {throttled} | {state['failed']} | {elapsed:.1f} s | {used:.1f} % |", flush=True)
PY
    stop_all
    if command -v psql >/dev/null; then
      psql -q "$PG" -c "DROP SCHEMA \"$CIGATE_DATABASE_SCHEMA\" CASCADE" >/dev/null 2>&1 || true
    fi
  done
done
