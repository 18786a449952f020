#!/usr/bin/env python3
"""A real Celery 5 client: sends flowkit.echo to a queue served by a Swift FlowKit worker and
waits for the result through Celery's Redis result backend. Prints the result as JSON.

  REDIS_URL=redis://127.0.0.1:6379/0 python client_roundtrip.py QUEUE
"""
import json, os, sys
from celery import Celery

url = os.environ["REDIS_URL"]
app = Celery("flowkit-interop", broker=url, backend=url)
app.conf.broker_connection_retry_on_startup = True
queue = sys.argv[1] if len(sys.argv) > 1 else "default"
result = app.send_task("flowkit.echo", args=[2, "dos", {"tres": 3.5}], kwargs={"city": "Tarragona"}, queue=queue)
value = result.get(timeout=30)
print(json.dumps({"task_id": result.id, "status": result.status, "result": value}, sort_keys=True))
