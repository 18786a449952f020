import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient

extension SchedulerStore {
    /// Cancels a run: unfinished task instances become cancelled, and the workers running
    /// them are told to stop (through the broker work returned).
    public func cancelRun(runId: String, now: Date) async throws -> BrokerWork {
        try await db.run { s in
            try s.transaction {
                guard let r = try s.query("SELECT id, state FROM runs WHERE run_id = $1 FOR NO KEY UPDATE", [runId]).first else {
                    throw NotFound("unknown run `\(runId)`")
                }
                let state = r.string("state")!
                guard state == "queued" || state == "running" else {
                    throw StateConflict("run `\(runId)` is already \(state)")
                }
                let pk = r.int("id")!
                let live = try s.query("""
                    WITH u AS (UPDATE task_instances SET state = 'cancelled', ended_at = $2, next_attempt_at = NULL
                               WHERE run_pk = $1 AND state IN ('pending', 'queued', 'running', 'up_for_retry')
                               RETURNING task_id, try_number, message_id, state)
                    SELECT task_id, try_number, message_id FROM u
                    """, [pk, now]).all
                try s.query("""
                    INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                    SELECT $1, t, n, NULL, 'cancelled', $4, 'api', 'run cancelled' FROM unnest($2::text[], $3::int[]) AS u(t, n)
                    """, [pk, live.map { $0.string("task_id")! }, live.map { $0.int("try_number")! }, now])
                try s.query("UPDATE task_tries SET state = 'cancelled', ended_at = $2 WHERE run_pk = $1 AND ended_at IS NULL", [pk, now])
                try s.query("UPDATE runs SET state = 'cancelled', ended_at = $2, unfinished_tasks = 0 WHERE id = $1", [pk, now])
                s.notifyAfterCommit("flowkit_runs", runId)  // a slot is free for a queued run
                var work = BrokerWork()
                work.cancel = live.compactMap { $0.string("message_id") }
                return work
            }
        }
    }

