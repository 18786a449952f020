#!/usr/bin/env python3
"""`make stress`: liveness under concurrent load, against the real processes.

Starts its own PostgreSQL (durable: fsync and synchronous commit on) and Redis, the API server,
two schedulers and two workers, then runs each scenario and prints a table:

  * N concurrent `flowctl trigger example_sleep --conf '{"seconds":0}' --wait` clients;
  * the same with dashboard-style readers hammering GET /api/v1/runs and /runs/{id}/tasks;
  * a burst of triggers of one flow at its default max_active_runs (16): a freed slot must be
    taken at once, so the longest time a slot stays free while runs wait is reported;
  * a backfill of hourly ticks racing with manual triggers of the same flow;
  * overload: 50 clients of the debug flowctl at once (30 with --quick), the machine's load far
    above its two cores, with readers: no client may fail from CPU starvation alone, and no run
    may take over 60 s from trigger to end.

For each: client errors, runs finished, p50/p99/max of trigger->end and of queued->running (task
tries), the longest slot left free with runs waiting, the longest `idle in transaction` and the
longest lock wait seen (sampled every 0.1 s). A scenario fails on any client error, any unfinished
run, any task or request wait above the bound, or an idle transaction above 5 s.

  scripts/stress.py FLOWCTL [--quick] [--overload-client DEBUG_FLOWCTL]
      --quick: the bounded form CI runs; --overload-client: the binary the overload clients run
      (default FLOWCTL; `make stress` passes the debug build, whose start-up is what overloads)
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".flowkit", "stress")
PG_PORT, REDIS_PORT, API_PORT, PGBOUNCER_PORT = 25832, 26779, 18500, 26832
TOKEN = "stress-admin"
WAIT_BOUND = 20.0      # seconds: no task, request or client may wait longer than this
IDLE_TX_BOUND = 5.0    # seconds: no session may sit idle inside a transaction longer than this
OVERLOAD_BOUND = 60.0  # seconds: under overload a run may be slow, up to this, but never fail
# Under overload (load ~18 on two cores) a session may idle this long in a transaction while its
# client thread or backend waits for a CPU; the stacks of such a process are saved (Sampler.dump).
OVERLOAD_IDLE_TX_BOUND = 15.0


def log(msg):
    print(msg, flush=True)


class Psql:
    """One long-lived psql: queries without a process per sample."""

    def __init__(self, url):
        self.lock = threading.Lock()
        self.p = subprocess.Popen(["psql", url, "-qAtX", "-F", "|"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)

    def rows(self, sql):
        with self.lock:
            self.p.stdin.write(sql.strip().rstrip(";") + ";\n\\echo __END__\n")
            self.p.stdin.flush()
            out = []
            for line in self.p.stdout:
                line = line.rstrip("\n")
                if line == "__END__":
                    break
                if line.startswith("ERROR") or line.startswith("FATAL"):
                    raise RuntimeError(f"psql: {line} (in: {sql.strip()[:80]})")
                out.append(line.split("|"))
            return out

    def value(self, sql):
        r = self.rows(sql)
        return r[0][0] if r and r[0] else None

    def close(self):
        self.p.stdin.close()
        self.p.wait()


class Sampler(threading.Thread):
    """Longest idle-in-transaction and lock wait seen, sampled every 0.1 s.

    A process whose session idles over 3 s in a transaction gets its threads' stacks saved (once
    per scenario). gdb stops every thread of that process while it reads the debug information
    (8-30 s for a debug build on two loaded cores), so the time it held the process is subtracted
    from that session's idle time: before this, the dump itself turned every 3 s idle into a
    10-37 s "stall" over the 5 s bound."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.db = Psql(url)
        self.stop_flag = threading.Event()
        self.holds = {}  # client pid -> [(start, end)] epoch seconds gdb held it
        self.reset()

    def reset(self):
        self.idle_tx, self.idle_tx_query, self.lock_wait, self.lock_query = 0.0, "", 0.0, ""
        self.dumped = False

    def held(self, app, since, now):
        """Seconds in [since, now] that gdb held the client process named in `app`."""
        m = re.search(r"pid (\d+)", app or "")
        spans = self.holds.get(m.group(1), []) if m else []
        return sum(max(0.0, min(end, now) - max(start, since)) for start, end in spans)

    def run(self):
        while not self.stop_flag.is_set():
            try:
                for state, since, now, query, app in self.db.rows("""
                    SELECT CASE WHEN state LIKE 'idle in transaction%' THEN 'idle' ELSE 'lock' END,
                           extract(epoch FROM CASE WHEN state LIKE 'idle in%' THEN state_change ELSE query_start END),
                           extract(epoch FROM now()),
                           left(regexp_replace(query, '\\s+', ' ', 'g'), 60), application_name
                    FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()
                      AND (state LIKE 'idle in transaction%' OR (state = 'active' AND wait_event_type = 'Lock'))"""):
                    since, now = float(since), float(now)
                    s = now - since - (self.held(app, since, now) if state == "idle" else 0.0)
                    if state == "idle" and s > self.idle_tx:
                        self.idle_tx, self.idle_tx_query = s, f"{query}` ({app})"
                    if state == "lock" and s > self.lock_wait:
                        self.lock_wait, self.lock_query = s, f"{query}` ({app})"
                    if state == "idle" and s > 3:
                        self.dump(app)
            except Exception as e:  # noqa: BLE001 — a sample lost during a scenario is not a verdict
                log(f"  (sampler: {e})")
            time.sleep(0.1)

    def dump(self, app):
        """Every thread's stack of a process whose session idles in a transaction (one process per
        scenario): where it is while the database waits for it (.flowkit/stress/stall-PID.txt)."""
        m = re.search(r"pid (\d+)", app or "")
        if not m or self.dumped or not shutil.which("gdb"):
            return
        pid = m.group(1)
        self.dumped = True
        path = os.path.join(WORK, f"stall-{pid}.txt")
        with open(path, "w") as out:
            out.write(f"load average {os.getloadavg()}; {app}\n")
            out.flush()
            start = time.time()
            try:
                subprocess.run(["gdb", "-p", pid, "-batch", "-ex", "thread apply all bt 25"],
                               stdout=out, stderr=subprocess.STDOUT, timeout=120)
            finally:
                self.holds.setdefault(pid, []).append((start, time.time()))
        took = self.holds[pid][-1][1] - start
        log(f"  (a session of {app} idled in a transaction over 3 s: its threads' stacks are in {path}; "
            f"gdb held the process {took:.1f} s, not counted)")


