import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient

/// What a committed transaction asks of the broker: messages to enqueue, tries to cancel, and
/// claimed messages to forget (their try was reaped).
public struct BrokerWork: Sendable {
    public var enqueue: [CeleryMessage] = []
    public var cancel: [String] = []
    public var forget: [String] = []
    /// Worker events about runs the database does not have, for the dead-letter list (with a
    /// log line): they changed nothing.
    public var orphans: [(event: WorkerEvent, reason: String)] = []
    public init() {}
    public var isEmpty: Bool { enqueue.isEmpty && cancel.isEmpty && forget.isEmpty }
    mutating func merge(_ o: BrokerWork) {
        enqueue += o.enqueue; cancel += o.cancel; forget += o.forget; orphans += o.orphans
    }
}

/// All SQL FlowKit runs, behind named operations; services call these and never build SQL.
///
/// Operations that change state run in one transaction on one connection and return the
/// `BrokerWork` to do once the transaction has committed.
public final class SchedulerStore: @unchecked Sendable {
    /// The pool behind the operations; not public: callers use the named operations.
    let db: PGPool
    let graphs = GraphCache()
    /// Random numbers in [0, 1) for retry jitter (injectable for tests).
    let random: @Sendable () -> Double

    public init(db: PGPool, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        self.db = db
        self.random = random
    }

    // MARK: - Registration

    /// Upserts the flows this binary was built with; a changed flow gets a new version; flows
    /// missing from `flows` become inactive (never deleted). Returns the flows that got a new version.
    @discardableResult
    public func registerFlows(_ flows: [Flow], now: Date) async throws -> [String] {
        let defs = try flows.map { f -> (FlowDefinition, String, String, Date?) in
            let d = FlowDefinition(f)
            let next = try f.schedule.map { try $0.compiled().nextFire(after: now) } ?? nil
            return (d, try d.json(), try d.contentHash(), next)
        }
        return try await db.run { s in
            try s.transaction {
                var changed: [String] = []
                try s.query("SELECT pg_advisory_xact_lock(7240002)")
                for (d, json, hash, next) in defs {
                    let cur = try s.query("""
                        SELECT f.current_version, v.hash, f.schedule, f.timezone FROM flows f
                        JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                        WHERE f.flow_id = $1
                        """, [d.id]).first
                    let schedule = d.schedule?.cron
                    let tz = d.schedule?.timeZone ?? "UTC"
                    if let cur {
                        let scheduleChanged = cur.string("schedule") != schedule || cur.string("timezone") != tz
                        var version = cur.int("current_version")!
                        if cur.string("hash") != hash {
                            version += 1
                            try s.query("INSERT INTO flow_versions (flow_id, version, hash, definition) VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (flow_id, hash) DO NOTHING",
                                        [d.id, version, hash, json])
                            // A flow changed back to an earlier form reuses that version.
                            version = try s.query("SELECT version FROM flow_versions WHERE flow_id = $1 AND hash = $2", [d.id, hash]).first!.int("version")!
                            changed.append(d.id)
                        }
                        try s.query("""
                            UPDATE flows SET current_version = $2, is_active = true, schedule = $3, timezone = $4,
                                catchup = $5, max_active_runs = $6, updated_at = now(),
                                next_tick = CASE WHEN $3::text IS NULL THEN NULL
                                                 WHEN $7 OR next_tick IS NULL THEN $8::timestamptz ELSE next_tick END
                            WHERE flow_id = $1
                            """, [d.id, version, schedule, tz, d.catchup, d.maxActiveRuns, scheduleChanged, next])
                    } else {
                        try s.query("""
                            INSERT INTO flows (flow_id, current_version, schedule, timezone, catchup, max_active_runs, next_tick)
                            VALUES ($1, 1, $2, $3, $4, $5, $6)
                            """, [d.id, schedule, tz, d.catchup, d.maxActiveRuns, next])
                        try s.query("INSERT INTO flow_versions (flow_id, version, hash, definition) VALUES ($1, 1, $2, $3::jsonb)",
                                    [d.id, hash, json])
                        changed.append(d.id)
                    }
                }
                try s.query("UPDATE flows SET is_active = false, updated_at = now() WHERE NOT (flow_id = ANY($1::text[])) AND is_active",
                            [defs.map(\.0.id)])
                return changed
            }
        }
    }

    // MARK: - Runs

