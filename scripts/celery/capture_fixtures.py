#!/usr/bin/env python3
"""Captures task messages exactly as a real Celery 5 client writes them to Redis, for the
codec tests (Tests/WorkerRuntimeTests/Fixtures/celery5_messages.json).

  REDIS_URL=redis://127.0.0.1:26390/15 python capture_fixtures.py OUT.json
"""
import json, os, sys
import redis
from celery import Celery

url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("capture", broker=url, backend=url)
r = redis.Redis.from_url(url)
r.flushdb()
app.send_task("tasks.add", args=[2, 3], queue="fixtures")
app.send_task("tasks.kw", kwargs={"name": "Girona", "values": [1.5, None, True]}, queue="fixtures", priority=6)
app.send_task("tasks.eta", args=["x"], countdown=0, expires=3600, queue="fixtures", time_limit=30, soft_time_limit=20)
app.send_task("flowkit.echo", args=["é ñ ç", {"nested": [1, 2]}], kwargs={"k": "v"}, queue="fixtures")
messages = []
for key in sorted(k.decode() for k in r.keys("fixtures*")):
    for raw in r.lrange(key, 0, -1):
        messages.append({"list": key, "raw": raw.decode()})
json.dump({"celery": __import__("celery").__version__, "messages": messages}, open(sys.argv[1], "w"), indent=1, ensure_ascii=False)
print(f"captured {len(messages)} messages")
