"""The soak's traffic, fault injection, sampling and checks (started by run.sh).

Clients spread over the instances round-robin, each call chosen by weight:
  unified reads   45 %  workspaces, repos, workflows, a job page, one job
  proxied reads   35 %  GET /proxy/workspaces/{ws}/projects
  job runs        20 %  POST /unified/ci-cd/jobs with an Idempotency-Key, sent again to
                        the other instance: both answers must name the same job
A fault injector watches the simulator's request count and, for FAULT_RATE of the
requests it served since it last looked, queues faults (cycling through a 503, a 500,
a dropped connection and a body cut in the middle) that the next requests get.
Job events go to a webhook receiver here that answers 500 to one delivery attempt in
ten. RSS and open file descriptors of both servers are sampled every 15 s.

Checks (each a line of the report, PASS or FAIL):
  - RSS after warm-up (the first sixth of the run) grows by less than 10 %, per server;
  - open file descriptors stay within 10 % (+8) of their level after warm-up;
  - no call failed beyond the injected faults: every failed call is a 502, 503 or 504
    problem (or a 409 outcome-unknown for a run whose first send met a fault), and
    there are no more of them than faults injected; no connection to cigate failed;
  - every event recorded was delivered: after the traffic stops, the outbox drains (for
    as long as its backlog shrinks), each delivery is `delivered` and reached the
    receiver at least once;
  - a job's events were accepted in the order they were recorded;
  - no duplicate execution: each Idempotency-Key names one job on both instances, and
    Buddy ran no more new jobs than keys were sent.
"""

import argparse
import http.server
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid

p = argparse.ArgumentParser()
p.add_argument("--token", required=True)
p.add_argument("--buddy-token", required=True)
p.add_argument("--sim", required=True)
p.add_argument("--urls", nargs="+", required=True)
p.add_argument("--pids", nargs="+", type=int, required=True)
p.add_argument("--duration", type=int, default=1800)
p.add_argument("--clients", type=int, default=4)
p.add_argument("--fault-rate", type=float, default=0.05)
p.add_argument("--port", type=int, required=True)
p.add_argument("--profile", default="release")
args = p.parse_args()

AUTH = {"Authorization": f"Bearer {args.token}"}
lock = threading.Lock()
stats = {
    "calls": 0, "failed": 0, "unexpected": [], "connection_errors": 0,
    "by_kind": {}, "faults": 0, "runs": 0,
}
keys = {}  # Idempotency-Key -> set of job ids answered


