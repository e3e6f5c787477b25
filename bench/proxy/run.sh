#!/usr/bin/env bash
# Proxy overhead on loopback: the same small Buddy GET sent directly to the simulator,
# through nginx (proxy_pass with the same bearer-token injection, keep-alive upstream)
# and through cigate's /custom and /proxy, plus cigate's unified single-object get of
# the same project, at the same concurrency, in one run.
#
#   bench/proxy/run.sh            # needs: wrk, nginx (apt-get install wrk nginx-light), python3
#
# Two set-ups, one after the other in the same run (MODES, default "defaults pinned"):
#   defaults  what a user runs: `cigate serve` with no tuning (its default runtime,
#             workers and log level), nothing pinned; wrk, the simulator and the proxy
#             share the machine's cores. nginx: one worker, `access_log off`.
#   pinned    the proxy under test alone on PROXY_CORE (1), the simulator and wrk on
#             LOAD_CORE (0); cigate with TOKIO_WORKER_THREADS=1 CIGATE_WORKERS=1
#             CIGATE_LOG=warn, nginx with one worker.
# Tunables (environment): CONNS (throughput phase, 50), DURATION (10s), ROUNDS (3: runs of
# each path per concurrency, interleaved; the report gives medians), BIG_CONNS (1000),
# PATHS (default "direct nginx custom proxy unified"), PROFILE (dist; built first), or BIN
# (a cigate binary to measure as it is).
# Prints a Markdown report on stdout; logs go to $WORK (printed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONNS=${CONNS:-50}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
BIG_CONNS=${BIG_CONNS:-1000}
PROXY_CORE=${PROXY_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
MODES=${MODES:-defaults pinned}
PATHS=${PATHS:-direct nginx custom proxy unified}
PROFILE=${PROFILE:-dist}
SIM_PORT=${SIM_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}
CIGATE_PORT=${CIGATE_PORT:-18183}
WORK=$(mktemp -d /tmp/cigate-proxy-bench.XXXXXX)
if [ -z "${BIN:-}" ]; then
  BIN="$ROOT/target/$PROFILE/cigate"
  [ "$PROFILE" = dev ] && BIN="$ROOT/target/debug/cigate"
  BUILD=1
fi
TICKS=$(getconf CLK_TCK)
ALL_CORES="0-$(($(nproc) - 1))"
ulimit -n 65536 2>/dev/null || ulimit -n 4096

for tool in wrk nginx python3 curl taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -n "${BUILD:-}" ] && (cd "$ROOT" && cargo build --profile "$PROFILE" -p cigate >&2)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

BUDDY_TOKEN="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$BIN" sim --listen "127.0.0.1:$SIM_PORT" --rate-limit 100000000/3600 \
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

# cigate: a fresh SQLite store and one API token; the account is linked once.
export CIGATE_DATABASE_URL="sqlite://$WORK/cigate.db?mode=rwc" CIGATE_KEY_FILE="$WORK/cigate.key"
"$BIN" migrate >/dev/null 2>&1 || true
API_TOKEN=$("$BIN" api-token create 2>/dev/null | tail -1)
CIGATE="http://127.0.0.1:$CIGATE_PORT"
ACCOUNT=

