#!/usr/bin/env python3
"""W9: the dashboard in a real browser (Debian's headless chromium, Selenium).

    bench_w9.py BASE_URL TOKEN W9_RUN W1_RUN REPEATS

Prints BENCH lines: the grid of bench_w9 (1,000 tasks × 25 runs) from navigation to drawn, and
the time to redraw it for another run (a click); the page of W1_RUN (10,000 tasks) from
navigation to drawn, and its longest main-thread task (what the user feels as a freeze); and the
log of bench_w9_log (100,000 lines written in about ten seconds) followed live from the moment the
run is triggered: seconds to every line shown, and the longest main-thread task meanwhile.
"""
import json
import sys
import time
import urllib.request

from selenium.webdriver.common.by import By

from bench_browser import Dashboard, report

base, token, w9_run, w1_run, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
dash = Dashboard(base, token)
driver, wait, load = dash.driver, dash.wait, dash.load

grid, click, grid_long, page, page_long, follow, follow_long, scroll = [], [], [], [], [], [], [], []


def trigger(flow):
    req = urllib.request.Request(f"{base}/api/v1/flows/{flow}/runs", data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=30))["runId"]


try:
    for _ in range(repeats):
        t, lt = load("/flows/bench_w9", "return document.querySelectorAll('table.grid tbody tr').length === 1000 "
                                        "&& document.querySelectorAll('table.grid thead button[data-run]').length === 25")
        grid.append(t); grid_long.append(lt)
        t0 = driver.execute_script("return performance.now()")
        driver.find_elements(By.CSS_SELECTOR, "table.grid thead button[data-run]")[0].click()
        wait.until(lambda d: d.execute_script("return window.__flowkitRendered") > t0)
        click.append((driver.execute_script("return window.__flowkitRendered") - t0) / 1000)
        t, lt = load(f"/runs/{w1_run}", "return document.querySelectorAll('tr[data-task]').length >= 500")
        page.append(t); page_long.append(lt)
        # Following a log of 100,000 lines as it is written.
        run = trigger("bench_w9_log")
        t0 = time.time()
        dash.load(f"/runs/{run}?task=talk", "return document.getElementById('log') !== null")
        wait.until(lambda d: d.execute_script("return window.__flowkitLogLines === 100000"))
        follow.append(time.time() - t0)
        follow_long.append(max(driver.execute_script("return window.__longTasks") or [0]) / 1000)
        # Scrolling to the middle of those lines: the time to the lines there drawn.
        t1 = driver.execute_script("""const el = document.getElementById('log'); el.scrollTop = el.scrollHeight / 2;
                                      return performance.now()""")
        wait.until(lambda d: d.execute_script("return /line 5\\d{4} of/.test(document.getElementById('log').innerText)"))
        scroll.append((driver.execute_script("return performance.now()") - t1) / 1000)
finally:
    driver.quit()
report("W9", "grid_1000x25_drawn_s", grid, "bench_w9 (1,000 tasks) × 25 runs: navigation to the grid drawn, in headless chromium")
report("W9", "grid_rerender_on_click_s", click, "choosing another run: the grid and graph redrawn from what is loaded")
report("W9", "grid_longest_main_thread_task_s", grid_long, "the longest task blocking the page while the grid loads")
report("W9", "run_10000_tasks_drawn_s", page, "a run of 10,000 tasks (W1): navigation to its page drawn (first 500 rows, find and more for the rest)")
report("W9", "run_10000_longest_main_thread_task_s", page_long, "the longest task blocking that page: the freeze a user would feel")
report("W9", "log_100000_followed_s", follow, "bench_w9_log (100,000 lines written in ~10 s) followed live: trigger to every line shown")
report("W9", "log_100000_longest_main_thread_task_s", follow_long, "the longest task blocking the run page while it follows those lines")
report("W9", "log_100000_scroll_to_middle_s", scroll, "scrolled to the middle of the 100,000 lines: to those lines drawn")