class API:
    def __init__(self):
        self.errors = []
        self.latencies = []
        self.lock = threading.Lock()

    def call(self, method, path, body=None, timeout=30):
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", API_PORT, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {TOKEN}"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            payload = r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {r.status} {payload[:200]!r}")
            return json.loads(payload) if payload else None
        except Exception as e:
            with self.lock:
                self.errors.append(str(e))
            raise
        finally:
            with self.lock:
                self.latencies.append(time.monotonic() - t0)
            conn.close()


def pct(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Stack:
    def __init__(self, flowctl, pgbouncer=False):
        self.flowctl = flowctl
        self.pgbouncer = pgbouncer
        self.procs = {}
        self.env = dict(os.environ)

    def start(self):
        os.makedirs(WORK, exist_ok=True)
        env = dict(os.environ, FLOWKIT_TEST_HOME=os.path.join(WORK, "servers"), FLOWKIT_TEST_PG_PORT=str(PG_PORT),
                   FLOWKIT_TEST_REDIS_PORT=str(REDIS_PORT), FLOWKIT_TEST_PG_DURABLE="1")
        self.services_env = env
        subprocess.run([os.path.join(ROOT, "scripts/services.sh"), "stop"], env=env, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", os.path.join(WORK, "servers")])
        subprocess.run([os.path.join(ROOT, "scripts/services.sh"), "start"], env=env, check=True, stdout=subprocess.DEVNULL)
        admin = f"postgres://flowkit@127.0.0.1:{PG_PORT}/postgres"
        subprocess.run(["psql", admin, "-qc", "DROP DATABASE IF EXISTS stress", "-c", "CREATE DATABASE stress"], check=True,
                       stdout=subprocess.DEVNULL)
        self.db_url = f"postgres://flowkit@127.0.0.1:{PG_PORT}/stress"
        database = self.db_url
        if self.pgbouncer:
            # The API, schedulers and flowctl through PgBouncer in transaction mode; their
            # sessions (LISTEN, the leader's lock, migrations) direct.
            subprocess.run([os.path.join(ROOT, "scripts/pgbouncer.sh"), "start"], env=dict(env, FLOWKIT_TEST_PGBOUNCER_PORT=str(PGBOUNCER_PORT)),
                           check=True, stdout=subprocess.DEVNULL)
            database = f"postgres://flowkit@127.0.0.1:{PGBOUNCER_PORT}/stress"
            self.env.update(FLOWKIT_DATABASE_DIRECT_URL=self.db_url)
            log(f"through PgBouncer (transaction mode) on port {PGBOUNCER_PORT}")
        self.env.update(FLOWKIT_DATABASE_URL=database, FLOWKIT_REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
                        FLOWKIT_CONN_WAREHOUSE=self.db_url, FLOWKIT_DATA_DIR=os.path.join(WORK, "data"),
                        FLOWKIT_LOG_LEVEL="warning", FLOWKIT_API_TOKENS=f"admin:{TOKEN}", FLOWKIT_API_TOKEN=TOKEN,
                        FLOWKIT_API_URL=f"http://127.0.0.1:{API_PORT}")
        subprocess.run([self.flowctl, "migrate"], env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.spawn("api", "server", "--port", str(API_PORT))
        self.spawn("sched1", "scheduler")
        self.spawn("sched2", "scheduler")
        for w in ("worker1", "worker2"):
            self.spawn(w, "worker", "--concurrency", "2", "--name", w)
        for _ in range(150):
            if subprocess.run([self.flowctl, "health"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("the stack did not become healthy in 30 s; see .flowkit/stress/*.log")

    def spawn(self, name, *args):
        out = open(os.path.join(WORK, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen([self.flowctl, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.pgbouncer:
            subprocess.run([os.path.join(ROOT, "scripts/pgbouncer.sh"), "stop"], env=self.services_env)
        subprocess.run([os.path.join(ROOT, "scripts/services.sh"), "stop"], env=self.services_env)


def trigger_clients(stack, n, flow="example_sleep", conf='{"seconds":0}', binary=None):
    """N real `flowctl trigger --wait` processes at once; returns (errors, wall times)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen([binary or stack.flowctl, "trigger", flow, "--conf", conf, "--wait"], env=stack.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    errors, times = [], []
    for p in procs:
        try:
            _, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            err = "client still waiting after 180 s\n" + (err or "")
        times.append(time.monotonic() - t0)
        if p.returncode != 0:
            errors.append((err or f"exit {p.returncode}").strip().splitlines()[-1][:200])
    return errors, times


def readers(api, stop, count=4):
    def loop():
        while not stop.is_set():
            try:
                runs = api.call("GET", "/api/v1/runs?limit=50")["runs"]
                for r in runs[:3]:
                    api.call("GET", f"/api/v1/runs/{r['runId']}/tasks")
            except Exception:  # noqa: BLE001 — counted in api.errors
                time.sleep(0.05)
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def in_threads(n, items, fn):
    """Runs fn(item) for every item on n threads; returns the errors."""
    errors, lock, it = [], threading.Lock(), iter(items)

    def worker():
        while True:
            with lock:
                try:
                    item = next(it)
                except StopIteration:
                    return
            try:
                fn(item)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(str(e)[:200])
    ts = [threading.Thread(target=worker) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def wait_idle(db, since, limit=300):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if db.value(f"SELECT count(*) FROM runs WHERE created_at >= '{since}' AND state IN ('queued', 'running')") == "0":
            return True
        time.sleep(0.2)
    return False


def slot_gap(db, since, flow):
    """Longest time the flow had a free slot (running < max_active_runs) while runs of it waited."""
    cap = int(db.value(f"SELECT max_active_runs FROM flows WHERE flow_id = '{flow}'"))
    events = []
    for created, started, ended in db.rows(f"""
            SELECT extract(epoch FROM created_at), extract(epoch FROM started_at), extract(epoch FROM ended_at)
            FROM runs WHERE flow_id = '{flow}' AND created_at >= '{since}' AND started_at IS NOT NULL AND ended_at IS NOT NULL"""):
        events += [(float(created), 0, 1), (float(started), 1, -1), (float(started), 2, 1), (float(ended), 3, -1)]
    # kinds: 0 queued+1, 1 queued-1, 2 running+1, 3 running-1
    queued = running = 0
    gap_start, longest = None, 0.0
    for t, kind, d in sorted(events):
        if kind in (0, 1):
            queued += d
        else:
            running += d
        free = queued > 0 and running < cap
        if free and gap_start is None:
            gap_start = t
        elif not free and gap_start is not None:
            longest = max(longest, t - gap_start)
            gap_start = None
    return longest


class Result:
    def __init__(self, name):
        self.name, self.client_errors, self.problems = name, [], []
        self.cells = {}


def measure(db, sampler, since, name, client_errors, extra_checks=(), bound_trigger=True, idle_bound=IDLE_TX_BOUND):
    r = Result(name)
    r.client_errors = client_errors
    finished = wait_idle(db, since)
    total, done = db.rows(f"""SELECT count(*), count(*) FILTER (WHERE state IN ('success', 'failed', 'cancelled'))
                              FROM runs WHERE created_at >= '{since}'""")[0]
    ends = [float(x[0]) for x in db.rows(f"SELECT extract(epoch FROM ended_at - created_at) FROM runs WHERE created_at >= '{since}' AND ended_at IS NOT NULL")]
    qr = [float(x[0]) for x in db.rows(f"""SELECT extract(epoch FROM t.started_at - t.queued_at) FROM task_tries t JOIN runs r ON r.id = t.run_pk
                                          WHERE r.created_at >= '{since}' AND t.started_at IS NOT NULL""")]
    failed = db.value(f"SELECT count(*) FROM runs WHERE created_at >= '{since}' AND state <> 'success'")
    r.cells = {"runs": f"{done}/{total}", "end": ends, "qr": qr, "idle": sampler.idle_tx, "lockw": sampler.lock_wait,
               "idle_query": sampler.idle_tx_query, "lock_query": sampler.lock_query}
    if client_errors:
        r.problems.append(f"{len(client_errors)} client errors, e.g. {client_errors[0]}")
    if not finished or done != total:
        r.problems.append(f"{int(total) - int(done)} runs unfinished")
    if failed != "0":
        r.problems.append(f"{failed} runs did not succeed")
    if qr and max(qr) > WAIT_BOUND:
        r.problems.append(f"a task waited {max(qr):.1f}s from queued to running")
    if bound_trigger and ends and max(ends) > WAIT_BOUND:
        r.problems.append(f"a run took {max(ends):.1f}s from trigger to end")
    if sampler.idle_tx > idle_bound:
        r.problems.append(f"a session sat {sampler.idle_tx:.1f}s idle in transaction after `{sampler.idle_tx_query}`")
    for check in extra_checks:
        check(r)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("flowctl")
    ap.add_argument("--quick", action="store_true", help="the bounded form CI runs")
    ap.add_argument("--pgbouncer", action="store_true", help="the API, schedulers and clients through PgBouncer in transaction mode")
    ap.add_argument("--only", help="run only the scenarios whose name contains this text")
    ap.add_argument("--overload-client", help="the flowctl the overload scenario's clients run (default: FLOWCTL)")
    args = ap.parse_args()
    quick = args.quick
    stack = Stack(os.path.abspath(args.flowctl), pgbouncer=args.pgbouncer)
    results = []
    try:
        stack.start()
        db = Psql(stack.db_url)
        sampler = Sampler(stack.db_url)
        sampler.start()
        api = API()

        def scenario(name, body, **kw):
            if args.only and args.only not in name:
                return None
            since = db.value("SELECT now()")
            sampler.reset()
            api.errors.clear()
            api.latencies.clear()
            log(f"-- {name}")
            client_errors, checks = body()
            res = measure(db, sampler, since, name, client_errors, checks, **kw)
            results.append(res)
            return res

        for n in ([20] if quick else [20, 100]):
            def clients(n=n):
                errors, times = trigger_clients(stack, n)
                return errors, [lambda r, t=times: r.cells.update(client=t)]
            scenario(f"{n} x trigger --wait", clients)

        def with_readers(n=20 if quick else 100):
            stop = threading.Event()
            ts = readers(api, stop)
            errors, times = trigger_clients(stack, n)
            stop.set()
            for t in ts:
                t.join()
            lat = list(api.latencies)

            def check(r):
                r.cells.update(client=times, reads=lat)
                if api.errors:
                    r.problems.append(f"{len(api.errors)} reader errors, e.g. {api.errors[0][:150]}")
                if lat and max(lat) > WAIT_BOUND:
                    r.problems.append(f"a read waited {max(lat):.1f}s")
            return errors, [check]
        scenario(f"{20 if quick else 100} x trigger --wait + 4 readers", with_readers)

        burst = 200 if quick else 1000

        def burst_body():
            since = db.value("SELECT now()")
            errors = in_threads(16, range(burst), lambda _: api.call("POST", "/api/v1/flows/example_sleep/runs", {"conf": {"seconds": 0}}))

            def check(r):
                gap = slot_gap(db, since, "example_sleep")
                r.cells["gap"] = gap
                if gap > 2.0:
                    r.problems.append(f"a free slot stayed unused for {gap:.2f}s while runs waited")
            return errors, [check]
        scenario(f"burst of {burst} triggers (max_active_runs 16)", burst_body, bound_trigger=False)

        ticks = 50 if quick else 200

        def backfill_body():
            end = time.time() // 3600 * 3600 - 3600 * 24 * 365
            start = end - 3600 * (ticks - 1)
            fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
            errors = in_threads(8, ["backfill"] + ["manual"] * 40 + ["backfill"], lambda kind: api.call(
                "POST", "/api/v1/flows/example_hourly/backfill", {"from": fmt(start), "to": fmt(end)}) if kind == "backfill"
                else api.call("POST", "/api/v1/flows/example_hourly/runs", {}))

            def check(r):
                dup = db.value("SELECT count(*) FROM (SELECT 1 FROM runs WHERE trigger_kind IN ('scheduled', 'backfill') "
                               "GROUP BY flow_id, logical_date HAVING count(*) > 1) d")
                n = db.value("SELECT count(*) FROM runs WHERE flow_id = 'example_hourly' AND trigger_kind = 'backfill'")
                if dup != "0":
                    r.problems.append(f"{dup} ticks with more than one run")
                if n != str(ticks):
                    r.problems.append(f"{n} backfill runs for {ticks} ticks")
            return errors, [check]
        scenario(f"backfill of {ticks} ticks racing 40 manual triggers", backfill_body, bound_trigger=False)

        overload = 30 if quick else 50
        client_binary = os.path.abspath(args.overload_client) if args.overload_client else stack.flowctl

        def overload_body():
            stop = threading.Event()
            ts = readers(api, stop, count=2)
            load = []

            def sample_load():
                while not stop.is_set():
                    load.append(os.getloadavg()[0])
                    time.sleep(0.5)
            lt = threading.Thread(target=sample_load, daemon=True)
            lt.start()
            errors, times = trigger_clients(stack, overload, binary=client_binary)
            stop.set()
            for t in ts + [lt]:
                t.join()

            def check(r):
                r.cells.update(client=times, reads=list(api.latencies))
                r.cells["load"] = max(load) if load else 0.0
                ends = r.cells.get("end") or []
                if ends and max(ends) > OVERLOAD_BOUND:
                    r.problems.append(f"a run took {max(ends):.1f}s from trigger to end under overload (bound {OVERLOAD_BOUND:.0f}s)")
                if api.errors:
                    r.problems.append(f"{len(api.errors)} reader errors, e.g. {api.errors[0][:150]}")
                log(f"  overload: load average up to {r.cells['load']:.1f} on {os.cpu_count()} cores; slowest client {max(times):.1f}s")
            return errors, [check]
        scenario(f"overload: {overload} x trigger --wait of {os.path.basename(os.path.dirname(client_binary))} flowctl + 2 readers",
                 overload_body, bound_trigger=False, idle_bound=OVERLOAD_IDLE_TX_BOUND)
        sampler.stop_flag.set()
    finally:
        stack.stop()

    def fmt3(v):
        return "-" if not v else f"{pct(v, 50):.2f}/{pct(v, 99):.2f}/{max(v):.2f}"
    header = ["scenario", "errors", "runs", "trigger->end p50/p99/max s", "queued->running p50/p99/max s", "client wall max s",
              "reads p99/max s", "free slot max s", "idle-in-tx max s", "lock wait max s", "verdict"]
    rows = []
    for r in results:
        c = r.cells
        rows.append([r.name, str(len(r.client_errors)), c.get("runs", "-"), fmt3(c.get("end")), fmt3(c.get("qr")),
                     f"{max(c['client']):.2f}" if c.get("client") else "-",
                     f"{pct(c['reads'], 99):.3f}/{max(c['reads']):.3f}" if c.get("reads") else "-",
                     f"{c['gap']:.2f}" if "gap" in c else "-", f"{c.get('idle', 0):.2f}", f"{c.get('lockw', 0):.2f}",
                     "ok" if not r.problems else "FAIL"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    # Where a session waited, even under the bounds: the next stall is then easier to place.
    for r in results:
        c = r.cells
        if c.get("idle", 0) > 1 or c.get("lockw", 0) > 1:
            print(f"note {r.name}: idle in transaction {c.get('idle', 0):.2f}s after `{c.get('idle_query', '')}`; "
                  f"lock wait {c.get('lockw', 0):.2f}s in `{c.get('lock_query', '')}`")
    bad = [r for r in results if r.problems]
    for r in bad:
        print(f"FAIL {r.name}: " + "; ".join(r.problems))
    print(f"\nstress: {len(results) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
