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
flows, flows_long, grid, grid_long, home, home_long, runs, runs_long, failed, failed_long = [], [], [], [], [], [], [], [], [], []
try:
    for _ in range(repeats):
        t, lt = dash.load("/flows", f"return document.querySelectorAll('tr[data-flow^=\"bench_w10_\"]').length >= {w10_flows} && window.__flowkitRendered")
        flows.append(t); flows_long.append(lt)
        t, lt = dash.load("/flows/bench_w12", "return document.querySelectorAll('table.grid thead button[data-run]').length === 25 "
                                              "&& document.querySelectorAll('table.grid tbody tr').length === 10")
        grid.append(t); grid_long.append(lt)
        # W9's home and runs pages, over this database's million runs.
        t, lt = dash.load("/", "return document.querySelector('#home-runs strong') !== null && document.querySelectorAll('#home-failures tbody tr').length >= 1 && window.__flowkitRendered")
        home.append(t); home_long.append(lt)
        t, lt = dash.load("/runs", "return document.querySelectorAll('#runs tbody tr[data-run]').length === 50 && window.__flowkitRendered")
        runs.append(t); runs_long.append(lt)
        t, lt = dash.load("/runs?state=failed", "return document.querySelectorAll('#runs tbody tr[data-run]').length === 50 && window.__flowkitRendered")
        failed.append(t); failed_long.append(lt)
finally:
    dash.quit()
report("W10", "flow_list_drawn_s", flows, "the dashboard's flow list with 1,000+ flows: navigation to drawn, in headless chromium")
report("W10", "flow_list_longest_main_thread_task_s", flows_long, "the longest task blocking the flow list while it loads")
report("W12", "grid_drawn_s", grid, "bench_w12's grid (25 of its 100,000 runs; a million runs in the database): navigation to drawn")
report("W12", "grid_longest_main_thread_task_s", grid_long, "the longest task blocking that page")
report("W9", "home_drawn_1m_runs_s", home, "the home page (runs by state over 24 h and 7 days, last failures, health, pools) with a million runs in the database: navigation to drawn")
report("W9", "home_longest_main_thread_task_s", home_long, "the longest task blocking the home page")
report("W9", "runs_page_drawn_1m_runs_s", runs, "the runs page across flows (newest 50, task counts) with a million runs: navigation to drawn")
report("W9", "runs_page_failed_drawn_1m_runs_s", failed, "the runs page filtered to failed runs (1 in 97 of the million): navigation to drawn")
report("W9", "runs_page_longest_main_thread_task_s", runs_long + failed_long, "the longest task blocking the runs page")