    /// Creates a queued run and wakes the schedulers. Conf is checked against the flow's params.
    public func createRun(flowId: String, kind: String, conf: [String: JSONValue], logicalDate: Date?, now: Date) async throws -> RunRecord {
        try await db.run { [self] s in
            try s.transaction {
                guard let f = try s.query("SELECT current_version, is_active FROM flows WHERE flow_id = $1", [flowId]).first else {
                    let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { $0.string("flow_id") }
                    throw NotFound(UnknownFlowError(id: flowId, known: known).description)
                }
                guard f.bool("is_active") == true else { throw StateConflict("flow `\(flowId)` is inactive: it is no longer in the deployed code") }
                let version = f.int("current_version")!
                let graph = try graphs.graph(s, flow: flowId, version: version)
                let params = try graph.definition.resolveParams(conf: conf)
                let date = logicalDate ?? now
                return try insertRun(s, flowId: flowId, version: version, kind: kind, conf: conf, params: params,
                                     logicalDate: date, intervalStart: date, intervalEnd: date)!
            }
        }
    }

    /// Inserts a queued run; nil when a scheduled run for that tick already exists.
    func insertRun(_ s: PGSession, flowId: String, version: Int, kind: String, conf: [String: JSONValue], params: [String: JSONValue],
                   logicalDate: Date, intervalStart: Date, intervalEnd: Date) throws -> RunRecord? {
        let runId = "\(kind)__\(Self.compactDate(logicalDate))__\(UUID().uuidString.prefix(8).lowercased())"
        let conflict = kind == "manual" ? "" : "ON CONFLICT (flow_id, logical_date) WHERE trigger_kind IN ('scheduled', 'backfill') DO NOTHING"
        let r = try s.query("""
            INSERT INTO runs AS r (run_id, flow_id, flow_version, trigger_kind, conf, params, state, logical_date, data_interval_start, data_interval_end)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, 'queued', $7, $8, $9) \(conflict)
            RETURNING \(RunRecord.columns)
            """, [runId, flowId, version, kind, JSONValue.object(conf).jsonbText, JSONValue.object(params).jsonbText,
                  logicalDate, intervalStart, intervalEnd])
        guard let row = r.first else { return nil }
        s.notifyAfterCommit("flowkit_runs", runId)
        return RunRecord(row)
    }

    static func compactDate(_ d: Date) -> String {
        Instant.format(d)
    }

