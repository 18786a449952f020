#!/usr/bin/env python3
"""W10 and W12 in the dashboard (Debian's headless chromium, Selenium).

    bench_scale.py BASE_URL TOKEN REPEATS

Prints BENCH lines: the flow list with W10's thousand flows from navigation to drawn, and the
grid of bench_w12 (100,000 runs among a million in the database, 25 shown) from navigation to drawn,
each with its longest main-thread task.
"""
import json
import os
import sys
import time
import urllib.request

from bench_browser import Dashboard, report

base, token, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
w10_flows = int(os.environ.get("W10_N", "1000"))


def active_w10_flows():
    try:
        req = urllib.request.Request(base + "/api/v1/flows", headers={"Authorization": "Bearer " + token})
        flows = json.load(urllib.request.urlopen(req, timeout=30))["flows"]
        return sum(1 for f in flows if f["flowId"].startswith("bench_w10_") and f["isActive"])
    except OSError:
        return 0


deadline = time.time() + 300
while active_w10_flows() < w10_flows:
    if time.time() > deadline:
        sys.exit("bench_scale.py: W10's 1,000 flows were not active after 5 minutes")
    time.sleep(0.5)
dash = Dashboard(base, token)
flows, flows_long, grid, grid_long = [], [], [], []
try:
    for _ in range(repeats):
        t, lt = dash.load("/flows", f"return document.querySelectorAll('tr[data-flow^=\"bench_w10_\"]').length >= {w10_flows} && window.__flowkitRendered")
        flows.append(t); flows_long.append(lt)
        t, lt = dash.load("/flows/bench_w12", "return document.querySelectorAll('table.grid thead button[data-run]').length === 25 "
                                              "&& document.querySelectorAll('table.grid tbody tr').length === 10")
        grid.append(t); grid_long.append(lt)
finally:
    dash.quit()
report("W10", "flow_list_drawn_s", flows, "the dashboard's flow list with 1,000+ flows: navigation to drawn, in headless chromium")
report("W10", "flow_list_longest_main_thread_task_s", flows_long, "the longest task blocking the flow list while it loads")
report("W12", "grid_drawn_s", grid, "bench_w12's grid (25 of its 100,000 runs; a million runs in the database): navigation to drawn")
report("W12", "grid_longest_main_thread_task_s", grid_long, "the longest task blocking that page")
