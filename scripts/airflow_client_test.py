#!/usr/bin/env python3
"""FlowKit driven by Airflow's official REST client (apache-airflow-client, pinned in
scripts/testvenv.sh), as a CI job or a monitoring script written for Airflow 3 would drive it.

    airflow_client_test.py BASE_URL ADMIN_TOKEN AIRFLOW_USER AIRFLOW_PASSWORD

Authenticates at /auth/token (a configured user, and an API token as the password), lists and
gets DAGs, pauses and unpauses one, triggers catalunya_data_pipeline with a conf and a run id
of its own, polls it to success, lists its task instances, reads a log (JSON and text) and a
`return_value` XCom, fails example_retry on purpose and clears it to success, lists and patches
pools, reads assets, health and version, and checks the errors, the roles and the audit log.
Exits non-zero on the first thing that is not as Airflow's client expects.
"""
import json
import sys
import time
import urllib.request

import airflow_client.client as af
from airflow_client.client.api.asset_api import AssetApi
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.monitor_api import MonitorApi
from airflow_client.client.api.pool_api import PoolApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.api.version_api import VersionApi
from airflow_client.client.api.x_com_api import XComApi
from airflow_client.client.models.dag_patch_body import DAGPatchBody
from airflow_client.client.models.dag_run_clear_body import DAGRunClearBody
from airflow_client.client.models.dag_runs_batch_body import DAGRunsBatchBody
from airflow_client.client.models.pool_patch_body import PoolPatchBody
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from airflow_client.client.rest import ApiException

base, admin_token, user, password = sys.argv[1:5]
FLOW = "catalunya_data_pipeline"


def step(name):
    print(f"airflow client: {name}", flush=True)