    /// Starts queued runs whose flow has room under `max_active_runs`: creates their task
    /// instances and queues the tasks that can start. Oldest first, but only among flows with
    /// room, so a flow at its cap never hides another flow's queued runs.
    public func startQueuedRuns(now: Date, limit: Int = 50) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                // Per flow, only as many of its oldest queued runs as it has room for.
                let queued = try s.query("""
                    SELECT r.id, r.flow_id, r.flow_version FROM runs r WHERE r.id IN (
                        SELECT id FROM (
                            SELECT q.id, row_number() OVER (PARTITION BY q.flow_id ORDER BY q.id) AS n,
                                   f.max_active_runs - (SELECT count(*) FROM runs a WHERE a.flow_id = q.flow_id AND a.state = 'running') AS room
                            FROM runs q JOIN flows f ON f.flow_id = q.flow_id
                            WHERE q.state = 'queued' AND NOT f.is_paused) c
                        WHERE n <= room)
                    AND r.state = 'queued'
                    ORDER BY r.id LIMIT $1 FOR NO KEY UPDATE OF r SKIP LOCKED
                    """, [limit]).all
                var lockedFlows = Set<String>()
                for row in queued {
                    let runPk = row.int("id")!, flowId = row.string("flow_id")!, version = row.int("flow_version")!
                    // The flow's row serialises the count below among schedulers. NO KEY UPDATE:
                    // a manual run's INSERT (its foreign key takes KEY SHARE) does not wait for it.
                    if lockedFlows.insert(flowId).inserted {
                        try s.query("SELECT 1 FROM flows WHERE flow_id = $1 FOR NO KEY UPDATE", [flowId])
                    }
                    let counts = try s.query("""
                        SELECT (SELECT count(*) FROM runs WHERE flow_id = $1 AND state = 'running') AS active, max_active_runs
                        FROM flows WHERE flow_id = $1
                        """, [flowId]).first!
                    if counts.int("active")! >= counts.int("max_active_runs")! { continue }
                    let graph = try graphs.graph(s, flow: flowId, version: version)
                    let tasks = graph.definition.tasks
                    try s.query("""
                        INSERT INTO task_instances (run_pk, task_id, state, max_tries, queue, priority, timeout_seconds, executor)
                        SELECT $1, t, 'pending', m, q, p, NULLIF(o, -1), e
                        FROM unnest($2::text[], $3::int[], $4::text[], $5::int[], $6::float8[], $7::text[]) AS u(t, m, q, p, o, e)
                        """, [runPk, tasks.map(\.id), tasks.map(\.retry.maxTries), tasks.map(\.queue), tasks.map(\.priority),
                              tasks.map { $0.timeoutSeconds ?? -1 }, tasks.map { $0.celeryName == nil ? "flowkit" : "celery" }])
                    try s.query("UPDATE runs SET state = 'running', started_at = $2, unfinished_tasks = $3 WHERE id = $1",
                                [runPk, now, tasks.count])
                    work.enqueue += try queueTasks(s, runPk: runPk, graph: graph, taskIds: graph.roots, now: now)
                }
                return work
            }
        }
    }

    // MARK: - Dispatch

    /// Moves tasks from pending or up_for_retry to queued with a new try and builds their messages.
    func queueTasks(_ s: PGSession, runPk: Int, graph: FlowGraph, taskIds: [String], now: Date) throws -> [CeleryMessage] {
        guard !taskIds.isEmpty else { return [] }
        return try s.plans(generic: taskIds.count <= Self.smallBatch) { try queueTasksNow(s, runPk: runPk, graph: graph, taskIds: taskIds, now: now) }
    }

    /// Batches up to this size run with generic plans (`PGSession.plans`).
    static let smallBatch = 4

    private func queueTasksNow(_ s: PGSession, runPk: Int, graph: FlowGraph, taskIds: [String], now: Date) throws -> [CeleryMessage] {
        let messageIds = taskIds.map { _ in UUID().uuidString.lowercased() }
        // The new tries, their rows and history in one statement; the run and the upstream
        // results for the messages in the same round trip.
        let found = try s.queries([("""
            WITH up AS (
                UPDATE task_instances t SET state = 'queued', try_number = t.try_number + 1, message_id = u.mid, queued_at = $4,
                    next_attempt_at = NULL, started_at = NULL, ended_at = NULL, heartbeat_at = NULL, worker = NULL, error = NULL, result = NULL
                FROM (SELECT u.task_id, u.mid, o.state AS old_state FROM unnest($2::text[], $3::text[]) AS u(task_id, mid)
                      JOIN task_instances o ON o.run_pk = $1 AND o.task_id = u.task_id) u
                WHERE t.run_pk = $1 AND t.task_id = u.task_id AND t.state IN ('pending', 'up_for_retry')
                RETURNING t.task_id, t.try_number, t.message_id, t.queue, t.priority, t.timeout_seconds, u.old_state),
            tries AS (
                INSERT INTO task_tries (run_pk, task_id, try_number, message_id, state, queued_at)
                SELECT $1, task_id, try_number, message_id, 'queued', $4 FROM up),
            history AS (
                INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source)
                SELECT $1, task_id, try_number, old_state, 'queued', $4, 'scheduler' FROM up)
            SELECT * FROM up
            """, [runPk, taskIds, messageIds, now])] + messageContextQueries(runPk: runPk, graph: graph, taskIds: taskIds))
        guard !found[0].isEmpty else { return [] }
        // RETURNING has no order: keep the caller's (priority) order for the broker.
        let position = Dictionary(taskIds.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        let updated = found[0].all.sorted { position[$0.string("task_id")!, default: 0] < position[$1.string("task_id")!, default: 0] }
        return messages(runPk: runPk, graph: graph, rows: updated, run: found[1].first, results: found[2])
    }

    /// The Celery messages of queued tries (`rows` carry task_id, try_number, message_id, queue,
    /// priority, timeout_seconds), with the run's params and the upstream tasks' results.
    func buildMessages(_ s: PGSession, runPk: Int, graph: FlowGraph, rows: [PGRow]) throws -> [CeleryMessage] {
        guard !rows.isEmpty else { return [] }
        let found = try s.queries(messageContextQueries(runPk: runPk, graph: graph, taskIds: rows.map { $0.string("task_id")! }))
        return messages(runPk: runPk, graph: graph, rows: rows, run: found[0].first, results: found[1])
    }

    /// What messages need beside their tries: the run, and the results of the tasks' upstream tasks.
    private func messageContextQueries(runPk: Int, graph: FlowGraph, taskIds: [String]) -> [(String, [any PGEncodable])] {
        let upstreamIds = Array(Set(taskIds.flatMap { graph.tasks[$0]?.upstream ?? [] }))
        return [
            ("SELECT run_id, flow_id, params::text AS params, logical_date, data_interval_start, data_interval_end FROM runs WHERE id = $1", [runPk]),
            ("SELECT task_id, result::text AS result FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[]) AND result IS NOT NULL",
             [runPk, upstreamIds]),
        ]
    }

    /// The rows read, handed to the pure `TaskMessageBuilder`.
    private func messages(runPk: Int, graph: FlowGraph, rows: [PGRow], run: PGRow?, results resultRows: PGResult) -> [CeleryMessage] {
        guard let run, !rows.isEmpty else { return [] }
        var results: [String: JSONValue] = [:]
        for r in resultRows.all { results[r.string("task_id")!] = try? JSONValue.parse(r.string("result")!) }
        let context = TaskMessageBuilder.Run(
            runId: run.string("run_id")!, flowId: run.string("flow_id")!,
            params: (try? JSONValue.parse(run.string("params") ?? "{}"))?.objectValue ?? [:],
            logicalDate: run.date("logical_date")!, dataIntervalStart: run.date("data_interval_start")!,
            dataIntervalEnd: run.date("data_interval_end")!)
        let tries = rows.map {
            TaskMessageBuilder.Try(taskId: $0.string("task_id")!, tryNumber: $0.int("try_number")!, messageId: $0.string("message_id")!,
                                   queue: $0.string("queue")!, timeoutSeconds: $0.double("timeout_seconds"))
        }
        return TaskMessageBuilder.messages(run: context, tries: tries, graph: graph, results: results)
    }

    /// Evaluates the downstream tasks of `finished` in one run (`RunStateMachine`): queues those
    /// now ready, and marks skipped or upstream_failed those that never will be, transitively —
    /// a wave per round of propagation, each reading the states it needs.
    func evaluateDownstream(_ s: PGSession, runPk: Int, graph: FlowGraph, finished: [String], now: Date) throws -> [CeleryMessage] {
        var changed = finished
        var ready: [String] = []
        while !changed.isEmpty {
            let candidates = RunStateMachine.candidates(after: changed, in: graph)
            if candidates.isEmpty { break }
            var states: [String: TaskState] = [:]
            for r in try s.query("SELECT task_id, state FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[])",
                                 [runPk, RunStateMachine.statesNeeded(for: candidates, in: graph)]).all {
                states[r.string("task_id")!] = TaskState(rawValue: r.string("state")!)
            }
            let wave = RunStateMachine.evaluate(candidates, states: states, in: graph, alreadyReady: Set(ready))
            ready += wave.ready
            for (list, state) in [(wave.skipped, TaskState.skipped), (wave.upstreamFailed, TaskState.upstreamFailed)] where !list.isEmpty {
                s.enqueue("""
                    WITH u AS (UPDATE task_instances SET state = $3, ended_at = $4 WHERE run_pk = $1 AND task_id = ANY($2::text[]) AND state = 'pending'
                               RETURNING task_id, try_number),
                         h AS (INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source)
                               SELECT $1, task_id, try_number, 'pending', $3, $4, 'scheduler' FROM u)
                    UPDATE runs SET unfinished_tasks = unfinished_tasks - (SELECT count(*) FROM u) WHERE id = $1
                    """, [runPk, list, state.rawValue, now])
            }
            changed = wave.ended
        }
        return try queueTasks(s, runPk: runPk, graph: graph, taskIds: RunStateMachine.dispatchOrder(ready, in: graph), now: now)
    }

    /// Ends the run when no task instance is left unfinished; Airflow's leaf rule decides how
    /// (`RunStateMachine.finalState`, with its `failingLeafStates`). Queued, so it costs no round trip: it
    /// travels with the commit and sees every change made before it in the transaction.
    /// A flow with many leaves (W1 has 10,000) first asks whether the run is done, so that
    /// the leaf list is sent once, not with every batch.
    func finalizeIfDone(_ s: PGSession, runPk: Int, graph: FlowGraph, now: Date) throws {
        if graph.leaves.count > 64 {
            guard let r = try s.query("SELECT unfinished_tasks, state FROM runs WHERE id = $1", [runPk]).first,
                  r.string("state") == "running", r.int("unfinished_tasks")! <= 0 else { return }
        }
        s.enqueue("""
            UPDATE runs SET ended_at = $3, state = (
                SELECT CASE WHEN bool_or(t.state = ANY($4::text[])) THEN 'failed' ELSE 'success' END
                FROM task_instances t WHERE t.run_pk = $1 AND t.task_id = ANY($2::text[]))
            WHERE id = $1 AND state = 'running' AND unfinished_tasks <= 0
            RETURNING flow_id
            """, [runPk, Array(graph.leaves), now, RunStateMachine.failingLeafStateNames]) { result in
            // A finished run may let a queued run of the same flow start: wake the run starters.
            if let flow = result.first?.string("flow_id") { s.notifyAfterCommit("flowkit_runs", flow) }
        }
    }
}

/// Flow graphs by flow and version; versions never change once written, so entries never go stale.
final class GraphCache: @unchecked Sendable {
    private let lock = NSLock()
    private var graphs: [String: FlowGraph] = [:]

    func graph(_ s: PGSession, flow: String, version: Int) throws -> FlowGraph {
        let key = "\(flow)@\(version)"
        if let g = lock.withLock({ graphs[key] }) { return g }
        guard let row = try s.query("SELECT definition::text AS d FROM flow_versions WHERE flow_id = $1 AND version = $2", [flow, version]).first else {
            throw NotFound("flow `\(flow)` has no version \(version)")
        }
        let g = FlowGraph(try FlowDefinition.decode(row.string("d")!))
        lock.withLock { graphs[key] = g }
        return g
    }
}
