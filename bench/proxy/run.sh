#!/usr/bin/env bash
# Proxy overhead on loopback: the same small Buddy GET sent directly to the simulator,
# through nginx (proxy_pass with the same bearer-token injection, keep-alive upstream)
# and through cigate's /custom and /proxy, at the same concurrency, in one run.
#
#   bench/proxy/run.sh            # needs: wrk, nginx (apt-get install wrk nginx-light), python3
#
# Tunables (environment): CONNS (throughput phase, 50), DURATION (10s), ROUNDS (3: runs of
# each path per concurrency, interleaved; the report gives medians), BIG_CONNS (1000),
# PROXY_CORE (1) and LOAD_CORE (0): the proxy under test runs alone on PROXY_CORE, the
# simulator and wrk share LOAD_CORE. cigate and nginx each get one worker.
# Prints a Markdown report on stdout; logs go to $WORK (printed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONNS=${CONNS:-50}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
BIG_CONNS=${BIG_CONNS:-1000}
PROXY_CORE=${PROXY_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
SIM_PORT=${SIM_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
CIGATE_PORT=${CIGATE_PORT:-18183}
WORK=$(mktemp -d /tmp/cigate-proxy-bench.XXXXXX)
BIN="$ROOT/target/dist/cigate"
TICKS=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || ulimit -n 4096

for tool in wrk nginx python3 curl taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --profile dist -p cigate >&2)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

BUDDY_TOKEN="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
taskset -c "$LOAD_CORE" "$BIN" sim --listen "127.0.0.1:$SIM_PORT" --rate-limit 100000000/3600 \
  --token "$BUDDY_TOKEN" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!; PIDS+=("$SIM_PID")
SIM="http://127.0.0.1:$SIM_PORT"
wait_http "$SIM/"

WS=$(curl -s -H "Authorization: Bearer $BUDDY_TOKEN" "$SIM/workspaces" | python3 -c 'import json,sys; print(json.load(sys.stdin)["workspaces"][0]["domain"])')
PROJECT=$(curl -s -H "Authorization: Bearer $BUDDY_TOKEN" "$SIM/workspaces/$WS/projects" | python3 -c 'import json,sys; print(json.load(sys.stdin)["projects"][0]["name"])')
BUDDY_PATH="/workspaces/$WS/projects/$PROJECT"

# nginx: one worker, keep-alive to the upstream, the account's token injected.
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  upstream buddy { server 127.0.0.1:$SIM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://buddy;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $BUDDY_TOKEN";
    }
  }
}
CONF
taskset -c "$PROXY_CORE" nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT$BUDDY_PATH"

# cigate: a fresh SQLite store, one API token, the simulator's account linked.
export CIGATE_DATABASE_URL="sqlite://$WORK/cigate.db?mode=rwc" CIGATE_KEY_FILE="$WORK/cigate.key"
"$BIN" migrate >/dev/null 2>&1 || true
API_TOKEN=$("$BIN" api-token create 2>/dev/null | tail -1)
TOKIO_WORKER_THREADS=1 CIGATE_LOG=${CIGATE_LOG:-warn} taskset -c "$PROXY_CORE" "$BIN" serve \
  --listen "127.0.0.1:$CIGATE_PORT" --allow-private-upstreams >"$WORK/cigate.log" 2>&1 &
