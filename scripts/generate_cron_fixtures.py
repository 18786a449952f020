#!/usr/bin/env python3
"""Generates Tests/FlowKitTests/Fixtures/croniter_cases.json: cron expressions with the next
fire instants computed by an independent implementation, Python's croniter.

  pip install croniter==7.0.0 && scripts/generate_cron_fixtures.py

Cases are random (fixed seed) over lists, ranges, steps, names, 7 = Sunday, `?`, presets and
the day-of-month/day-of-week OR rule, in several zones. Instants that fall inside a DST change
are left out: croniter and FlowKit follow different documented rules there, and FlowKit's own
rules are tested separately (CronDSTTests). Also left out: a stepped star (`*/n`) in a day field. Vixie cron reads a field that starts with `*` as
unrestricted (so both day fields must match), croniter applies the OR rule; FlowKit follows
Vixie (CronTests.steppedStarIsUnrestricted)."""
import json, random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
from croniter import croniter

ZONES = ["UTC", "Europe/Madrid", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "Asia/Tokyo"]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

def field(r, lo, hi, names=None, allow_star=True):
    k = r.random()
    if allow_star and k < 0.25:
        return "*"
    if k < 0.4:
        return f"*/{r.randint(2, max(2, (hi - lo) // 2))}"
    if k < 0.55:
        a = r.randint(lo, hi - 1); b = r.randint(a + 1, hi)
        return f"{a}-{b}"
    if k < 0.65:
        a = r.randint(lo, hi - 1); b = r.randint(a + 1, hi)
        return f"{a}-{b}/{r.randint(2, 3)}"
    if k < 0.8:
        vals = sorted(r.sample(range(lo, hi + 1), r.randint(2, min(4, hi - lo + 1))))
        return ",".join(str(v) for v in vals)
    if names and k < 0.9:
        i = r.randint(0, len(names) - 1)
        return names[i]
    return str(r.randint(lo, hi))

def expression(r):
    if r.random() < 0.05:
        return r.choice(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"])
    minute = field(r, 0, 59)
    hour = field(r, 0, 23)
    dom = field(r, 1, 28)
    month = field(r, 1, 12, MONTHS)
    dow = field(r, 0, 6, DAYS)
    if r.random() < 0.05:
        dow = "7"
    if r.random() < 0.05:
        dom = "?"
    # Keep most cases firing often enough to be useful.
    if r.random() < 0.5:
        month = "*"
    return f"{minute} {hour} {dom} {month} {dow}"

def in_dst_change(tz, instant):
    z = ZoneInfo(tz)
    before = (instant - timedelta(hours=3)).astimezone(z).utcoffset()
    after = (instant + timedelta(hours=3)).astimezone(z).utcoffset()
    return before != after

def main():
    r = random.Random(20261122)
    cases = []
    while len(cases) < 300:
        expr = expression(r)
        tz = r.choice(ZONES)
        parts = expr.split()
        if len(parts) == 5:
            dom, dow = parts[2], parts[4]
            star = lambda f: f.startswith("*") or f.startswith("?")
            if dom.startswith("*/") or dow.startswith("*/"):
                continue
        after = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=r.randint(0, 3 * 365 * 86400))
        after = after.replace(second=0)
        try:
            it = croniter(expr, after.astimezone(ZoneInfo(tz)))
            nxt = [it.get_next(datetime).astimezone(timezone.utc) for _ in range(5)]
        except Exception:
            continue
        if any(in_dst_change(tz, n) for n in nxt) or in_dst_change(tz, after):
            continue
        cases.append({"expression": expr, "timeZone": tz, "after": after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "next": [n.strftime("%Y-%m-%dT%H:%M:%SZ") for n in nxt]})
    with open("Tests/FlowKitTests/Fixtures/croniter_cases.json", "w") as f:
        json.dump({"generator": "croniter 7.0.0 via scripts/generate_cron_fixtures.py", "cases": cases}, f, indent=1)
    print(f"wrote {len(cases)} cases")

if __name__ == "__main__":
    main()
