#!/usr/bin/env python3
"""W9: the dashboard in a real browser (Debian's headless chromium, Selenium).

    bench_w9.py BASE_URL TOKEN W9_RUN W1_RUN REPEATS

Prints BENCH lines: the grid of bench_w9 (1,000 tasks × 25 runs) from navigation to drawn, and
the time to redraw it for another run (a click); the page of W1_RUN (10,000 tasks) from
navigation to drawn, and its longest main-thread task (what the user feels as a freeze).
"""
import sys

from selenium.webdriver.common.by import By

from bench_browser import Dashboard, report

base, token, w9_run, w1_run, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
dash = Dashboard(base, token)
driver, wait, load = dash.driver, dash.wait, dash.load

grid, click, grid_long, page, page_long = [], [], [], [], []
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
finally:
    driver.quit()
report("W9", "grid_1000x25_drawn_s", grid, "bench_w9 (1,000 tasks) × 25 runs: navigation to the grid drawn, in headless chromium")
report("W9", "grid_rerender_on_click_s", click, "choosing another run: the grid and graph redrawn from what is loaded")
report("W9", "grid_longest_main_thread_task_s", grid_long, "the longest task blocking the page while the grid loads")
report("W9", "run_10000_tasks_drawn_s", page, "a run of 10,000 tasks (W1): navigation to its page drawn (first 500 rows, find and more for the rest)")
report("W9", "run_10000_longest_main_thread_task_s", page_long, "the longest task blocking that page: the freeze a user would feel")