# start_mode MODE: (re)starts nginx and cigate as MODE runs them; sets NGINX_PID, CIGATE_PID.
start_mode() {
  local mode=$1 pin=()
  [ -n "${NGINX_PID:-}" ] && { kill "$NGINX_PID" "$CIGATE_PID"; wait "$NGINX_PID" "$CIGATE_PID" 2>/dev/null || true; }
  if [ "$mode" = pinned ]; then
    pin=(taskset -c "$PROXY_CORE")
    taskset -a -p -c "$LOAD_CORE" "$SIM_PID" >/dev/null
  else
    taskset -a -p -c "$ALL_CORES" "$SIM_PID" >/dev/null
  fi
  "${pin[@]}" nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx-$mode.log" 2>&1 &
  NGINX_PID=$!; PIDS+=("$NGINX_PID")
  if [ "$mode" = pinned ]; then
    TOKIO_WORKER_THREADS=1 CIGATE_WORKERS=1 CIGATE_LOG=warn "${pin[@]}" "$BIN" serve \
      --listen "127.0.0.1:$CIGATE_PORT" --allow-private-upstreams >"$WORK/cigate-$mode.log" 2>&1 &
  else
    "$BIN" serve --listen "127.0.0.1:$CIGATE_PORT" --allow-private-upstreams >"$WORK/cigate-$mode.log" 2>&1 &
  fi
  CIGATE_PID=$!; PIDS+=("$CIGATE_PID")
  wait_http "http://127.0.0.1:$NGINX_PORT$BUDDY_PATH"
  wait_http "$CIGATE/healthz"
  if [ -z "$ACCOUNT" ]; then
    ACCOUNT=$(curl -s -H "Authorization: Bearer $API_TOKEN" -H 'content-type: application/json' \
      -d "{\"tenant_id\":\"bench\",\"integration\":\"buddy\",\"context\":{\"api_key\":\"$BUDDY_TOKEN\",\"base_url\":\"$SIM\"}}" \
      "$CIGATE/integrated-account" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  fi
  D="$SIM$BUDDY_PATH"; N="http://127.0.0.1:$NGINX_PORT$BUDDY_PATH"
  C="$CIGATE/custom$BUDDY_PATH?integrated_account_id=$ACCOUNT"; P="$CIGATE/proxy$BUDDY_PATH?integrated_account_id=$ACCOUNT"
  U="$CIGATE/unified/ci-cd/repos/$PROJECT?integrated_account_id=$ACCOUNT&workspace=$WS"
  # Every path answers 200 before anything is measured, the pass-throughs with Buddy's body.
  local direct_body body url
  direct_body=$(curl -s -H "Authorization: Bearer $BUDDY_TOKEN" "$D")
  for url in "$N" "$C" "$P"; do
    body=$(curl -sf -H "Authorization: Bearer $API_TOKEN" "$url")
    [ "$body" = "$direct_body" ] || { echo "body differs via $url" >&2; exit 1; }
  done
  curl -sf -o /dev/null -H "Authorization: Bearer $API_TOKEN" "$U" || { echo "no unified get: $U" >&2; exit 1; }
}

cpu_ticks() { # utime+stime of a process and its children threads/processes (nginx workers)
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

# run MODE NAME URL AUTH CONNS DURATION PID -> one line: mode name conns rps p50 p99 requests cpu_s non2xx
run() {
  local mode=$1 name=$2 url=$3 auth=$4 conns=$5 dur=$6 pid=$7 out before after load=()
  [ "$mode" = pinned ] && load=(taskset -c "$LOAD_CORE")
  "${load[@]}" wrk -t1 -c"$conns" -d2s -H "Authorization: Bearer $auth" "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$("${load[@]}" wrk -t1 -c"$conns" -d"$dur" --latency -H "Authorization: Bearer $auth" "$url")
  after=$(cpu_ticks "$pid")
  echo "$out" >"$WORK/wrk-$mode-$name-$conns.txt"
  python3 - "$mode" "$name" "$conns" "$before" "$after" "$TICKS" <<PY
import re, sys
mode, name, conns, before, after, ticks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
out = """$out"""
def us(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
cpu = (after - before) / ticks
print(mode, name, conns, rps, us(lat["50"]), us(lat["99"]), reqs, cpu, errs.group(1) if errs else 0)
PY
}

# path NAME -> "URL AUTH PID" of that path in the current mode
path() {
  case $1 in
    direct) echo "$D $BUDDY_TOKEN $SIM_PID" ;;
    nginx) echo "$N unused $NGINX_PID" ;;
    custom) echo "$C $API_TOKEN $CIGATE_PID" ;;
    proxy) echo "$P $API_TOKEN $CIGATE_PID" ;;
    unified) echo "$U $API_TOKEN $CIGATE_PID" ;;
  esac
}

if [ -n "${HOLD:-}" ]; then # keep one mode up for profiling by hand
  start_mode "${MODES%% *}"
  printf 'D=%q\nN=%q\nC=%q\nP=%q\nU=%q\nAPI_TOKEN=%q\nBUDDY_TOKEN=%q\nCIGATE_PID=%q\nNGINX_PID=%q\nSIM_PID=%q\n' \
    "$D" "$N" "$C" "$P" "$U" "$API_TOKEN" "$BUDDY_TOKEN" "$CIGATE_PID" "$NGINX_PID" "$SIM_PID" >"$HOLD"
  sleep infinity
fi

HWM_LINES=()
for mode in $MODES; do
  start_mode "$mode"
  {
    # Rounds interleave the paths, so a slow spell of the (shared, virtual) machine
    # hits all of them alike; the report takes each path's median.
    for conns in 1 "$CONNS"; do
      for _ in $(seq "$ROUNDS"); do
        for name in $PATHS; do
          # shellcheck disable=SC2046
          run "$mode" "$name" $(path "$name" | awk '{print $1, $2}') "$conns" "$DURATION" $(path "$name" | awk '{print $3}')
        done
      done
    done
    for name in $PATHS; do
      [ "$name" = direct ] && continue
      # shellcheck disable=SC2046
      run "$mode" "$name" $(path "$name" | awk '{print $1, $2}') "$BIG_CONNS" "$DURATION" $(path "$name" | awk '{print $3}')
    done
  } >>"$WORK/results.txt"
  HWM_LINES+=("$mode $(awk '/VmHWM/ {print $2}' "/proc/$CIGATE_PID/status") $(for p in $(pgrep -P "$NGINX_PID"); do awk '/VmHWM/ {print $2}' "/proc/$p/status"; done | sort -n | tail -1)")