    /// Clears failed tasks of a finished run (or the named ones) and everything downstream of
    /// them, so they run again; the run goes back to running. Each cleared task gets a fresh
    /// set of tries.
    public func clearTasks(runId: String, taskIds: [String]?, now: Date) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                guard let r = try s.query("SELECT id, state, flow_id, flow_version FROM runs WHERE run_id = $1 FOR NO KEY UPDATE", [runId]).first else {
                    throw NotFound("unknown run `\(runId)`")
                }
                let pk = r.int("id")!
                let state = r.string("state")!
                guard state == "failed" || state == "success" || state == "running" else {
                    throw StateConflict("run `\(runId)` is \(state); only failed, successful or running runs can be cleared")
                }
                let graph = try graphs.graph(s, flow: r.string("flow_id")!, version: r.int("flow_version")!)
                let states = Dictionary(uniqueKeysWithValues: try s.query("SELECT task_id, state FROM task_instances WHERE run_pk = $1", [pk]).all
                    .map { ($0.string("task_id")!, $0.string("state")!) })
                var roots: [String]
                if let taskIds, !taskIds.isEmpty {
                    for t in taskIds where graph.tasks[t] == nil { throw NotFound("run `\(runId)` has no task `\(t)`") }
                    roots = taskIds
                } else {
                    roots = states.filter { $0.value == "failed" || $0.value == "upstream_failed" }.map(\.key)
                }
                guard !roots.isEmpty else { throw StateConflict("run `\(runId)` has no failed tasks to clear") }
                let cleared = Array(Set(roots).union(graph.descendants(of: roots))).sorted()
                let active = cleared.filter { ["queued", "running", "up_for_retry"].contains(states[$0] ?? "") }
                guard active.isEmpty else {
                    throw StateConflict("run `\(runId)`: tasks \(active.joined(separator: ", ")) are still in progress; wait or cancel first")
                }
                let wasTerminal = cleared.filter { TaskState(rawValue: states[$0] ?? "")?.isTerminal ?? false }.count
                try s.query("""
                    UPDATE task_instances t SET state = 'pending', max_tries = t.try_number + u.m, ended_at = NULL, error = NULL, result = NULL,
                        next_attempt_at = NULL
                    FROM unnest($2::text[], $3::int[]) AS u(task_id, m) WHERE t.run_pk = $1 AND t.task_id = u.task_id
                    """, [pk, cleared, cleared.map { graph.tasks[$0]!.retry.maxTries }])
                try s.query("""
                    INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                    SELECT $1, t.task_id, t.try_number, NULL, 'pending', $3, 'api', 'cleared' FROM task_instances t
                    WHERE t.run_pk = $1 AND t.task_id = ANY($2::text[])
                    """, [pk, cleared, now])
                try s.query("UPDATE runs SET state = 'running', ended_at = NULL, unfinished_tasks = unfinished_tasks + $2 WHERE id = $1",
                            [pk, wasTerminal])
                // Queue the cleared tasks whose upstream tasks allow it now.
                let clearedSet = Set(cleared)
                let finishedUpstream = Set(graph.definition.tasks.filter { !clearedSet.contains($0.id) }.map(\.id))
                let entry = cleared.filter { t in (graph.tasks[t]?.upstream ?? []).allSatisfy { finishedUpstream.contains($0) } }
                var work = BrokerWork()
                let ready = try evaluateEntry(s, runPk: pk, graph: graph, tasks: entry, now: now)
                work.enqueue = ready
                return work
            }
        }
    }

    /// Evaluates tasks whose upstream tasks are all outside the cleared set.
    private func evaluateEntry(_ s: PGSession, runPk: Int, graph: FlowGraph, tasks: [String], now: Date) throws -> [CeleryMessage] {
        var states: [String: TaskState] = [:]
        for r in try s.query("SELECT task_id, state FROM task_instances WHERE run_pk = $1", [runPk]).all {
            states[r.string("task_id")!] = TaskState(rawValue: r.string("state")!)
        }
        let ready = tasks.filter { t in
            graph.tasks[t]!.triggerRule.evaluate(graph.tasks[t]!.upstream.map { states[$0] ?? .pending }) == .run
        }
        return try queueTasks(s, runPk: runPk, graph: graph, taskIds: ready, now: now)
    }

    /// Creates a queued `backfill` run for every cron tick of the flow in `[from, to]`, oldest
    /// first; ticks that already have a scheduled or backfill run are skipped. At most `limit`.
    public func createBackfillRuns(flowId: String, from: Date, to: Date, conf: [String: JSONValue], limit: Int = 1000) async throws -> [RunRecord] {
        guard from <= to else { throw StateConflict("backfill: --from \(Instant.format(from)) is after --to \(Instant.format(to))") }
        return try await db.run { [self] s in
            try s.transaction {
                guard let f = try s.query("SELECT current_version, schedule, timezone FROM flows WHERE flow_id = $1 FOR NO KEY UPDATE", [flowId]).first else {
                    let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { $0.string("flow_id") }
                    throw NotFound(UnknownFlowError(id: flowId, known: known).description)
                }
                guard let cron = f.string("schedule") else { throw StateConflict("flow `\(flowId)` has no schedule to backfill") }
                let compiled = try Schedule(cron: cron, timeZone: f.string("timezone")!).compiled()
                let version = f.int("current_version")!
                let graph = try graphs.graph(s, flow: flowId, version: version)
                let params = try graph.definition.resolveParams(conf: conf)
                var ticks: [Date] = []
                var cursor = from.addingTimeInterval(-0.001)
                while let t = compiled.nextFire(after: cursor), t <= to {
                    guard ticks.count < limit else {
                        throw StateConflict("backfill of `\(flowId)` covers more than \(limit) ticks; narrow --from/--to")
                    }
                    ticks.append(t)
                    cursor = t
                }
                var created: [RunRecord] = []
                for t in ticks {
                    let prev = compiled.latestFire(atOrBefore: t.addingTimeInterval(-1)) ?? t
                    if let r = try insertRun(s, flowId: flowId, version: version, kind: "backfill", conf: conf, params: params,
                                             logicalDate: t, intervalStart: prev, intervalEnd: t) { created.append(r) }
                }
                return created
            }
        }
    }

    public func setPaused(flowId: String, paused: Bool) async throws -> FlowRecord {
        let n = try await db.run { s in
            let n = try s.query("UPDATE flows SET is_paused = $2, updated_at = now() WHERE flow_id = $1", [flowId, paused]).affectedRows
            if n > 0 && !paused { s.notifyAfterCommit("flowkit_runs", flowId) }
            return n
        }
        if n == 0 { throw NotFound("unknown flow `\(flowId)`") }
        return try await flow(flowId, withDefinition: false)
    }

    // MARK: - Reads

    public func flows() async throws -> [FlowRecord] {
        try await db.run { s in
            try s.query("""
                SELECT f.flow_id, f.current_version, v.hash, f.is_active, f.is_paused, f.schedule, f.timezone, f.next_tick,
                       v.definition->>'description' AS description, v.definition->>'owner' AS owner, (v.definition->'tags')::text AS tags
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                ORDER BY f.flow_id
                """).all.map { Self.flowRecord($0) }
        }
    }

    static func flowRecord(_ r: PGRow) -> FlowRecord {
        FlowRecord(flowId: r.string("flow_id")!, version: r.int("current_version")!, hash: r.string("hash")!,
                   isActive: r.bool("is_active")!, isPaused: r.bool("is_paused")!, schedule: r.string("schedule"),
                   timezone: r.string("timezone")!, nextRunAt: r.date("next_tick"),
                   description: r.string("description") ?? "", owner: r.string("owner") ?? "",
                   tags: ((try? JSONValue.parse(r.string("tags") ?? "[]"))?.arrayValue ?? []).compactMap(\.stringValue),
                   definition: nil, latestRuns: nil)
    }

    public func flow(_ flowId: String, withDefinition: Bool = true) async throws -> FlowRecord {
        try await db.run { s in
            guard let r = try s.query("""
                SELECT f.flow_id, f.current_version, v.hash, f.is_active, f.is_paused, f.schedule, f.timezone, f.next_tick,
                       v.definition->>'description' AS description, v.definition->>'owner' AS owner, (v.definition->'tags')::text AS tags,
                       v.definition::text AS definition
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version WHERE f.flow_id = $1
                """, [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { $0.string("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            var rec = Self.flowRecord(r)
            if withDefinition {
                rec.definition = try? FlowDefinition.decode(r.string("definition")!)
                rec.latestRuns = try s.query("SELECT \(RunRecord.columns) FROM runs r WHERE r.flow_id = $1 ORDER BY r.id DESC LIMIT 10",
                                             [flowId]).all.map(RunRecord.init)
            }
            return rec
        }
    }

    /// Runs, newest first, filtered; pass the last page's smallest `id` as `before` for the next page.
    public func runs(_ f: RunFilter) async throws -> [RunRecord] {
        try await db.run { s in
            try s.query("""
                SELECT \(RunRecord.columns) FROM runs r
                WHERE ($1::text IS NULL OR r.flow_id = $1) AND ($2::text IS NULL OR r.state = $2)
                  AND ($3::timestamptz IS NULL OR r.logical_date >= $3) AND ($4::timestamptz IS NULL OR r.logical_date < $4)
                  AND ($5::bigint IS NULL OR r.id < $5)
                ORDER BY r.id DESC LIMIT $6
                """, [f.flowId, f.state, f.since, f.until, f.before, f.limit]).all.map(RunRecord.init)
        }
    }

    public func run(_ runId: String) async throws -> RunRecord {
        try await db.run { s in
            guard let r = try s.query("SELECT \(RunRecord.columns) FROM runs r WHERE r.run_id = $1", [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            return RunRecord(r)
        }
    }

    /// A run's task instances in the flow's declaration order, each with every try.
    public func taskInstances(runId: String) async throws -> [TaskInstanceRecord] {
        try await db.run { [self] s in
            guard let run = try s.query("SELECT id, flow_id, flow_version FROM runs WHERE run_id = $1", [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            let pk = run.int("id")!
            let graph = try graphs.graph(s, flow: run.string("flow_id")!, version: run.int("flow_version")!)
            let order = Dictionary(graph.definition.tasks.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
            var tries: [String: [TaskTryRecord]] = [:]
            for t in try s.query("""
                SELECT task_id, try_number, message_id, state, queued_at, started_at, ended_at, worker, result::text AS result, error
                FROM task_tries WHERE run_pk = $1 ORDER BY task_id, try_number
                """, [pk]).all {
                tries[t.string("task_id")!, default: []].append(TaskTryRecord(
                    tryNumber: t.int("try_number")!, messageId: t.string("message_id")!, state: t.string("state")!,
                    queuedAt: t.date("queued_at"), startedAt: t.date("started_at"), endedAt: t.date("ended_at"),
                    worker: t.string("worker"), result: t.string("result").flatMap { try? JSONValue.parse($0) }, error: t.string("error")))
            }
            return try s.query("""
                SELECT task_id, state, try_number, max_tries, queue, priority, queued_at, started_at, ended_at, next_attempt_at, worker,
                       result::text AS result, error FROM task_instances WHERE run_pk = $1
                """, [pk]).all.map { t in
                TaskInstanceRecord(taskId: t.string("task_id")!, state: t.string("state")!, tryNumber: t.int("try_number")!,
                                   maxTries: t.int("max_tries")!, queue: t.string("queue")!, priority: t.int("priority")!,
                                   queuedAt: t.date("queued_at"), startedAt: t.date("started_at"), endedAt: t.date("ended_at"),
                                   nextAttemptAt: t.date("next_attempt_at"), worker: t.string("worker"),
                                   result: t.string("result").flatMap { try? JSONValue.parse($0) }, error: t.string("error"),
                                   tries: tries[t.string("task_id")!] ?? [])
            }.sorted { order[$0.taskId, default: Int.max] < order[$1.taskId, default: Int.max] }
        }
    }

    /// Log lines of one try after `offset` (the `offset` of the last line already read).
    public func logs(runId: String, taskId: String, tryNumber: Int?, after offset: Int, limit: Int = 1000) async throws -> (tryNumber: Int, lines: [LogLine]) {
        try await db.run { s in
            guard let row = try s.query("""
                SELECT r.id, t.try_number FROM runs r JOIN task_instances t ON t.run_pk = r.id AND t.task_id = $2 WHERE r.run_id = $1
                """, [runId, taskId]).first else {
                if try s.query("SELECT 1 FROM runs WHERE run_id = $1", [runId]).isEmpty { throw NotFound("unknown run `\(runId)`") }
                throw NotFound("run `\(runId)` has no task `\(taskId)`")
            }
            let t = tryNumber ?? max(1, row.int("try_number")!)
            let lines = try s.query("""
                SELECT id, at, line FROM task_logs WHERE run_pk = $1 AND task_id = $2 AND try_number = $3 AND id > $4 ORDER BY id LIMIT $5
                """, [row.int("id")!, taskId, t, offset, limit]).all.map {
                LogLine(offset: $0.int("id")!, at: $0.date("at")!, line: $0.string("line")!)
            }
            return (t, lines)
        }
    }

    public func workers(now: Date) async throws -> [WorkerRecord] {
        try await db.run { s in
            try s.query("SELECT name, host, pid, queues::text AS queues, concurrency, version, state, running, started_at, heartbeat_at FROM workers ORDER BY name").all.map { r in
                let hb = r.date("heartbeat_at")!
                return WorkerRecord(name: r.string("name")!, host: r.string("host")!, pid: r.int("pid"), queues: r.strings("queues"),
                                    concurrency: r.int("concurrency")!, version: r.string("version"), state: r.string("state")!,
                                    running: r.int("running")!, startedAt: r.date("started_at")!, heartbeatAt: hb,
                                    heartbeatAgeSeconds: max(0, now.timeIntervalSince(hb)))
            }
        }
    }

    /// Runs and task instances by state, for `/metrics`.
    public func stateCounts() async throws -> (runs: [String: Int], tasks: [String: Int]) {
        try await db.run { s in
            var runs: [String: Int] = [:], tasks: [String: Int] = [:]
            for r in try s.query("SELECT state, count(*) AS n FROM runs GROUP BY state").all { runs[r.string("state")!] = r.int("n")! }
            // Only states with a partial index: the cost must not grow with the history.
            for r in try s.query("""
                SELECT 'queued' AS state, count(*) AS n FROM task_instances WHERE state = 'queued'
                UNION ALL SELECT 'running', count(*) FROM task_instances WHERE state = 'running'
                UNION ALL SELECT 'up_for_retry', count(*) FROM task_instances WHERE state = 'up_for_retry'
                """).all {
                tasks[r.string("state")!] = r.int("n")!
            }
            return (runs, tasks)
        }
    }

    /// Seconds since the freshest scheduler heartbeat (nil when no scheduler ever ran).
    public func schedulerHeartbeatAge(now: Date) async throws -> Double? {
        try await db.run { s in
            try s.query("SELECT max(heartbeat_at) AS t FROM schedulers").first?.date("t").map { now.timeIntervalSince($0) }
        }
    }

    public func ping() async throws {
        try await db.run { s in _ = try s.query("SELECT 1") }
    }
}
