#!/usr/bin/env python3
"""Prints FlowKit's figures beside Celery's, as ratios, and the goals of issue 6 as met or missed."""
import re, sys

def parse(path, prefix):
    out = {}
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        return out
    for l in lines:
        if l.startswith(prefix):
            kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', l))
            out.setdefault(kv.get("id") or kv.get("workload"), []).append(kv)
    return out

fk = parse(sys.argv[1], "BENCH")
cel = parse(sys.argv[2], "RESULT") if len(sys.argv) > 2 else {}

def fig(wid, metric):
    for kv in fk.get(wid, []):
        if kv.get("metric") == metric:
            try: return float(kv["value"])
            except ValueError: return None
    return None

def celery(wid, key):
    for kv in cel.get(wid, []):
        if key in kv:
            try: return float(kv[key])
            except ValueError: return None
    return None

print("\n# FlowKit beside Celery (medians; ratio > 1 means FlowKit is better)")
def ratio(name, f, c, higher_is_better=True):
    if f is None or c is None:
        print(f"RATIO {name}: flowkit={f} celery={c} (missing)")
        return None
    r = f / c if higher_is_better else c / f
    print(f"RATIO {name}: flowkit={f:.4g} celery={c:.4g} ratio={r:.2f}")
    return r

# The Celery peer script names its workloads W1_results, W2_chain, W3_chord and W4 (by tag).
r1 = ratio("W1 tasks/s (Celery with results)", fig("W1", "tasks_per_s"), celery("W1_results", "tasks_per_s"))
ratio("W2 total s", fig("W2", "total_s"), celery("W2_chain", "total_s"), False)
ratio("W2 hop p50 ms", fig("W2", "hop_p50_ms"), celery("W2_chain", "hop_median_ms"), False)
r3 = ratio("W3 s", fig("W3", "seconds"), celery("W3_chord", "total_s"), False)
w3, w8, w8rate = fig("W3", "seconds"), fig("W8", "seconds"), fig("W8", "instances_per_s")
print(f"FIGURE W8 (1 -> mapped -> 1) s={w8} instances/s={w8rate} beside W3 (1 -> 500 -> 1) s={w3}")
ratio("W4 idle worker MiB (Celery: whole prefork tree)", fig("W4", "idle_worker_rss_mib"), celery("W4", "worker_rss_mb"), False)
ratio("W4 idle worker PSS MiB (Celery: whole prefork tree)", fig("W4", "idle_worker_pss_mib"), celery("W4", "worker_pss_mb"), False)

print("\n# Goals (issue 6)")
def goal(name, ok, detail):
    print(f"GOAL {name}: {'met' if ok else 'MISSED'} ({detail})")
def val(x): return "n/a" if x is None else f"{x:.4g}"
goal("W1 >= 2x Celery", r1 is not None and r1 >= 2, f"ratio {val(r1)}")
p50, p99, tot = fig("W2", "hop_p50_ms"), fig("W2", "hop_p99_ms"), fig("W2", "total_s")
goal("W2 hop p50 <= 2 ms", p50 is not None and p50 <= 2, f"{val(p50)} ms")
goal("W2 hop p99 <= 10 ms", p99 is not None and p99 <= 10, f"{val(p99)} ms")
goal("W2 chain < 1 s", tot is not None and tot < 1, f"{val(tot)} s")
goal("W3 no slower than Celery", r3 is not None and r3 >= 1, f"ratio {val(r3)}")
idle, sched = fig("W4", "idle_worker_rss_mib"), fig("W4", "scheduler_rss_mib_during_w3")
goal("W4 idle worker <= 20 MiB", idle is not None and idle <= 20, f"{val(idle)} MiB")
goal("W4 scheduler <= 100 MiB during W3", sched is not None and sched <= 100, f"{val(sched)} MiB")
rps = fig("W5", "requests_per_s")
goal("W5 >= 5000 req/s", rps is not None and rps >= 5000, f"{val(rps)} req/s")
deg = fig("W6", "degradation_pct")
goal("W6 W2 degrades <= 20 %", deg is not None and deg <= 20, f"{val(deg)} %")
w7 = fig("W7", "seconds_to_first_task")
goal("W7 <= 5 s", w7 is not None and w7 <= 5, f"{val(w7)} s")
