"""Python tasks that FlowKit flows run on a real Celery worker (interop tests).

  cd scripts/celery && REDIS_URL=redis://127.0.0.1:6379/0 celery -A flowkit_python_tasks worker -Q python
"""
import os
from celery import Celery

url = os.environ["REDIS_URL"]
app = Celery("flowkit_python_tasks", broker=url, backend=url)
app.conf.task_track_started = True
app.conf.broker_connection_retry_on_startup = True


@app.task(name="flowkit_test.multiply")
def multiply(**params):
    """Gets the run's params as keyword arguments; its return value becomes the task's result."""
    return {"product": params["x"] * params["y"], "by": "python"}


@app.task(name="flowkit_test.fail")
def fail(**params):
    raise ValueError("python says no")


@app.task(name="flowkit_test.describe")
def describe(flowkit_context=None, **params):
    """Declared with `context: true`: FlowKit's context arrives as the `flowkit_context` kwarg."""
    ctx = flowkit_context or {}
    return {"run_id": ctx.get("run_id"), "task_id": ctx.get("task_id"), "try_number": ctx.get("try_number"),
            "product_upstream": ctx.get("upstream", {}).get("multiply", {}).get("product"),
            "logical_date": ctx.get("logical_date"), "x": params.get("x")}


@app.task(name="flowkit_test.sleep_long")
def sleep_long(pidfile="/dev/null", **params):
    """Runs until killed: a cancelled FlowKit run must revoke it with terminate."""
    import time
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)
    return {"slept": 120}
