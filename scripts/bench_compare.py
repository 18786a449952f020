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
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, ".flowkit", "compare")
PG_PORT, REDIS_PORT = 55632, 56579
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


def services(cmd):
    env = dict(os.environ, FLOWKIT_TEST_HOME=os.path.join(WORK, "servers"), FLOWKIT_TEST_PG_PORT=str(PG_PORT),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base", help="the git revision to compare against (A)")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "3")),
                    help="A B B A rounds (default 3: 6 runs of each)")
    ap.add_argument("--only", default=os.environ.get("ONLY", "W1,W2"), help="workloads (flowctl bench run --only)")
    ap.add_argument("--new", default=os.path.join(ROOT, ".build", "release", "flowctl"), help="the new flowctl (B)")
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    sha, base = build_base(args.base)
    new = os.path.abspath(args.new)
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
