public import FlowKit
import Foundation

/// Fails its first try and succeeds on the second: shows retries in demos and fault tests.
/// `conf.fail_tries` (default 1) sets how many tries fail; 3 or more fails the run.
public let exampleRetry = Flow(
    "example_retry",
    description: "one task that fails on try 1 and succeeds on try 2",
    tags: ["example"],
    params: [Param("fail_tries", .int, default: 1, description: "how many tries fail before one succeeds")],
    defaults: TaskOptions(retry: RetryPolicy(retries: 2, delay: .seconds(1)))
) { f in
    f.task("flaky") { ctx in
        let failTries = ctx.param("fail_tries")?.intValue ?? 1
        if ctx.tryNumber <= failTries { throw TaskError("failing on purpose on try \(ctx.tryNumber) (fail_tries = \(failTries))") }
        ctx.log("succeeded on try \(ctx.tryNumber)")
        return ["try": .int(ctx.tryNumber)]
    }
}

/// One task that sleeps for `conf.seconds` (default 10): for cancel, timeout and fault tests.
public let exampleSleep = Flow(
    "example_sleep",
    description: "sleeps for conf.seconds",
    tags: ["example"],
    params: [Param("seconds", .number, default: 10)]
) { f in
    f.task("sleep") { ctx in
        let seconds = ctx.param("seconds")?.doubleValue ?? 10
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            try ctx.checkCancellation()
            try await Task.sleep(for: .milliseconds(min(100, max(1, Int(deadline.timeIntervalSinceNow * 1000)))))
        }
        ctx.log("slept \(seconds)s")
        return ["slept": .double(seconds)]
    }
}

/// One no-op task every hour, no catchup: the flow `make stress` backfills, and the shortest
/// example of a cron schedule.
public let exampleHourly = Flow(
    "example_hourly",
    description: "a no-op task every hour (backfill and schedule demos)",
    tags: ["example"],
    schedule: .cron("0 * * * *")
) { f in
    f.task("tick") { ctx in ["logicalDate": .string(Instant.format(ctx.logicalDate))] }
}

/// A branch chosen at run time: `choose` follows `left` or `right` by `conf.pick`; the other is
/// skipped, and `join` (none_failed_min_one_success) runs after whichever ran. A `pick` that is
/// neither fails `choose`, naming the valid ones.
public let exampleBranch = Flow(
    "example_branch",
    description: "follows the branch named by conf.pick (left or right), then joins",
    tags: ["example"],
    params: [Param("pick", .string, default: "left", description: "the branch to follow: left or right")]
) { f in
    let choose = f.branch("choose") { ctx in [ctx.param("pick")?.stringValue ?? "left"] }
    let left = f.task("left") { _ in ["side": "left"] }
    let right = f.task("right") { _ in ["side": "right"] }
    let join = f.task("join", triggerRule: .noneFailedMinOneSuccess) { ctx in
        ["followed": .array(ctx.upstream.keys.sorted().map(JSONValue.string))]
    }
    choose --> [left, right] --> join
}

/// Dynamic task mapping: `make_list` returns `conf.items`; `double` is mapped over it, one
/// instance per element (`double[0]`, `double[1]`, …) returning twice its element; `total`
/// receives their results in index order and returns their sum and count. An empty list skips
/// `double` and `total`.
public let exampleMapping = Flow(
    "example_mapping",
    description: "maps `double` over conf.items, then sums the results",
    tags: ["example"],
    params: [Param("items", .array, default: [1, 2, 3], description: "the integers to double")]
) { f in
    let makeList = f.task("make_list") { ctx in ctx.param("items") ?? .array([]) }
    let double = f.map("double", over: .result(of: makeList)) { _, item in
        guard let x = item.intValue else { throw TaskError("`double` takes integers, got \(item.compactJSON)") }
        return .int(2 * x)
    }
    let total = f.task("total") { ctx in
        let doubled = ctx.upstream["double"]?.arrayValue ?? []
        return ["sum": .int(doubled.compactMap(\.intValue).reduce(0, +)), "count": .int(doubled.count)]
    }
    double --> total
}

/// A pool shared by six parallel tasks: each sleeps `conf.seconds` (default 1) in pool
/// `example_pool`, which has 2 slots (migration 0007 creates it; `flowctl pools set
/// example_pool --slots N` resizes it), so a run never has more than 2 of them running at once.
/// Each task's result records when it started and ended, so the limit can be checked.
public let examplePool = Flow(
    "example_pool",
    description: "six parallel sleeps in a pool of 2 slots",
    tags: ["example"],
    params: [Param("seconds", .number, default: 1, description: "how long each task sleeps")]
) { f in
    for i in 1...6 {
        f.task("sleep_\(i)", pool: "example_pool") { ctx in
            let started = Date()
            let seconds = ctx.param("seconds")?.doubleValue ?? 1
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            return ["started": .double(started.timeIntervalSince1970), "ended": .double(Date().timeIntervalSince1970)]
        }
    }
}