done
printf '%s\n' "${HWM_LINES[@]}" >"$WORK/hwm.txt"

python3 - "$WORK/results.txt" "$WORK/hwm.txt" "$BUDDY_PATH" "$CONNS" "$DURATION" "$BIG_CONNS" "$ROUNDS" "$(nproc)" <<'PY'
import statistics, sys
path, hwm_path, buddy_path, conns, dur, big, rounds, cores = sys.argv[1:9]
runs = {}
for l in open(path):
    if l.strip():
        r = l.split()
        n, cpu = int(r[6]), float(r[7])
        runs.setdefault((r[0], r[1], r[2]), []).append(dict(rps=float(r[3]), p50=float(r[4]), p99=float(r[5]),
            cpu10k=cpu / n * 10000 if n else float("nan"), errors=int(r[8])))
# Each figure is the median over the rounds (errors: the sum).
R = {key: {f: (sum(x[f] for x in rs) if f == "errors" else statistics.median(x[f] for x in rs))
           for f in rs[0]} | {"spread": (min(x["cpu10k"] for x in rs), max(x["cpu10k"] for x in rs))}
     for key, rs in runs.items()}
hwm = {l.split()[0]: l.split()[1:] for l in open(hwm_path) if l.strip()}
modes = list(dict.fromkeys(k[0] for k in R))
print(f"Request: `GET {buddy_path}` (one project, ~1 KiB JSON); `unified` is "
      f"`GET /unified/ci-cd/repos/<project>` of the same project. wrk -t1, {dur} per run after a 2 s "
      f"warm-up; {rounds} interleaved rounds at 1 and {conns} connections (medians; CPU range in "
      f"brackets), one at {big}. {cores} cores.\n")
def get(mode, name, c):
    return R.get((mode, name, str(c)))
for mode in modes:
    what = {"defaults": "`cigate serve` as a user runs it (no tuning), nothing pinned",
            "pinned": "proxy alone on one core, one worker, `CIGATE_LOG=warn`; wrk and the simulator on the other"}.get(mode, mode)
    print(f"### {mode}: {what}\n")
    print("| path | conns | req/s | p50 µs | p99 µs | proxy CPU s / 10k req | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (m, name, c), r in R.items():
        if m != mode:
            continue
        lo, hi = r["spread"]
        cpu = "—" if name == "direct" else f"{r['cpu10k']:.3f}" + (f" [{lo:.3f}–{hi:.3f}]" if lo != hi else "")
        print(f"| {name} | {c} | {r['rps']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} | {cpu} | {r['errors']} |")
    d = get(mode, "direct", conns)
    if d:
        print(f"\n(direct: the simulator's own CPU is not a proxy cost; its CPU s/10k at {conns} conns = {d['cpu10k']:.3f})")
    n, d1 = get(mode, "nginx", conns), get(mode, "direct", 1)
    print("\n| ratio | /custom | /proxy | unified get | target |")
    print("|---|---:|---:|---:|---|")
    def row(label, f, target, names=("custom", "proxy", "unified")):
        cells = []
        for name in ("custom", "proxy", "unified"):
            try:
                cells.append(f"{f(name):.2f}" if name in names else "")
            except (TypeError, KeyError, ZeroDivisionError):
                cells.append("—")
        print(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    if n:
        row(f"CPU per request vs nginx ({conns} conns)", lambda x: get(mode, x, conns)["cpu10k"] / n["cpu10k"], "≤ 1.0 (unified ≤ 3.0)")
        row(f"throughput vs nginx ({conns} conns)", lambda x: get(mode, x, conns)["rps"] / n["rps"], "≥ 1.0", ("custom", "proxy"))
    if d1:
        row("added p50 over direct (1 conn), µs", lambda x: get(mode, x, 1)["p50"] - d1["p50"], "≤ 50")
        if get(mode, "nginx", 1):
            print(f"| nginx added p50 over direct (1 conn), µs | {get(mode, 'nginx', 1)['p50'] - d1['p50']:.0f} | | | |")
    row(f"CPU per request at {big} vs at {conns} conns", lambda x: get(mode, x, big)["cpu10k"] / get(mode, x, conns)["cpu10k"], "≤ 1.2")
    if n and get(mode, "nginx", big):
        print(f"| nginx: CPU per request at {big} vs at {conns} conns | {get(mode, 'nginx', big)['cpu10k'] / n['cpu10k']:.2f} | | | |")
    if mode in hwm:
        c_hwm, n_hwm = (hwm[mode] + ["0", "0"])[:2]
        print(f"\ncigate peak RSS (VmHWM) after {big} connections: {int(c_hwm)/1024:.1f} MiB (target ≤ 48 MiB); "
              f"nginx worker: {int(n_hwm or 0)/1024:.1f} MiB\n")
PY
echo "(logs and raw wrk output: $WORK)" >&2