def call(method, url, body=None, headers=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={**AUTH, **(headers or {})})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sim_json(path, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{args.sim}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def buddy(path):
    req = urllib.request.Request(f"{args.sim}{path}", headers={"Authorization": f"Bearer {args.buddy_token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


# ----- set-up ------------------------------------------------------------------------
base = args.urls[0]
status, body = call("POST", f"{base}/integrated-account", {
    "tenant_id": "soak", "integration": "buddy", "authentication_method": "api_key",
    "context": {"api_key": args.buddy_token, "base_url": args.sim},
})
assert status == 201, (status, body)
account = json.loads(body)["id"]
scope = f"integrated_account_id={account}"
ws = json.loads(call("GET", f"{base}/unified/ci-cd/workspaces?{scope}")[1])["result"][0]["id"]
scope += f"&workspace={ws}"
repo = json.loads(call("GET", f"{base}/unified/ci-cd/repos?{scope}")[1])["result"][0]["id"]
scope += f"&repo={repo}"
workflows = json.loads(call("GET", f"{base}/unified/ci-cd/workflows?{scope}")[1])["result"]
# A pipeline that runs through on its own (no approval, no variables to fill in).
workflow = next(w["id"] for w in workflows if "Deploy" not in w["name"] and "Release" not in w["name"])
jobs_path = f"/workspaces/{ws}/projects/{repo}/pipelines/{workflow}/executions"


def buddy_runs():
    total, page = 0, 1
    while True:
        got = buddy(f"{jobs_path}?per_page=50&page={page}").get("executions", [])
        total += len(got)
        if len(got) < 50:
            return total
        page += 1


runs_before = buddy_runs()
first_job = json.loads(call("GET", f"{base}/unified/ci-cd/jobs?{scope}&workflow={workflow}&limit=1")[1])["result"][0]["id"]

received = {}  # webhook-id -> 2xx answers given
accepted = {}  # job id -> the `created_at` of its events, in the order first accepted


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        hook_id = self.headers.get("webhook-id", "")
        refuse = random.random() < 0.1
        self.send_response(500 if refuse else 204)
        self.end_headers()
        if not refuse:
            payload = body["payload"]
            job = payload["job"]["id"] if "job" in payload else payload["id"]
            with lock:
                if hook_id not in received:
                    accepted.setdefault(job, []).append(body["created_at"])
                received[hook_id] = received.get(hook_id, 0) + 1

    def log_message(self, *_):
        pass


receiver = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
status, body = call("POST", f"{base}/webhook", {
    "target_url": f"http://127.0.0.1:{args.port}/hook", "event_types": ["job:*"],
})
assert status == 201, (status, body)
hook = json.loads(body)["id"]

# ----- traffic -------------------------------------------------------------------------
READS = [
    f"/unified/ci-cd/workspaces?integrated_account_id={account}",
    f"/unified/ci-cd/repos?integrated_account_id={account}&workspace={ws}",
    f"/unified/ci-cd/workflows?{scope}",
    f"/unified/ci-cd/jobs?{scope}&workflow={workflow}&limit=20",
    f"/unified/ci-cd/jobs/{first_job}?{scope}&workflow={workflow}",
]
PROXY = f"/proxy/workspaces/{ws}/projects?integrated_account_id={account}"
RUN = f"/unified/ci-cd/jobs?integrated_account_id={account}&workspace={ws}&project={repo}&workflow={workflow}"
EXPECTED_FAILURES = {502, 503, 504}
stop = threading.Event()


def record(kind, status, body):
    with lock:
        stats["calls"] += 1
        stats["by_kind"][kind] = stats["by_kind"].get(kind, 0) + 1
        if status < 400:
            return
        stats["failed"] += 1
        failures = stats.setdefault("failures", {})
        failures[f"{kind} {status}"] = failures.get(f"{kind} {status}", 0) + 1
        outcome_unknown = status == 409 and b"idempotency-outcome-unknown" in body
        if status not in EXPECTED_FAILURES and not outcome_unknown:
            stats["unexpected"].append(f"{kind}: {status} {body[:200]!r}")


def client(i):
    rng = random.Random(i)
    n = i
    while not stop.is_set():
        n += 1
        url = args.urls[n % len(args.urls)]
        other = args.urls[(n + 1) % len(args.urls)]
        roll = rng.random()
        try:
            if roll < 0.45:
                path = rng.choice(READS)
                record("unified", *call("GET", url + path))
            elif roll < 0.80:
                record("proxy", *call("GET", url + PROXY))
            else:
                key = str(uuid.uuid4())
                for target in (url, other):
                    status, body = call("POST", target + RUN, {}, {"Idempotency-Key": key})
                    record("run", status, body)
                    if status == 201:
                        with lock:
                            keys.setdefault(key, set()).add(json.loads(body)["id"])
                with lock:
                    stats["runs"] += 1
        except Exception as e:  # a connection to cigate itself failed
            with lock:
                stats["connection_errors"] += 1
                stats["unexpected"].append(f"connection: {e}")
        time.sleep(0.01)


KINDS = [{"kind": "status", "status": 503}, {"kind": "status", "status": 500},
         {"kind": "reset"}, {"kind": "reset_mid_body"}]


def injector():
    last = sim_json("/__sim/requests")["total"]
    owed, k = 0.0, 0
    while not stop.wait(1.0):
        total = sim_json("/__sim/requests")["total"]
        owed += (total - last) * args.fault_rate
        last = total
        while owed >= 1.0:
            # Buddy's API only (every path of it the soak calls is under /workspaces).
            sim_json("/__sim/faults", "POST", {**KINDS[k % len(KINDS)], "count": 1, "path": "/workspaces"})
            k += 1
            owed -= 1.0
            with lock:
                stats["faults"] += 1


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


samples = []  # (seconds, [rss per pid], [fds per pid])


def sampler(start):
    while True:
        samples.append((time.monotonic() - start,
                        [rss_kib(pid) for pid in args.pids],
                        [len(os.listdir(f"/proc/{pid}/fd")) for pid in args.pids]))
        if stop.wait(15.0):
            return


start = time.monotonic()
threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
threads += [threading.Thread(target=injector), threading.Thread(target=sampler, args=(start,))]
for t in threads:
    t.start()
time.sleep(args.duration)
stop.set()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
samples.append((elapsed, [rss_kib(pid) for pid in args.pids],
                [len(os.listdir(f"/proc/{pid}/fd")) for pid in args.pids]))
sim_json("/__sim/faults", "DELETE")


# ----- drain and checks ----------------------------------------------------------------
def deliveries():
    out, cursor = [], None
    while True:
        q = f"/webhook/{hook}/deliveries?limit=1000" + (f"&next_cursor={cursor}" if cursor else "")
        page = json.loads(call("GET", base + q)[1])
        out += page["result"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


# The outbox drains for as long as its backlog keeps shrinking: it gives up after
# DRAIN_STALL seconds without one more delivery delivered.
DRAIN_STALL = 120
drain_start = last_progress = time.monotonic()
left = None
while True:
    got = deliveries()
    pending = sum(d["status"] != "delivered" for d in got)
    if left is None or pending < left:
        left, last_progress = pending, time.monotonic()
    if pending == 0 or time.monotonic() - last_progress > DRAIN_STALL:
        break
    time.sleep(2)
drain_s = time.monotonic() - drain_start
# A last poll may have recorded events after the traffic stopped; their deliveries are
# among `got` and drained like the others.
undelivered = [d for d in got if d["status"] != "delivered"]
missing = [d["id"] for d in got if d["status"] == "delivered" and d["id"] not in received]
# RFC 3339 in UTC with the same precision throughout, so text order is time order.
out_of_order = [job for job, times in accepted.items() if times != sorted(times)]
runs_after = buddy_runs()
new_runs = runs_after - runs_before
split_keys = [k for k, ids in keys.items() if len(ids) > 1]

warm = elapsed / 6
report, failed_checks = [], 0


def check(ok, text):
    global failed_checks
    failed_checks += 0 if ok else 1
    report.append(f"| {'PASS' if ok else 'FAIL'} | {text} |")


after = [s for s in samples if s[0] >= warm]
for i, pid in enumerate(args.pids):
    base_rss = after[0][1][i]
    peak = max(s[1][i] for s in after)
    last = after[-1][1][i]
    growth = 100.0 * (last - base_rss) / base_rss
    check(growth < 10.0, f"instance {i + 1} RSS after warm-up {base_rss / 1024:.1f} MiB, "
          f"at the end {last / 1024:.1f} MiB ({growth:+.1f} %), peak {peak / 1024:.1f} MiB")
    fd_base = after[0][2][i]
    fd_peak = max(s[2][i] for s in after)
    check(fd_peak <= fd_base * 1.1 + 8, f"instance {i + 1} open fds after warm-up {fd_base}, "
          f"peak {fd_peak}, at the end {after[-1][2][i]}")
check(not stats["unexpected"] and stats["failed"] <= stats["faults"],
      f"{stats['calls']} calls ({', '.join(f'{k} {v}' for k, v in sorted(stats['by_kind'].items()))}), "
      f"{stats['failed']} failed with 502/503/504 or outcome-unknown, {stats['faults']} faults injected, "
      f"{len(stats['unexpected'])} unexpected; failed by kind and status: "
      f"{', '.join(f'{k}: {v}' for k, v in sorted(stats.get('failures', {}).items())) or 'none'}")
check(not undelivered and not missing,
      f"{len(got)} deliveries of job events, {len(undelivered)} not delivered after {drain_s:.0f} s of draining, "
      f"{len(missing)} delivered but never received, {sum(received.values()) - len(received)} received twice")
check(not out_of_order,
      f"{len(accepted)} jobs' events first accepted in the order they were recorded, "
      f"{len(out_of_order)} jobs out of order")
check(not split_keys and new_runs <= stats["runs"],
      f"{stats['runs']} runs each sent twice with one Idempotency-Key: {len(keys)} answered 201, "
      f"{len(split_keys)} keys with two jobs; Buddy ran {new_runs} new jobs")

print(f"Soak: {len(args.urls)} instances on PostgreSQL, {elapsed / 60:.1f} min, {args.clients} clients, "
      f"{args.fault_rate * 100:.0f} % upstream faults, profile `{args.profile}`, "
      f"{stats['calls'] / elapsed:.0f} calls/s")
print()
print("| check | measured |")
print("|---|---|")
for line in report:
    print(line)
if stats["unexpected"]:
    print()
    print("Unexpected failures (first 10):")
    for u in stats["unexpected"][:10]:
        print(f"- {u}")
print()
print("RSS (MiB) and open fds by sample, instance 1 / instance 2:")
for t, rss, fds in samples[:: max(1, len(samples) // 12)]:
    print(f"- {t / 60:5.1f} min: {rss[0] / 1024:.1f} / {rss[1] / 1024:.1f} MiB, {fds[0]} / {fds[1]} fds")
raise SystemExit(1 if failed_checks else 0)