/// A deferrable file sensor: `wait_for_file` pokes every second for `$FLOWKIT_DATA_DIR/<file>`
/// (param `file`), freeing its worker slot between pokes, for at most param `timeout` seconds
/// (default 30), then fails; `file_size` returns the file's size in bytes (a bare integer).
public let exampleSensor = Flow(
    "example_sensor",
    description: "waits for a file under the data directory, then returns its size",
    tags: ["example"],
    params: [Param("file", .string, default: "example_sensor/ready.txt", description: "a path under FLOWKIT_DATA_DIR"),
             Param("timeout", .number, default: 30, description: "seconds the sensor waits in all")]
) { f in
    let wait = f.sensor("wait_for_file", pokeInterval: .seconds(1), timeout: .seconds(30), timeoutParam: "timeout",
                        check: Sensors.file { ctx in ctx.param("file")?.stringValue ?? "" })
    wait --> f.task("file_size") { ctx in
        guard let size = ctx.upstream["wait_for_file"]?["size"] else { throw TaskError("the sensor reported no size") }
        return size
    }
}

/// A person in the loop: `prepare` makes a release note; `approve` waits — holding no worker
/// slot — for a decision from the dashboard, the API or `flowctl approvals decide`, at most
/// param `timeout` seconds (default 3600), after which it rejects; approving makes `publish`
/// succeed with `{"approved_by": <who decided>}`, rejecting fails the run.
public let exampleApproval = Flow(
    "example_approval",
    description: "waits for a person to approve a release before publishing it",
    tags: ["example"],
    params: [Param("timeout", .number, default: 3600, description: "seconds the approval waits before it rejects")]
) { f in
    let prepare = f.task("prepare") { ctx in ["release": .string("release of \(Instant.format(ctx.logicalDate))")] }
    let approve = f.approval("approve", prompt: "Publish this release?", options: ["approve", "reject"], timeoutParam: "timeout",
                             onTimeout: .reject, after: [prepare])
    approve --> f.task("publish") { ctx in
        guard let by = ctx.upstream["approve"]?["approved_by"] else { throw TaskError("the approval reported no decider") }
        return ["approved_by": by]
    }
}

/// Alerts: `fail` logs a line and always fails; it is retried once after 1 s. Its retry
/// (`onRetry`) and the run's failure (`onRunFailure`) go to the webhook notifier of the named
/// connection `alerts` (`FLOWKIT_CONN_ALERTS` for the URL, `FLOWKIT_CONN_ALERTS_SECRET` for the
/// HMAC secret, both on the scheduler): two signed POSTs per run.
public let exampleAlert = Flow(
    "example_alert",
    description: "a task that always fails, with a webhook alert on its retry and on the run's failure",
    tags: ["example"],
    notify: Notifications(onRetry: [.webhook("alerts")], onRunFailure: [.webhook("alerts")]),
    defaults: TaskOptions(retry: RetryPolicy(retries: 1, delay: .seconds(1)))
) { f in
    f.task("fail") { ctx in
        ctx.log("about to fail on purpose (try \(ctx.tryNumber))")
        throw TaskError("example_alert fails on purpose")
    }
}

/// Assets: `publish` updates `demo://numbers` (its outlet) and returns `{"n": 42}`; its success
/// records an asset event, which starts `example_asset_consumer`.
public let exampleAssetProducer = Flow(
    "example_asset_producer",
    description: "manual: one task whose success updates the asset demo://numbers",
    tags: ["example"]
) { f in
    f.task("publish", outlets: ["demo://numbers"]) { _ in ["n": 42] }
}

/// Scheduled on `demo://numbers`: runs once per new event of it (from `example_asset_producer`
/// or `flowctl assets event demo://numbers --extra '{…}'`); `count_events` returns how many
/// events started the run and the first one's `extra`.
public let exampleAssetConsumer = Flow(
    "example_asset_consumer",
    description: "runs when demo://numbers has a new event",
    tags: ["example"],
    assets: ["demo://numbers"]
) { f in
    f.task("count_events") { ctx in
        let events = ctx.triggeringEvents?.arrayValue ?? []
        return ["count": .int(events.count), "extra": events.first?["extra"] ?? .null]
    }
}

/// A webhook trigger: `POST /api/v1/hooks/example_webhook` with a JSON body of the params,
/// signed with the secret in `FLOWKIT_CONN_HOOK_EXAMPLE` on the API (or sent as a bearer token);
/// `receive` returns the params it got. An `Idempotency-Key` header makes a repeated delivery
/// return the first run.
public let exampleWebhook = Flow(
    "example_webhook",
    description: "started by a signed webhook; returns the payload it was given",
    tags: ["example"],
    webhook: WebhookTrigger(secret: "hook_example"),
    params: [Param("file", .string, description: "the object that landed"), Param("bytes", .int, default: 0)]
) { f in
    f.task("receive") { ctx in ["file": ctx.param("file") ?? .null, "bytes": ctx.param("bytes") ?? 0] }
}

