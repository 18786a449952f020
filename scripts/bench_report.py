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

def goal(name, ok, detail):
    print(f"GOAL {name}: {'met' if ok else 'MISSED'} ({detail})")
def val(x): return "n/a" if x is None else f"{x:.4g}"
def at_most(name, x, limit, unit):
    goal(name, x is not None and x <= limit, f"{val(x)} {unit}")
def at_least(name, x, limit, unit):
    goal(name, x is not None and x >= limit, f"{val(x)} {unit}")

p50, p99, tot = fig("W2", "hop_p50_ms"), fig("W2", "hop_p99_ms"), fig("W2", "total_s")
print("\n# Goals of performance round 2 (issue 31)")
at_least("W1 >= 5,000 tasks/s", fig("W1", "tasks_per_s"), 5000, "tasks/s")
at_most("W2 hop p50 <= 1.0 ms", p50, 1.0, "ms")
at_most("W2 hop p99 <= 2.0 ms", p99, 2.0, "ms")
at_most("W3 <= 0.2 s", fig("W3", "seconds"), 0.2, "s")
at_least("W5 >= 10,000 req/s", fig("W5", "requests_per_s"), 10000, "req/s")
at_most("W5 p99 <= 10 ms", fig("W5", "p99_ms"), 10, "ms")
at_most("W8 <= 3 s", fig("W8", "seconds"), 3, "s")
at_most("W4 idle worker <= 20 MiB", fig("W4", "idle_worker_rss_mib"), 20, "MiB")
at_most("W4 scheduler <= 60 MiB during W3", fig("W4", "scheduler_rss_mib_during_w3"), 60, "MiB")

print("\n# Goals of earlier rounds (issue 6, the dashboard)")
goal("W1 >= 2x Celery", r1 is not None and r1 >= 2, f"ratio {val(r1)}")
at_most("W2 chain < 1 s", tot, 1, "s")
goal("W3 no slower than Celery", r3 is not None and r3 >= 1, f"ratio {val(r3)}")
at_most("W6 W2 degrades <= 20 %", fig("W6", "degradation_pct"), 20, "%")
at_most("W7 <= 5 s", fig("W7", "seconds_to_first_task"), 5, "s")
at_most("W9 grid drawn < 1 s", fig("W9", "grid_1000x25_drawn_s"), 1, "s")

print("\n# The flow author's loop (issue 25)")
at_most("W13 save -> new version running <= 10 s", fig("W13", "save_to_running_s"), 10, "s")

# The scale workloads have no goal yet: their figures, for the next round to set one.
print("\n# Scale (W10–W12: figures, no goals)")
for wid in ("W10", "W11", "W12"):
    for kv in fk.get(wid, []):
        print(f"FIGURE {wid} {kv.get('metric')} = {kv.get('value')}")