CIGATE_PID=$!; PIDS+=("$CIGATE_PID")
CIGATE="http://127.0.0.1:$CIGATE_PORT"
wait_http "$CIGATE/healthz"
ACCOUNT=$(curl -s -H "Authorization: Bearer $API_TOKEN" -H 'content-type: application/json' \
  -d "{\"tenant_id\":\"bench\",\"integration\":\"buddy\",\"context\":{\"api_key\":\"$BUDDY_TOKEN\",\"base_url\":\"$SIM\"}}" \
  "$CIGATE/integrated-account" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

# Every path answers 200 with the same body before anything is measured.
direct_body=$(curl -s -H "Authorization: Bearer $BUDDY_TOKEN" "$SIM$BUDDY_PATH")
for url in "http://127.0.0.1:$NGINX_PORT$BUDDY_PATH" \
  "$CIGATE/custom$BUDDY_PATH?integrated_account_id=$ACCOUNT" "$CIGATE/proxy$BUDDY_PATH?integrated_account_id=$ACCOUNT"; do
  body=$(curl -sf -H "Authorization: Bearer $API_TOKEN" "$url")
  [ "$body" = "$direct_body" ] || { echo "body differs via $url" >&2; exit 1; }
done

if [ -n "${HOLD:-}" ]; then # keep everything up for profiling by hand
  printf 'D=%q\nN=%q\nC=%q\nP=%q\nAPI_TOKEN=%q\nBUDDY_TOKEN=%q\nCIGATE_PID=%q\nSIM_PID=%q\n' \
    "$SIM$BUDDY_PATH" "http://127.0.0.1:$NGINX_PORT$BUDDY_PATH" \
    "$CIGATE/custom$BUDDY_PATH?integrated_account_id=$ACCOUNT" "$CIGATE/proxy$BUDDY_PATH?integrated_account_id=$ACCOUNT" \
    "$API_TOKEN" "$BUDDY_TOKEN" "$CIGATE_PID" "$SIM_PID" >"$HOLD"
  sleep infinity
fi

cpu_ticks() { # utime+stime of a process and its children threads/processes (nginx workers)
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

# run NAME URL AUTH CONNS DURATION PID -> one line: name conns rps p50 p99 requests cpu_s
run() {
  local name=$1 url=$2 auth=$3 conns=$4 dur=$5 pid=$6 out before after
  taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d2s -H "Authorization: Bearer $auth" "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"$dur" --latency -H "Authorization: Bearer $auth" "$url")
  after=$(cpu_ticks "$pid")
  echo "$out" >"$WORK/wrk-$name-$conns.txt"
  python3 - "$name" "$conns" "$before" "$after" "$TICKS" <<PY
import re, sys
name, conns, before, after, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
out = """$out"""
def us(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
cpu = (after - before) / ticks
print(name, conns, rps, us(lat["50"]), us(lat["99"]), reqs, cpu, errs.group(1) if errs else 0)
PY
}

D="$SIM$BUDDY_PATH"; N="http://127.0.0.1:$NGINX_PORT$BUDDY_PATH"
C="$CIGATE/custom$BUDDY_PATH?integrated_account_id=$ACCOUNT"; P="$CIGATE/proxy$BUDDY_PATH?integrated_account_id=$ACCOUNT"
{
  # Rounds interleave the four paths, so a slow spell of the (shared, virtual) machine
  # hits all of them alike; the report takes each path's median.
  for conns in 1 "$CONNS"; do
    for _ in $(seq "$ROUNDS"); do
      run direct "$D" "$BUDDY_TOKEN" "$conns" "$DURATION" "$SIM_PID"
      run nginx "$N" unused "$conns" "$DURATION" "$NGINX_PID"
      run cigate-custom "$C" "$API_TOKEN" "$conns" "$DURATION" "$CIGATE_PID"
      run cigate-proxy "$P" "$API_TOKEN" "$conns" "$DURATION" "$CIGATE_PID"
    done
  done
  run cigate-custom "$C" "$API_TOKEN" "$BIG_CONNS" "$DURATION" "$CIGATE_PID"
  run cigate-proxy "$P" "$API_TOKEN" "$BIG_CONNS" "$DURATION" "$CIGATE_PID"
} >"$WORK/results.txt"
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$CIGATE_PID/status")
NGINX_HWM=$(for p in $(pgrep -P "$NGINX_PID"); do awk '/VmHWM/ {print $2}' "/proc/$p/status"; done | sort -n | tail -1)

python3 - "$WORK/results.txt" "$HWM" "$NGINX_HWM" "$BUDDY_PATH" "$CONNS" "$DURATION" "$BIG_CONNS" "$ROUNDS" <<'PY'
import statistics, sys
path, hwm, nginx_hwm, buddy_path, conns, dur, big, rounds = sys.argv[1:9]
runs = {}
for l in open(path):
    if l.strip():
        r = l.split()
        n, cpu = int(r[5]), float(r[6])
        runs.setdefault((r[0], r[1]), []).append(dict(rps=float(r[2]), p50=float(r[3]), p99=float(r[4]),
            cpu10k=cpu / n * 10000 if n else float("nan"), errors=int(r[7])))
# Each figure is the median over the rounds (errors: the sum).
R = {key: {f: (sum(x[f] for x in rs) if f == "errors" else statistics.median(x[f] for x in rs))
           for f in rs[0]} | {"spread": (min(x["cpu10k"] for x in rs), max(x["cpu10k"] for x in rs))}
     for key, rs in runs.items()}
def cpu10k(r): return r["cpu10k"]
print(f"Request: `GET {buddy_path}` (one project, ~1 KiB JSON). wrk -t1, {dur} per run after a 2 s warm-up; "
      f"{rounds} interleaved rounds at 1 and {conns} connections (medians; CPU range in brackets), one at {big}.\n")
print("| path | conns | req/s | p50 µs | p99 µs | proxy CPU s / 10k req | non-2xx |")
print("|---|---:|---:|---:|---:|---:|---:|")
for (name, c), r in R.items():
    lo, hi = r["spread"]
    cpu = "—" if name == "direct" else f"{cpu10k(r):.3f}" + (f" [{lo:.3f}–{hi:.3f}]" if lo != hi else "")
    print(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {cpu} | {r['errors']} |")
print(f"\n(direct: the simulator's own CPU is not a proxy cost; its CPU s/10k at {conns} conns = {cpu10k(R[('direct', conns)]):.3f})\n")
print("| ratio | /custom | /proxy | target |")
print("|---|---:|---:|---|")
n = R[("nginx", conns)]
for label, f, target in [
    (f"CPU per request vs nginx ({conns} conns)", lambda r: cpu10k(r) / cpu10k(n), "≤ 1.5"),
    (f"throughput vs nginx ({conns} conns)", lambda r: r["rps"] / n["rps"], "≥ 0.9"),
    (f"throughput vs direct ({conns} conns)", lambda r: r["rps"] / R[("direct", conns)]["rps"], "—"),
]:
    print(f"| {label} | {f(R[('cigate-custom', conns)]):.2f} | {f(R[('cigate-proxy', conns)]):.2f} | {target} |")
d1 = R[("direct", "1")]["p50"]
print(f"| added p50 over direct (1 conn), µs | {R[('cigate-custom', '1')]['p50'] - d1:.0f} | {R[('cigate-proxy', '1')]['p50'] - d1:.0f} | ≤ 150 |")
print(f"| nginx added p50 over direct (1 conn), µs | {R[('nginx', '1')]['p50'] - d1:.0f} | | |")
print(f"\ncigate peak RSS (VmHWM) after {big} connections: {int(hwm)/1024:.1f} MiB (target ≤ 64 MiB); nginx worker: {int(nginx_hwm)/1024:.1f} MiB")
PY
echo "(logs and raw wrk output: $WORK)" >&2
