"""What the dashboard benchmarks (W9, W10, W12) share: Debian's headless chromium through
Selenium, signed in with a token, and a page load timed from navigation to the page's own
`window.__flowkitRendered` mark, with the longest main-thread task (Long Tasks API) as the freeze."""
import statistics

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


class Dashboard:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1000"]:
            opts.add_argument(a)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.wait = WebDriverWait(self.driver, 120, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,))
        # Long tasks (over 50 ms on the main thread), from the start of every page.
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
          window.__longTasks = [];
          new PerformanceObserver((l) => l.getEntries().forEach((e) => window.__longTasks.push(e.duration))).observe({type: 'longtask', buffered: true});
        """})
        self.driver.get(self.base + "/")
        self.driver.execute_script("sessionStorage.setItem('flowkit-token', arguments[0])", token)
        self.loads = 0

    def load(self, hash_, ready_js):
        """Seconds from navigation to the page drawn, and its longest main-thread task in seconds."""
        # A new query string each time: a new document, not a hash change in the old one.
        self.loads += 1
        self.driver.get(f"{self.base}/?load={self.loads}#{hash_}")
        self.wait.until(lambda d: d.execute_script(ready_js))
        return (self.driver.execute_script("return window.__flowkitRendered") / 1000,
                max(self.driver.execute_script("return window.__longTasks") or [0]) / 1000)

    def quit(self):
        self.driver.quit()


def report(id_, metric, values, note):
    print(f"BENCH id={id_} metric={metric} value={statistics.median(values):.3g} runs={len(values)} "
          f"min={min(values):.3g} max={max(values):.3g} note=\"{note}\"", flush=True)