def native(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + admin_token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def token_for(username, secret):
    """Airflow 3's documented way to authenticate a client: POST /auth/token."""
    req = urllib.request.Request(base + "/auth/token", method="POST", data=json.dumps({"username": username, "password": secret}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201, r.status
        return json.loads(r.read())["access_token"]


def client(token):
    return af.ApiClient(af.Configuration(host=base, access_token=token))


def expect_error(status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == status, (e.status, e.body)
        detail = json.loads(e.body)["detail"]
        assert isinstance(detail, str) and detail, e.body
        return detail
    raise AssertionError(f"{fn.__name__} succeeded; expected HTTP {status}")


def wait_for(what, predicate, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


step("authenticate: a configured user's name and password, and an API token, each for a bearer token")
token = token_for(user, password)
assert token.startswith("fkt_"), token
assert token_for("anyone", admin_token) == admin_token
try:
    token_for(user, "not-the-password")
    raise AssertionError("a wrong password got a token")
except urllib.error.HTTPError as e:
    assert e.code == 401 and "invalid username or password" in json.loads(e.read())["detail"], e.code
api = client(token)
dags, runs, tis, xcoms, pools = DAGApi(api), DagRunApi(api), TaskInstanceApi(api), XComApi(api), PoolApi(api)

step("version and health")
assert VersionApi(api).get_version().version
health = MonitorApi(api).get_health()
assert health.metadatabase.status == "healthy" and health.scheduler.status == "healthy", health

step("list DAGs (limit, offset, tags, dag_id_pattern, paused) and get one, with its details")
everything = dags.get_dags(limit=100)
ids = [d.dag_id for d in everything.dags]
assert FLOW in ids and everything.total_entries == len(ids), ids
assert ids == sorted(ids)
page = dags.get_dags(limit=2, offset=1)
assert [d.dag_id for d in page.dags] == ids[1:3] and page.total_entries == len(ids)
tagged = dags.get_dags(tags=["catalunya"])
assert [d.dag_id for d in tagged.dags] == [FLOW], tagged
assert [d.dag_id for d in dags.get_dags(dag_id_pattern="catalunya").dags] == [FLOW]
dag = dags.get_dag(FLOW)
assert dag.dag_id == FLOW and not dag.is_paused and dag.timetable_summary and dag.owners, dag
assert {t.name for t in dag.tags} >= {"catalunya"}
details = dags.get_dag_details(FLOW)
assert details.max_active_runs == dag.max_active_runs and details.timezone and "max_rejected_ratio" in (details.params or {}), details

step("pause and unpause")
assert dags.patch_dag(FLOW, DAGPatchBody(is_paused=True)).is_paused is True
assert FLOW in [d.dag_id for d in dags.get_dags(paused=True).dags]
assert native(f"/api/v1/flows/{FLOW}")["isPaused"] is True
assert dags.patch_dag(FLOW, DAGPatchBody(is_paused=False)).is_paused is False

step("trigger catalunya_data_pipeline with a conf and a run id of its own; poll it to success")
run_id = f"ci-{int(time.time() * 1000)}"
made = runs.trigger_dag_run(FLOW, TriggerDAGRunPostBody(dag_run_id=run_id, logical_date=None, conf={"max_rejected_ratio": 0.05}))
assert made.dag_run_id == run_id and made.run_type.value == "manual" and made.conf == {"max_rejected_ratio": 0.05}, made
assert made.state.value in ("queued", "running")
assert native(f"/api/v1/runs/{run_id}")["conf"] == {"max_rejected_ratio": 0.05}
detail = expect_error(409, runs.trigger_dag_run, FLOW, TriggerDAGRunPostBody(dag_run_id=run_id, logical_date=None))
assert "already exists" in detail, detail
# Ten clients name one new run id at once: one run is made, the others hear it exists.
from concurrent.futures import ThreadPoolExecutor
racing = f"ci-race-{int(time.time() * 1000)}"


def race(_):
    try:
        DagRunApi(client(token)).trigger_dag_run("example_sleep", TriggerDAGRunPostBody(dag_run_id=racing, logical_date=None, conf={"seconds": 0}))
        return 200
    except ApiException as e:
        return e.status


with ThreadPoolExecutor(10) as pool:
    outcomes = sorted(pool.map(race, range(10)))
assert outcomes == [200] + [409] * 9, outcomes
assert len([r for r in runs.get_dag_runs("example_sleep", limit=100).dag_runs if r.dag_run_id == racing]) == 1
done = wait_for("the run to succeed", lambda: (lambda r: r if r.state.value in ("success", "failed") else None)(runs.get_dag_run(FLOW, run_id)))
assert done.state.value == "success", done
assert done.start_date and done.end_date and done.duration is not None and done.dag_versions, done
listed = runs.get_dag_runs(FLOW, state=["success"], order_by=["-id"], limit=5)
assert run_id in [r.dag_run_id for r in listed.dag_runs], listed
batch = runs.get_list_dag_runs_batch("~", DAGRunsBatchBody(dag_ids=[FLOW], states=["success"], page_limit=10))
assert run_id in [r.dag_run_id for r in batch.dag_runs] and batch.total_entries >= 1

step("its task instances, one task's tries, log and return_value XCom")
listing = tis.get_task_instances(FLOW, run_id)
native_tasks = native(f"/api/v1/runs/{run_id}/tasks")["tasks"]
assert sorted(t.task_id for t in listing.task_instances) == sorted(t["taskId"] for t in native_tasks), listing
assert all(t.state.value == "success" for t in listing.task_instances), [(t.task_id, t.state) for t in listing.task_instances]
assert listing.total_entries == len(native_tasks)
extract = tis.get_task_instance(FLOW, run_id, "extract")
assert extract.try_number == 1 and extract.start_date and extract.hostname, extract
tries = tis.get_task_instance_tries(FLOW, run_id, "extract")
assert [t.try_number for t in tries.task_instances] == [1] and tries.task_instances[0].state.value == "success"
log = tis.get_log(FLOW, run_id, "extract", 1, full_content=True)
lines = [m.event for m in log.content.actual_instance]
native_log = native(f"/api/v1/runs/{run_id}/tasks/extract/logs?try=1")["lines"]
assert lines == [l["line"] for l in native_log] and lines, lines
# The text form, read raw (the generated client would parse it as the JSON model).
raw = tis.get_log_without_preload_content(FLOW, run_id, "extract", 1, accept="text/plain")
text = raw.data.decode()
assert raw.status == 200 and raw.headers["Content-Type"].startswith("text/plain") and lines[0] in text, text
result = next(t["result"] for t in native_tasks if t["taskId"] == "extract")
xcom = xcoms.get_xcom_entry(dag_id=FLOW, task_id="extract", dag_run_id=run_id, xcom_key="return_value")
assert xcom.actual_instance.value == result, (xcom, result)
assert [e.key for e in xcoms.get_xcom_entries(FLOW, run_id, "extract").xcom_entries] == ["return_value"]

step("a task fails (example_retry, every try failing); clearing it makes it run again and succeed")
failing = runs.trigger_dag_run("example_retry", TriggerDAGRunPostBody(logical_date=None, conf={"fail_tries": 3})).dag_run_id
failed = wait_for("example_retry to fail", lambda: (lambda r: r if r.state.value in ("success", "failed") else None)(runs.get_dag_run("example_retry", failing)), 120)
assert failed.state.value == "failed", failed
assert tis.get_task_instance("example_retry", failing, "flaky").state.value == "failed"
# A dry run's answer is read raw: apache-airflow-client 3.3.2 cannot parse it from Airflow
# either (every task instance matches both of TaskInstancesInner's oneOf schemas).
dry = runs.clear_dag_run_without_preload_content("example_retry", failing, DAGRunClearBody(dry_run=True, only_failed=True))
assert dry.status == 200 and [t["task_id"] for t in json.loads(dry.data)["task_instances"]] == ["flaky"], dry.data
cleared = runs.clear_dag_run("example_retry", failing, DAGRunClearBody(dry_run=False, only_failed=True))
assert cleared.actual_instance.dag_run_id == failing
again = wait_for("the cleared run to succeed", lambda: (lambda r: r if r.state.value in ("success", "failed") else None)(runs.get_dag_run("example_retry", failing)), 120)
assert again.state.value == "success", again
flaky = tis.get_task_instance("example_retry", failing, "flaky")
assert flaky.state.value == "success" and flaky.try_number == 4, flaky
assert [t.try_number for t in tis.get_task_instance_tries("example_retry", failing, "flaky").task_instances] == [1, 2, 3, 4]

step("pools: list, get, patch slots")
listed_pools = pools.get_pools()
assert "example_pool" in [p.name for p in listed_pools.pools] and listed_pools.total_entries == len(listed_pools.pools)
pool = pools.get_pool("example_pool")
patched = pools.patch_pool("example_pool", PoolPatchBody(pool="example_pool", slots=pool.slots + 1), update_mask=["slots"])
assert patched.slots == pool.slots + 1 and patched.open_slots == patched.slots - patched.running_slots
pools.patch_pool("example_pool", PoolPatchBody(pool="example_pool", slots=pool.slots), update_mask=["slots"])

step("assets and their events")
assets = AssetApi(api).get_assets()
assert assets.total_entries == len(assets.assets) and all(a.uri for a in assets.assets)
numbers = next((a for a in assets.assets if a.uri == "demo://numbers"), None)
assert numbers is not None and [t.dag_id for t in numbers.producing_tasks] == ["example_asset_producer"], numbers
AssetApi(api).get_asset_events(asset_id=numbers.id)

step("errors are Airflow's {detail}; unknown DAGs and runs are 404; a filter FlowKit does not serve is named")
assert "nope" in expect_error(404, dags.get_dag, "nope")
expect_error(404, runs.get_dag_run, FLOW, "no-such-run")
expect_error(404, runs.get_dag_run, "example_retry", run_id)  # a run of another DAG
assert "bundle_name" in expect_error(400, dags.get_dags, bundle_name="x")

step("roles: a read user reads and cannot write; writes are in FlowKit's audit log under the user's token")
reader = client(token_for(user + "-reader", password + "-reader"))
assert FLOW in [d.dag_id for d in DAGApi(reader).get_dags().dags]
expect_error(403, DAGApi(reader).patch_dag, FLOW, DAGPatchBody(is_paused=True))
audit = native("/api/v1/audit?limit=200")["entries"]
triggers = [e for e in audit if e["action"] == "trigger" and e["target"] == run_id]
assert triggers and triggers[0]["actor"].startswith(f"token:airflow-{user}-"), triggers
print("airflow client: all steps passed", flush=True)