/// Flow-to-flow, part 1: `pick` returns `{"n": 7}`; `start_child` starts a run of
/// `example_trigger_child` with that as its conf and waits for it to end; `report` returns the
/// child's run id and state. A retry of `start_child` finds the same child, never a second.
public let exampleTriggerParent = Flow(
    "example_trigger_parent",
    description: "starts example_trigger_child with n=7 and waits for it",
    tags: ["example"]
) { f in
    let pick = f.task("pick") { _ in ["n": 7] }
    let start = f.triggerFlow("start_child", flow: "example_trigger_child", confFromResultOf: pick, wait: true)
    f.task("report", after: [start]) { ctx in try await ctx.result(of: "start_child") }
}

/// Flow-to-flow, part 2: the child; `square` returns `{"square": n * n}`.
public let exampleTriggerChild = Flow(
    "example_trigger_child",
    description: "squares its param n (started by example_trigger_parent, or by hand)",
    tags: ["example"],
    params: [Param("n", .int, default: 1)]
) { f in
    f.task("square") { ctx in
        let n = ctx.param("n")?.intValue ?? 1
        return ["square": .int(n * n)]
    }
}

/// Flow-to-flow, part 3: runs after each successful run of `example_trigger_child`, with that
/// run's conf (`n`) and results; `echo` returns `{"n": n, "square": <the child's square>, "upstreamRun": …}`.
public let exampleFollowup = Flow(
    "example_followup",
    description: "runs when example_trigger_child succeeds, with its conf and results",
    tags: ["example"],
    after: [.success(of: "example_trigger_child", passConf: true, passResults: true)],
    params: [Param("n", .int, default: 0)]
) { f in
    f.task("echo") { ctx in
        let event = ctx.triggeringEvents?.arrayValue?.first
        return ["n": ctx.param("n") ?? .null,
                "square": event?["extra"]?["results"]?["square"]?["square"] ?? .null,
                "upstreamRun": event?["runId"] ?? .null]
    }
}

/// `example_sql`: SQL tasks on the `warehouse` connection. `make_table` creates
/// `example_sql.numbers` and inserts 1…n for this run (`{{ params.n }}` and `{{ run_id }}` are
/// bound parameters, not text); `total` returns their sum: `{"columns": ["total"], "rows": [[n(n+1)/2]], …}`.
public let exampleSQL = Flow(
    "example_sql",
    description: "SQL tasks: a table filled with 1…n, then its total, through bound template parameters",
    tags: ["example", "sql"],
    params: [Param("n", .int, default: 3, description: "how many numbers to insert")]
) { f in
    let make = f.sql("make_table", connection: "warehouse", sql: """
        -- Runs at once may both create the schema: one waits for the other.
        SELECT pg_advisory_xact_lock(hashtext('example_sql'));
        CREATE SCHEMA IF NOT EXISTS example_sql;
        CREATE TABLE IF NOT EXISTS example_sql.numbers (run_id text NOT NULL, n int NOT NULL);
        DELETE FROM example_sql.numbers WHERE run_id = {{ run_id }};
        INSERT INTO example_sql.numbers (run_id, n) SELECT {{ run_id }}, generate_series(1, {{ params.n }}::int);
        """, description: "creates example_sql.numbers and inserts 1…n for this run")
    make --> f.sql("total", connection: "warehouse", sql: """
        SELECT sum(n) AS total FROM example_sql.numbers WHERE run_id = {{ run_id }}
        """, description: "the sum of this run's numbers")
}

/// `example_python`: Python functions run by the worker, no Celery. `stats` returns the mean and
/// count of param `values` (`fail: true` makes it raise `ValueError("asked to fail")`); `report`
/// reads that result from its context and returns `{"summary": "count=3 mean=2.0"}`.
let examplePython = Flow(
    "example_python",
    description: "Python tasks: statistics of a list param, then a summary read from the upstream result",
    tags: ["example", "python"],
    params: [Param("values", .array, default: [1, 2, 3], description: "numbers"),
             Param("fail", .bool, default: false, description: "make stats raise ValueError")]
) { f in
    let resources = Bundle.module.url(forResource: "Resources", withExtension: nil)?.appendingPathComponent("examples/python")
    let stats = f.python("stats", file: "stats.py", function: "main", resources: resources, description: "mean and count of the values")
    stats --> f.python("report", file: "report.py", function: "main", resources: resources, description: "a one-line summary")
}

/// `example_dbt_models`: a small dbt project (a seed of ten cities, two models, tests on both)
/// expanded as Cosmos would: `marts.cities` (the seed), `marts.province_population` and
/// `marts.province_population.test`, then `marts.province_share` and `marts.province_share.test`.
/// Runs on the `warehouse` connection, in a virtualenv with dbt-core and dbt-postgres that the
/// worker builds the first time.
let exampleDbtModels = Flow(
    "example_dbt_models",
    description: "A dbt project as tasks: one per model, each followed by its tests, wired by the manifest",
    tags: ["example", "dbt"],
    maxActiveRuns: 1
) { f in
    let examples = Bundle.module.url(forResource: "Resources", withExtension: nil)?.appendingPathComponent("examples")
    f.dbtModels("marts", project: "dbt", manifest: "dbt/manifest.json", resources: examples, connections: ["warehouse"])
}
