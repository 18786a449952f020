#!/usr/bin/env python3
"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium through
Debian's chromedriver (no browser download).

    browser_test.py BASE_URL ADMIN_TOKEN SCREENSHOT_DIR

Signs in, finds catalunya_data_pipeline, triggers it from the form with a conf, watches it go
green without a reload, opens a task's log, clears a task and sees it run again, pauses and
unpauses the flow, and saves a screenshot of each page. Exits non-zero naming the step that failed.
"""
import json
import re
import os
import sys
import traceback
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, token, shots = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
os.makedirs(shots, exist_ok=True)
FLOW = "catalunya_data_pipeline"


def api(path, method="GET", body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def step(name):
    print(f"browser: {name}", flush=True)


opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000"]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=opts)
# The page redraws what changes live: an element found a moment ago may be gone; look again.
wait = WebDriverWait(driver, 60, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
failed = None


def click(by, selector):
    """Clicks what `selector` finds now, looking again if a live redraw replaced it meanwhile."""
    wait.until(lambda d: d.find_element(by, selector).click() or True)


try:
    step("open the dashboard: reads need a token here, so it asks for one")
    driver.get(base + "/#/flows")
    wait.until(EC.visibility_of_element_located((By.ID, "tok")))
    driver.save_screenshot(f"{shots}/00-sign-in.png")
    driver.find_element(By.ID, "tok").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#tokform button.primary").click()
    row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-flow="{FLOW}"]')))
    assert "Sign out" in driver.find_element(By.ID, "signin").text
    assert token not in driver.current_url, "the token must never be in a URL"
    wait.until(EC.text_to_be_present_in_element((By.ID, "live"), "live"))
    wait.until(lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class").split())
    driver.save_screenshot(f"{shots}/01-flows.png")

    step("trigger it from the form, with a conf")
    click(By.CSS_SELECTOR, f'tr[data-flow="{FLOW}"] button.trigger')
    field = wait.until(EC.visibility_of_element_located((By.NAME, "max_rejected_ratio")))
    field.clear()
    field.send_keys("lots")
    driver.find_element(By.CSS_SELECTOR, "#trig button.primary").click()
    err = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-err="max_rejected_ratio"]').text)
    assert "must be a number" in err, err
    field.clear()
    field.send_keys("0.05")
    driver.save_screenshot(f"{shots}/02-trigger-form.png")
    driver.find_element(By.CSS_SELECTOR, "#trig button.primary").click()
    wait.until(lambda d: d.current_url.split("#", 1)[-1].startswith("/runs/"))
    run_id = urllib.request.unquote(driver.current_url.split("#/runs/", 1)[1].split("?")[0])
    assert api(f"/api/v1/runs/{run_id}")["conf"] == {"max_rejected_ratio": 0.05}

    step(f"watch run {run_id} go green with no reload")
    driver.execute_script("window.__sameDocument = true")
    t0 = time.time()
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1 + p .state"), "success"))
    assert driver.execute_script("return window.__sameDocument === true"), "the page reloaded"
    print(f"browser: the run showed success {time.time() - t0:.1f} s after the trigger", flush=True)
    driver.save_screenshot(f"{shots}/03-run.png")
    # One time format with the CLI, always with its zone: `2026-12-04 17:00:00 UTC`.
    head = driver.find_element(By.CSS_SELECTOR, "main h1 + p").text
    assert re.search(r"logical date \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", head), head

    step("a mapped task shows its instances' tries, not a try of its own")
    mapped = api("/api/v1/flows/example_mapping/runs", "POST", {"conf": {"items": [1, 2, 3, 4]}})["runId"]
    t0 = time.time()
    driver.get(base + "/#/runs/" + urllib.parse.quote(mapped, safe=""))
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1 + p .state"), "success"))
    print(f"browser: the mapped run showed success {time.time() - t0:.1f} s after the trigger", flush=True)
    cell = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-task="double"] td:nth-child(3)').text)
    assert cell == "4 instances · 4 tries, up to 1/1", cell
    driver.get(base + "/#/runs/" + urllib.parse.quote(run_id, safe=""))
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1 + p .state"), "success"))

    step("open a task's log")
    click(By.XPATH, '//tr[@data-task="extract"]//a[contains(@class, "logs")]')
    wait.until(lambda d: d.find_element(By.ID, "log").text.strip() != "")
    driver.save_screenshot(f"{shots}/04-log.png")
    step("search the log (matches highlighted), filter it, download the try's log")
    first_words = driver.find_element(By.ID, "log").text.strip().split("\n")[0].split()
    word = first_words[-1]
    driver.find_element(By.ID, "logq").send_keys(word)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#log mark")))
    assert word.lower() in driver.find_element(By.CSS_SELECTOR, "#log mark").text.lower()
    assert " of " in driver.find_element(By.ID, "logcount").text
    driver.find_element(By.ID, "logq").clear()
    driver.find_element(By.ID, "logq").send_keys("no-such-text-in-any-log")
    wait.until(lambda d: d.find_element(By.ID, "log").text.strip() == "")
    driver.find_element(By.ID, "logq").clear()
    driver.find_element(By.ID, "logq").send_keys(" ")
    click(By.ID, "logdl")
    wait.until(lambda d: (d.execute_script("return window.__flowkitDownloaded") or 0) > 0)

    step("clear a task and see it run again")
    before = api(f"/api/v1/runs/{run_id}/tasks")["tasks"]
    tries_before = {t["taskId"]: len(t["tries"]) for t in before}
    click(By.CSS_SELECTOR, 'tr[data-task="quality_checks"] button.clear')
    def quality_checks():
        return [t for t in api(f"/api/v1/runs/{run_id}/tasks")["tasks"] if t["taskId"] == "quality_checks"][0]
    # The second try runs and succeeds (the API says so), and the page shows it with no reload.
    wait.until(lambda d: quality_checks()["state"] == "success" and len(quality_checks()["tries"]) == tries_before["quality_checks"] + 1)
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-task="quality_checks"] td:nth-child(3)').text.startswith("2/")
               and "success" in d.find_element(By.CSS_SELECTOR, 'tr[data-task="quality_checks"] td:nth-child(2)').text)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1 + p .state"), "success"))
    assert driver.execute_script("return window.__sameDocument === true"), "the page reloaded"

    step("the flow's grid and graph; pause and unpause")
    driver.get(f"{base}/#/flows/{FLOW}")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.grid .sq.s-success")))
    pause = wait.until(EC.element_to_be_clickable((By.ID, "pause")))
    driver.save_screenshot(f"{shots}/05-flow-grid.png")
    click(By.ID, "pause")
    wait.until(EC.text_to_be_present_in_element((By.ID, "pause"), "Unpause"))
    assert api(f"/api/v1/flows/{FLOW}")["isPaused"] is True
    click(By.ID, "pause")
    wait.until(EC.text_to_be_present_in_element((By.ID, "pause"), "Pause"))
    assert api(f"/api/v1/flows/{FLOW}")["isPaused"] is False

    step("connections: set one from the form; its password never shows; the flow page says what it needs")
    driver.get(f"{base}/#/connections")
    wait.until(EC.visibility_of_element_located((By.ID, "setform")))
    driver.find_element(By.ID, "s-name").send_keys("browser_lake")
    driver.find_element(By.ID, "s-value").send_keys("s3://AKIA:very-secret-key@minio:9000/?region=us-east-1")
    driver.find_element(By.ID, "s-desc").send_keys("set from the browser")
    click(By.CSS_SELECTOR, "#setform button[type=submit]")
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "s3://AKIA:***@minio:9000"))
    assert "very-secret-key" not in driver.page_source
    assert api("/api/v1/connections/browser_lake")["description"] == "set from the browser"
    driver.save_screenshot(f"{shots}/06-connections.png")
    driver.get(f"{base}/#/variables")
    wait.until(EC.visibility_of_element_located((By.ID, "setform")))
    driver.find_element(By.ID, "s-name").send_keys("browser_threshold")
    driver.find_element(By.ID, "s-value").send_keys("0.75")
    click(By.CSS_SELECTOR, "#setform button[type=submit]")
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "browser_threshold"))
    assert api("/api/v1/variables/browser_threshold")["value"] == "0.75"
    driver.get(f"{base}/#/connections")
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "browser_lake"))
    driver.execute_script("window.confirm = () => true")
    click(By.CSS_SELECTOR, 'button[data-del="browser_lake"]')
    wait.until(lambda d: "browser_lake" not in d.find_element(By.TAG_NAME, "main").text)
    driver.get(f"{base}/#/flows/{FLOW}")
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "warehouse"))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.needs")))
    step("the flow's Definition: every task with its options, needs and where the code declares it")
    click(By.CSS_SELECTOR, "details#definition > summary")
    wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "table.definition")))
    text = driver.find_element(By.ID, "definition").text
    assert "Flows/CatalunyaDataPipeline.swift:" in text and "build_marts" in text and "warehouse" in text, text[:500]
    driver.save_screenshot(f"{shots}/05b-definition.png")

    step("backfill from the flow page: the preview says what each reprocess choice re-runs; the backfill's page shows progress; pause, resume, cancel")
    # Three ticks already have runs (one made to fail): the preview counts them before anything is created.
    first = api("/api/v1/backfills", "POST", {"flowId": "example_hourly", "from": "2026-10-01T00:00:00Z", "to": "2026-10-01T02:00:00Z"})
    wait.until(lambda d: api(f"/api/v1/backfills/{first['backfill']['id']}")["backfill"]["state"] == "completed")
    victim = api(f"/api/v1/backfills/{first['backfill']['id']}")["ticks"][1]["runId"]
    api(f"/api/v1/runs/{victim}/tasks/tick/mark", "POST", {"state": "failed"})
    driver.get(f"{base}/#/flows/example_hourly")
    click(By.ID, "backfill")
    wait.until(EC.visibility_of_element_located((By.ID, "bf-from")))
    # datetime-local in the browser's zone (UTC here): 2026-10-01 00:00 .. 2026-10-02 23:00 is 48 ticks.
    driver.execute_script("document.getElementById('bf-from').value = '2026-10-01T00:00:00';"
                          "document.getElementById('bf-to').value = '2026-10-02T23:00:00';")
    driver.find_element(By.ID, "bf-max").clear()
    driver.find_element(By.ID, "bf-max").send_keys("1")
    driver.find_element(By.CSS_SELECTOR, "#bf-reprocess option[value=failed]").click()
    click(By.ID, "bf-preview")
    wait.until(EC.text_to_be_present_in_element((By.ID, "bf-summary"), "45 runs to create, 1 to re-run, 2 ticks skipped"))
    options = driver.find_element(By.ID, "bf-reprocess").text
    assert "none: skip them (re-runs 0)" in options and "(re-runs 1)" in options and "(re-runs 3)" in options, options
    assert "its run succeeded" in driver.find_element(By.ID, "bf-plan").text
    driver.save_screenshot(f"{shots}/08-backfill-preview.png")
    click(By.ID, "bf-create")
    wait.until(EC.presence_of_element_located((By.ID, "bf-state")))
    bf_id = driver.execute_script("return location.hash").split("/")[-1]
    assert api(f"/api/v1/backfills/{bf_id}")["backfill"]["maxActiveRuns"] == 1
    click(By.ID, "bf-pause")
    wait.until(EC.text_to_be_present_in_element((By.ID, "bf-state"), "paused"))
    click(By.ID, "bf-resume")
    wait.until(EC.text_to_be_present_in_element((By.ID, "bf-state"), "running"))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.ticks .sq.s-success")))
    driver.save_screenshot(f"{shots}/09-backfill.png")
    driver.execute_script("window.confirm = () => true")
    click(By.ID, "bf-cancelb")
    wait.until(EC.text_to_be_present_in_element((By.ID, "bf-state"), "cancelled"))
    b = api(f"/api/v1/backfills/{bf_id}")["backfill"]
    assert b["state"] == "cancelled" and b["runs"].get("queued", 0) == 0, b
    driver.get(f"{base}/#/backfills")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'#backfills a[href="#/backfills/{bf_id}"]')))
    assert "cancelled" in driver.find_element(By.ID, "backfills").text and "completed" in driver.find_element(By.ID, "backfills").text
    driver.save_screenshot(f"{shots}/10-backfills.png")

    step("approvals: example_approval waits; the run page asks; approving it there publishes, naming who decided")
    waiting = api("/api/v1/flows/example_approval/runs", "POST", {"conf": {"timeout": 600}})["runId"]
    wait.until(lambda d: len(api(f"/api/v1/approvals?run_id={waiting}")["approvals"]) == 1)
    driver.get(f"{base}/#/approvals")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'#approvals .approval[data-run="{waiting}"]')))
    assert "Publish this release?" in driver.find_element(By.ID, "approvals").text
    driver.save_screenshot(f"{shots}/11-approvals.png")
    driver.get(f"{base}/#/runs/{waiting}")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.approval[data-task="approve"] button[data-decision="approve"]')))
    driver.find_element(By.CSS_SELECTOR, '.approval input[name="__comment"]').send_keys("ship it")
    driver.save_screenshot(f"{shots}/12-approval-banner.png")
    click(By.CSS_SELECTOR, '.approval[data-task="approve"] button[data-decision="approve"]')
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main h1 + p .state"), "success"))
    publish = [t for t in api(f"/api/v1/runs/{waiting}/tasks")["tasks"] if t["taskId"] == "publish"][0]
    assert publish["result"]["approved_by"].startswith("config:"), publish
    approve = [t for t in api(f"/api/v1/runs/{waiting}/tasks")["tasks"] if t["taskId"] == "approve"][0]
    assert approve["result"]["comment"] == "ship it", approve
    assert not driver.find_elements(By.CSS_SELECTOR, ".approval"), "the banner is gone once decided"

    step("home: runs by state, the last failures with their errors, health, workers, approvals waiting")
    # example_branch with a pick that is neither branch fails `choose`, naming the valid ones.
    alert = api("/api/v1/flows/example_branch/runs", "POST", {"conf": {"pick": "middle"}})["runId"]
    wait.until(lambda d: api(f"/api/v1/runs/{alert}")["state"] == "failed")
    driver.get(f"{base}/#/")
    wait.until(EC.text_to_be_present_in_element((By.ID, "home-runs"), "Last 24 h"))
    home = driver.find_element(By.TAG_NAME, "main").text
    assert "success" in driver.find_element(By.ID, "home-runs").text, home[:400]
    assert "worker" in driver.find_element(By.ID, "home-health").text and "leader" in driver.find_element(By.ID, "home-health").text, home[:400]
    # Run ids hold ':', which the page's links carry percent-encoded.
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'#home-failures a[href="#/runs/{urllib.parse.quote(alert, safe="")}?task=choose"]')))
    assert "example_branch" in driver.find_element(By.ID, "home-failing").text
    assert "middle" in driver.find_element(By.ID, "home-failures").text, driver.find_element(By.ID, "home-failures").text
    driver.save_screenshot(f"{shots}/02-home.png")
    click(By.CSS_SELECTOR, '#home-runs a[href="#/runs?state=success"]')

    step("runs across flows: filter by state, kind and flow; the grid's heads show kind and date")
    # Sixty backfill runs at once (the immediate form), so that the runs page has more than one page of them.
    api("/api/v1/flows/example_hourly/backfill", "POST", {"from": "2026-09-01T00:00:00Z", "to": "2026-09-03T11:00:00Z"})
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#runs tbody tr[data-run]")))
    assert all("success" in r.text for r in driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]"))
    driver.find_element(By.CSS_SELECTOR, '#runfilter select[name="state"] option[value=""]').click()
    driver.find_element(By.CSS_SELECTOR, '#runfilter select[name="kind"] option[value="backfill"]').click()
    click(By.CSS_SELECTOR, "#runfilter button[type=submit]")
    wait.until(lambda d: "kind=backfill" in d.current_url and "state=" not in d.current_url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]")
               and all("backfill" in r.text for r in d.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]")))
    rows = len(driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr[data-run]"))
    assert rows == 50 and driver.find_elements(By.ID, "older"), "more than one page of backfill runs"
    click(By.ID, "older")
    wait.until(EC.presence_of_element_located((By.ID, "newer")))
    driver.save_screenshot(f"{shots}/03-runs.png")
    driver.get(f"{base}/#/flows/example_hourly")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "table.grid thead .runhead svg.durbar")))
    head = driver.find_element(By.CSS_SELECTOR, "table.grid thead .runhead")
    assert "backfill" in head.get_attribute("title") and head.find_element(By.CSS_SELECTOR, ".kindicon").text, head.get_attribute("title")
    wait.until(EC.text_to_be_present_in_element((By.ID, "rundetails"), "logical date"))

    step("the flow list: search, filter by the last run's state, sort; paused flows apart")
    api("/api/v1/flows/example_sleep/pause", "POST")
    driver.get(f"{base}/#/flows")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, 'tbody.paused-flows tr[data-flow="example_sleep"]')))
    driver.find_element(By.ID, "flowq").send_keys("catalunya")
    wait.until(lambda d: [r.get_attribute("data-flow") for r in d.find_elements(By.CSS_SELECTOR, "#flows tr[data-flow]")] == [FLOW])
    assert driver.switch_to.active_element.get_attribute("id") == "flowq", "typing keeps the focus"
    driver.find_element(By.ID, "flowq").clear()
    driver.find_element(By.ID, "flowq").send_keys(" ")
    driver.find_element(By.CSS_SELECTOR, '#lastf option[value="failed"]').click()
    wait.until(lambda d: [r.get_attribute("data-flow") for r in d.find_elements(By.CSS_SELECTOR, "#flows tr[data-flow]")] == ["example_branch"])
    driver.find_element(By.CSS_SELECTOR, '#lastf option[value=""]').click()
    driver.find_element(By.CSS_SELECTOR, '#sortf option[value="last"]').click()
    ran = [f for f in api("/api/v1/flows")["flows"] if f["isActive"] and not f["isPaused"] and f.get("latestRun")]
    newest = max(ran, key=lambda f: f["latestRun"]["at"])["flowId"]
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#flows tbody tr[data-flow]").get_attribute("data-flow") == newest)
    api("/api/v1/flows/example_sleep/unpause", "POST")

    step("pools (slots edited in place), assets and their events, notifications, the audit log filtered")
    driver.get(f"{base}/#/pools")
    slots = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-pool="example_pool"] input[name="slots"]')))
    slots.clear()
    slots.send_keys("3")
    click(By.CSS_SELECTOR, 'tr[data-pool="example_pool"] form.slots button')
    wait.until(lambda d: [p for p in api("/api/v1/pools")["pools"] if p["name"] == "example_pool"][0]["slots"] == 3)
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, 'tr[data-pool="example_pool"]'), "0 / 3"))
    api("/api/v1/pools/example_pool", "PUT", {"slots": 2})
    produced = api("/api/v1/flows/example_asset_producer/runs", "POST", {})["runId"]
    wait.until(lambda d: api(f"/api/v1/runs/{produced}")["state"] == "success")
    driver.get(f"{base}/#/assets")
    click(By.CSS_SELECTOR, '#assets a[href="#/assets?uri=demo%3A%2F%2Fnumbers"]')
    wait.until(EC.text_to_be_present_in_element((By.ID, "asset-events"), produced))
    assert "example_asset_consumer" in driver.find_element(By.ID, "assets").text
    # The lineage: the producing task, an outside source (an event posted through the API), the
    # asset and the consuming flow, each a link.
    api("/api/v1/assets/events", "POST", {"uri": "demo://numbers", "extra": {"from": "browser test"}})
    driver.refresh()
    wait.until(EC.text_to_be_present_in_element((By.ID, "assets"), "outside (api)"))
    graph = driver.find_element(By.CSS_SELECTOR, '#asset-graph svg[aria-label="lineage of demo://numbers"]')
    hrefs = {a.get_dom_attribute("href").split("#", 1)[-1] for a in graph.find_elements(By.CSS_SELECTOR, "a")}
    assert {"/flows/example_asset_producer", "/flows/example_asset_consumer"} <= hrefs, hrefs
    assert "example_asset_producer.publish" in graph.text and "outside (api)" in graph.text, graph.text
    driver.save_screenshot(f"{shots}/12b-asset-lineage.png")
    driver.get(f"{base}/#/notifications")
    wait.until(EC.presence_of_element_located((By.ID, "notifications")))
    driver.get(f"{base}/#/audit")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#audit tbody tr")))
    driver.find_element(By.CSS_SELECTOR, '#auditf input[name="action"]').send_keys("decide")
    click(By.CSS_SELECTOR, "#auditf button[type=submit]")
    wait.until(lambda d: "action=decide" in d.current_url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audit tbody tr td")
               and all(r.find_elements(By.TAG_NAME, "td")[2].text == "decide" for r in d.find_elements(By.CSS_SELECTOR, "#audit tbody tr")))
    assert f"{waiting}/approve" in driver.find_element(By.ID, "audit").text
    driver.save_screenshot(f"{shots}/13-audit.png")

    step("workers and health")
    driver.get(f"{base}/#/workers")
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "online"))
    driver.save_screenshot(f"{shots}/06-workers.png")
    driver.get(f"{base}/#/health")
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "leader lock"))
    driver.save_screenshot(f"{shots}/07-health.png")

    step("moving on before a page has loaded shows the page moved to, and it stays")
    # Health needs two answers, flows one: the health page finishes last and must not draw over the flows.
    driver.execute_script("location.hash = '#/health'; setTimeout(() => { location.hash = '#/flows'; }, 0)")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-flow="{FLOW}"]')))
    time.sleep(6)   # longer than the health page's 5 s redraw
    assert driver.find_element(By.CSS_SELECTOR, "main h1").text == "Flows", driver.find_element(By.CSS_SELECTOR, "main h1").text

    step("keyboard: the flows table is reachable with Tab")
    driver.get(f"{base}/#/flows")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-flow="{FLOW}"]')))
    for _ in range(12):
        driver.switch_to.active_element.send_keys(Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.tag_name in ("a", "button", "input", "select"), focused.tag_name
    # Errors in the page's own code; a 401 before signing in is the API's answer, not a bug.
    logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "Failed to load resource" not in e.get("message", "")]
    assert not logs, f"console errors: {logs}"
except Exception as e:  # noqa: BLE001
    failed = e
    traceback.print_exc()
    driver.save_screenshot(f"{shots}/failure.png")
finally:
    driver.quit()
if failed:
    print(f"browser: FAILED: {type(failed).__name__}: {failed}", file=sys.stderr)
    sys.exit(1)
print("browser: all steps passed; screenshots in " + shots)
