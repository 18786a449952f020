#!/usr/bin/env python3
"""`make bench-compare BASE=<git rev>`: the working tree against a base revision, on the same servers.

Builds the base revision's release flowctl beside the working tree's (cached per commit under
.flowkit/compare/), starts one durable PostgreSQL and one Redis, then runs `flowctl bench run`
for both binaries in a balanced order — A B B A, repeated ROUNDS times (A is the base) — each run
on a fresh database, after a CHECKPOINT, an emptied Redis and a pause, so that neither binary
always runs first or second (this machine penalises the second of two runs back to back).

Prints, for each workload's figure, the ratio new/base of each A-B pair, their median and
spread, the base's own run-to-run noise (consecutive A runs), and a verdict: `faster`/`slower`
when every pair agrees and the median change exceeds the base's noise, `within noise` otherwise.
A ratio > 1 means a larger figure: better for tasks/s and req/s, worse for ms and seconds.

  scripts/bench_compare.py BASE [--rounds N] [--only W1,W2] [--new PATH_TO_FLOWCTL]

With --profile (make bench-profile), times nothing: it runs one W2 (a chain of W2_N tasks, default
200) with each binary and prints what each hop costs in work, which does not vary with the
machine's mood: PostgreSQL statements and transactions (pg_stat_statements) and Redis commands
(INFO commandstats) per task, the two binaries side by side.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".flowkit", "compare")
PG_PORT, REDIS_PORT = 25632, 26579
HIGHER_IS_BETTER = ("per_s", "req_s", "tasks_per_s", "instances_per_s", "rps")


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build_base(rev):
    sha = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--verify", rev + "^{commit}"], text=True).strip()
    tree = os.path.join(WORK, sha[:12])
    binary = os.path.join(tree, ".build", "release", "flowctl")
    if os.path.exists(binary):
        log(f"base {rev} = {sha[:12]}: using the build in {tree}")
        return sha, binary
    if not os.path.isdir(tree):
        os.makedirs(tree, exist_ok=True)
        # The commit's files alone (no worktree bookkeeping), with the working tree's resolved
        # packages so that the build needs no network.
        archive = subprocess.Popen(["git", "-C", ROOT, "archive", sha], stdout=subprocess.PIPE)
        run(["tar", "-x", "-C", tree], stdin=archive.stdout)
        archive.wait()
    log(f"base {rev} = {sha[:12]}: release build in {tree} (several minutes the first time)")
    env = dict(os.environ)
    checkouts = os.path.join(ROOT, ".build", "checkouts")
    cmd = ["swift", "build", "-c", "release", "--product", "flowctl", "--package-path", tree]
    if os.path.exists(os.path.join(ROOT, "Package.resolved")) and not os.path.exists(os.path.join(tree, "Package.resolved")):
        run(["cp", os.path.join(ROOT, "Package.resolved"), tree])
    if os.path.isdir(checkouts):
        # Reuse the packages already checked out: same URLs, and SwiftPM re-resolves the versions.
        os.makedirs(os.path.join(tree, ".build"), exist_ok=True)
        for name in ("checkouts", "repositories"):
            src, dst = os.path.join(ROOT, ".build", name), os.path.join(tree, ".build", name)
            if os.path.isdir(src) and not os.path.exists(dst):
                run(["cp", "-a", src, dst])
    run(cmd, env=env)
    return sha, binary


def services(cmd, extra_pg=""):
    env = dict(os.environ, FLOWKIT_TEST_PG_OPTS=extra_pg, FLOWKIT_TEST_HOME=os.path.join(WORK, "servers"), FLOWKIT_TEST_PG_PORT=str(PG_PORT),
               FLOWKIT_TEST_REDIS_PORT=str(REDIS_PORT), FLOWKIT_TEST_PG_DURABLE="1")
    subprocess.run([os.path.join(ROOT, "scripts", "services.sh"), cmd], env=env, check=cmd == "start",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if cmd == "stop" else None)


def fresh():
    admin = f"postgres://flowkit@127.0.0.1:{PG_PORT}/postgres"
    run(["psql", admin, "-qX", "-c", "DROP DATABASE IF EXISTS compare", "-c", "CREATE DATABASE compare", "-c", "CHECKPOINT"],
        stdout=subprocess.DEVNULL)
    run(["redis-cli", "-p", str(REDIS_PORT), "FLUSHALL"], stdout=subprocess.DEVNULL)
    time.sleep(2)


def bench_once(binary, only):
    fresh()
    env = dict(os.environ, FLOWKIT_DATABASE_URL=f"postgres://flowkit@127.0.0.1:{PG_PORT}/compare",
               FLOWKIT_REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0", FLOWKIT_LOG_LEVEL="warning")
    out = subprocess.run([binary, "bench", "run", "--repeats", "1", "--only", only, "--port", "18280"], env=env,
                         capture_output=True, text=True, timeout=1800)
    figures = {}
    for line in out.stdout.splitlines():
        m = re.match(r"BENCH id=(\S+) metric=(\S+) value=(\S+)", line)
        if m:
            figures[f"{m.group(1)} {m.group(2)}"] = float(m.group(3))
    if out.returncode != 0 or not figures:
        raise RuntimeError(f"{binary} bench run failed ({out.returncode}): {out.stderr[-800:]}")
    return figures


def psql(sql, db="postgres"):
    return subprocess.check_output(["psql", f"postgres://flowkit@127.0.0.1:{PG_PORT}/{db}", "-qXtA", "-F", "\t", "-c", sql],
                                   text=True)


def profile_once(binary, tasks):
    """Counts per task of one W2 run: {statement: (calls, ms)}, transactions, {redis command: calls}."""
    fresh()
    psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    env = dict(os.environ, FLOWKIT_DATABASE_URL=f"postgres://flowkit@127.0.0.1:{PG_PORT}/compare",
               FLOWKIT_REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0", FLOWKIT_LOG_LEVEL="warning", W2_N=str(tasks))
    # Registration and the first run warm everything up; the counters are reset before the second.
    subprocess.run([binary, "bench", "run", "--repeats", "1", "--only", "W2", "--port", "18280"], env=env,
                   capture_output=True, text=True, timeout=600, check=True)
    xact0 = int(psql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'compare'").strip())
    psql("SELECT pg_stat_statements_reset()")
    run(["redis-cli", "-p", str(REDIS_PORT), "CONFIG", "RESETSTAT"], stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([binary, "bench", "run", "--repeats", "1", "--only", "W2", "--port", "18280"], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    elapsed = time.monotonic() - t0
    xact = int(psql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'compare'").strip()) - xact0
    stmts = {}
    rows = psql("SELECT s.calls, s.total_exec_time, regexp_replace(s.query, '\\s+', ' ', 'g') FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'compare'")
    for line in rows.splitlines():
        calls, ms, query = line.split("\t", 2)
        key = query[:110]
        c, m = stmts.get(key, (0, 0.0))
        stmts[key] = (c + int(calls), m + float(ms))
    cmds = {}
    for line in subprocess.check_output(["redis-cli", "-p", str(REDIS_PORT), "INFO", "commandstats"], text=True).splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            cmds[m.group(1)] = int(m.group(2))
    hop = re.search(r"BENCH id=W2 metric=hop_p50_ms value=(\S+)", out.stdout)
    return stmts, xact, cmds, elapsed, hop.group(1) if hop else "?", cpu


def profile(base, new, args):
    tasks = int(os.environ.get("W2_N", "200"))
    services("stop")
    services("start", "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all")
    try:
        a = profile_once(base, tasks)
        b = profile_once(new, tasks)
        # CPU per task: the difference between runs of 3N and N tasks (start-up and registration
        # cost the same in both), alternating the binaries.
        a3 = profile_once(base, 3 * tasks)
        b3 = profile_once(new, 3 * tasks)
    finally:
        services("stop")
    log(f"# bench-compare --profile: one W2 of {tasks} tasks each (its bench process runs the scheduler, the worker "
        f"and a 20 ms watcher); per task, A = {args.base}, B = working tree")
    log(f"{'':8}{'A':>9}{'B':>9}")
    log(f"{'PostgreSQL transactions':32}{a[1] / tasks:9.2f}{b[1] / tasks:9.2f}")
    log(f"{'PostgreSQL statements':32}{sum(c for c, _ in a[0].values()) / tasks:9.2f}"
        f"{sum(c for c, _ in b[0].values()) / tasks:9.2f}")
    log(f"{'PostgreSQL execution ms':32}{sum(m for _, m in a[0].values()) / tasks:9.3f}"
        f"{sum(m for _, m in b[0].values()) / tasks:9.3f}")
    log(f"{'Redis commands':32}{sum(a[2].values()) / tasks:9.2f}{sum(b[2].values()) / tasks:9.2f}")
    log(f"{'bench process CPU ms':32}{(a3[5] - a[5]) * 1000 / (2 * tasks):9.3f}{(b3[5] - b[5]) * 1000 / (2 * tasks):9.3f}"
        "   (scheduler, worker and watcher: runs of 3N less N tasks)")
    log(f"{'wall time of the run, s':32}{a[3]:9.2f}{b[3]:9.2f}   (hop p50 ms: A {a[4]}, B {b[4]})")
    log("")
    log("statements per task (calls A, calls B, ms A, ms B), the busiest first:")
    keys = sorted(set(a[0]) | set(b[0]), key=lambda k: -max(a[0].get(k, (0, 0))[0], b[0].get(k, (0, 0))[0]))
    for k in keys:
        ca, ma = a[0].get(k, (0, 0.0))
        cb, mb = b[0].get(k, (0, 0.0))
        if max(ca, cb) < tasks / 20:
            continue
        log(f"  {ca / tasks:6.2f} {cb / tasks:6.2f} {ma / tasks:7.3f} {mb / tasks:7.3f}  {k}")
    log("")
    log("Redis commands per task (A, B):")
    for k in sorted(set(a[2]) | set(b[2]), key=lambda k: -max(a[2].get(k, 0), b[2].get(k, 0))):
        log(f"  {a[2].get(k, 0) / tasks:6.2f} {b[2].get(k, 0) / tasks:6.2f}  {k}")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base", help="the git revision to compare against (A)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "3")),
                    help="A B B A rounds (default 3: 6 runs of each)")
    ap.add_argument("--only", default=os.environ.get("ONLY", "W1,W2"), help="workloads (flowctl bench run --only)")
    ap.add_argument("--new", default=os.path.join(ROOT, ".build", "release", "flowctl"), help="the new flowctl (B)")
    ap.add_argument("--profile", action="store_true", help="count statements and commands per task instead of timing")
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    sha, base = build_base(args.base)
    new = os.path.abspath(args.new)
    if args.profile:
        return profile(base, new, args)
    head = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0
    services("stop")
    services("start")
    results = {"A": [], "B": []}
    order = []
    try:
        for r in range(args.rounds):
            order += ["A", "B", "B", "A"]
        log(f"# bench-compare: A = {args.base} ({sha[:12]}), B = working tree ({head}{'+changes' if dirty else ''}); "
            f"{args.only}; order {' '.join(order)}")
        for i, which in enumerate(order):
            binary = base if which == "A" else new
            t0 = time.monotonic()
            figs = bench_once(binary, args.only)
            results[which].append(figs)
            shown = ", ".join(f"{k}={v:g}" for k, v in sorted(figs.items()))
            log(f"  run {i + 1:2}/{len(order)} {which}: {shown}  ({time.monotonic() - t0:.0f}s)")
    finally:
        services("stop")

    # Pairs: each A with the B next to it in the A B B A pattern (A1-B1, B2-A2 per round).
    keys = sorted(set(results["A"][0]) & set(results["B"][0]))
    log("")
    log(f"{'figure':34} {'A median':>10} {'B median':>10} {'B/A pairs':40} {'median':>7} {'noise(A)':>8}  verdict")
    verdicts = []
    for k in keys:
        a = [f[k] for f in results["A"]]
        b = [f[k] for f in results["B"]]
        ratios = [bb / aa for aa, bb in zip(a, b) if aa]
        med = statistics.median(ratios)
        # The base's own noise: the relative difference of the two A runs of each round.
        noise = statistics.median([abs(a[i + 1] / a[i] - 1) for i in range(0, len(a) - 1, 2) if a[i]]) if len(a) > 1 else 0.0
        better_up = any(k.split()[1].endswith(s) for s in HIGHER_IS_BETTER)
        all_up, all_down = all(r > 1 for r in ratios), all(r < 1 for r in ratios)
        change = abs(med - 1)
        if (all_up or all_down) and change > noise:
            good = (all_up and better_up) or (all_down and not better_up)
            verdict = ("better" if good else "WORSE") + f" by {change * 100:.0f}%"
        else:
            verdict = "within noise"
        verdicts.append((k, verdict))
        pairs = " ".join(f"{r:.2f}" for r in ratios)
        log(f"{k:34} {statistics.median(a):10.4g} {statistics.median(b):10.4g} {pairs:40} {med:7.3f} {noise * 100:7.1f}%  {verdict}")
    log("")
    log(f"bench-compare: {sum(1 for _, v in verdicts if v.startswith('WORSE'))} worse, "
        f"{sum(1 for _, v in verdicts if v.startswith('better'))} better, "
        f"{sum(1 for _, v in verdicts if v == 'within noise')} within noise (B/A > 1: a larger figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
