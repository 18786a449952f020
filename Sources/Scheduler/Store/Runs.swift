import CeleryProtocol
public import FlowKit
public import Foundation
import PostgresClient

/// Runs: manual, backfilled and cron-made; starting queued runs as flows have room; cancel; the
/// end of a run; reads.
extension SchedulerStore {
    /// Creates a queued run and wakes the schedulers. Conf is checked against the flow's params.
    public func createRun(flowId: String, kind: String, conf: [String: JSONValue], logicalDate: Date?, now: Date) async throws -> RunRecord {
        try await createRun(flowId: flowId, kind: kind, conf: conf, logicalDate: logicalDate, idempotencyKey: nil, now: now).run
    }

    /// Creates a queued run, or with an idempotency key returns the run an earlier call with
    /// the same key made (`created` false), also when both arrive at once: a client that lost
    /// the answer retries without making a second run.
    /// `runId` names the run instead of the generated `manual__<date>__<id>` (Airflow's
    /// `dag_run_id`); a run id already taken is a conflict.
    public func createRun(flowId: String, kind: String, conf: [String: JSONValue], logicalDate: Date?, idempotencyKey: String?,
                          runId: String? = nil, now: Date) async throws -> (run: RunRecord, created: Bool) {
        if let runId {
            guard !runId.isEmpty, runId.utf8.count <= 250, !runId.contains(where: { $0.isNewline || $0 == "\u{0}" }) else {
                throw BadRequest("a run id must be 1 to 250 bytes on one line, not `\(runId.prefix(60))`")
            }
        }
        return try await audited { [self] s, actor in
            guard let f = try s.query("SELECT current_version, is_active FROM flows WHERE flow_id = $1", [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { try $0.stringOrNull("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            guard try f.boolOrNull("is_active") == true else { throw StateConflict("flow `\(flowId)` is inactive: it is no longer in the deployed code") }
            let version = try f.int("current_version")
            let graph = try graphs.graph(s, flow: flowId, version: version)
            let params = try graph.definition.resolveParams(conf: conf)
            let date = logicalDate ?? now
            if let key = idempotencyKey {
                let made: (run: RunRecord, created: Bool)
                do {
                    made = try insertKeyedRun(s, flowId: flowId, version: version, kind: kind, conf: conf, params: params, key: key,
                                              deadline: graph.definition.deadline, logicalDate: date, runId: runId, now: now)
                } catch let e as PGError where runId != nil && e.sqlState == "23505" {
                    throw StateConflict("a run with id `\(runId!)` already exists")
                }
                if made.created {
                    try audit(s, actor, "trigger", made.run.runId, ["flowId": .string(flowId), "conf": .object(conf), "idempotencyKey": .string(key)], now: now)
                }
                return made
            }
            if let runId, try s.query("SELECT 1 FROM runs WHERE run_id = $1", [runId]).first != nil {
                throw StateConflict("a run with id `\(runId)` already exists")
            }
            let run: RunRecord
            do {
                run = try insertRun(s, flowId: flowId, version: version, kind: kind, conf: conf, params: params,
                                    logicalDate: date, intervalStart: date, intervalEnd: date, deadline: graph.definition.deadline, runId: runId)!
            } catch let e as PGError where runId != nil && e.sqlState == "23505" {
                // Two requests naming the same new run id at once: the second finds it taken.
                throw StateConflict("a run with id `\(runId!)` already exists")
            }
            try audit(s, actor, "trigger", run.runId, ["flowId": .string(flowId), "conf": .object(conf)], now: now)
            return (run, true)
        }
    }

    /// A run started by the flow's webhook. With an idempotency key, a repeated delivery returns
    /// the run the first one made (`created` false), also when both arrive at once.
    public func createHookRun(flowId: String, conf: [String: JSONValue], idempotencyKey: String?, now: Date) async throws -> (run: RunRecord, created: Bool) {
        return try await audited { [self] s, actor in
            guard let f = try s.query("SELECT current_version, is_active FROM flows WHERE flow_id = $1", [flowId]).first,
                  try f.boolOrNull("is_active") == true else {
                throw NotFound("no active flow `\(flowId)` has a webhook")
            }
            let version = try f.int("current_version")
            let graph = try graphs.graph(s, flow: flowId, version: version)
            guard graph.definition.webhook != nil else { throw NotFound("flow `\(flowId)` has no webhook") }
            let params = try graph.definition.resolveParams(conf: conf)
            let made: (run: RunRecord, created: Bool)
            if let key = idempotencyKey {
                made = try insertKeyedRun(s, flowId: flowId, version: version, kind: "webhook", conf: conf, params: params, key: key,
                                          deadline: graph.definition.deadline, now: now)
            } else {
                made = (try insertRun(s, flowId: flowId, version: version, kind: "webhook", conf: conf, params: params,
                                      logicalDate: now, intervalStart: now, intervalEnd: now, deadline: graph.definition.deadline)!, true)
            }
            if made.created {
                try audit(s, actor, "webhook_run", made.run.runId, ["idempotencyKey": idempotencyKey.map(JSONValue.string) ?? .null], now: now)
            }
            return made
        }
    }

    /// The webhook of a flow's current version, for the API to check a delivery's secret.
    public func webhook(of flowId: String) async throws -> WebhookTrigger? {
        try await db.run { [self] s in
            guard let f = try s.query("SELECT current_version FROM flows WHERE flow_id = $1 AND is_active", [flowId]).first else { return nil }
            return try graphs.graph(s, flow: flowId, version: f.int("current_version")).definition.webhook
        }
    }

    /// A run id from a whole id or a unique part of one (its start, or the short id after the
    /// last `__`, at least 4 characters). Exact ids cost one index lookup; a part scans.
    public func resolveRunId(_ ref: String) async throws -> String {
        try await db.run { s in
            if try s.query("SELECT 1 FROM runs WHERE run_id = $1", [ref]).first != nil { return ref }
            guard ref.count >= 4 else { throw NotFound("unknown run `\(ref)`") }
            let escaped = ref.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                .replacingOccurrences(of: "_", with: "\\_")
            let found = try s.query("""
                SELECT run_id FROM runs WHERE run_id LIKE $1 OR run_id LIKE $2 ORDER BY id DESC LIMIT 6
                """, [escaped + "%", "%\\_\\_" + escaped + "%"]).all.compactMap { try $0.stringOrNull("run_id") }
            switch found.count {
            case 0: throw NotFound("unknown run `\(ref)`")
            case 1: return found[0]
            default:
                throw BadRequest("`\(ref)` matches several runs: \(found.prefix(5).joined(separator: ", "))\(found.count > 5 ? ", …" : ""); give more of the id")
            }
        }
    }

    /// Inserts a queued run; nil when a scheduled run for that tick already exists.
    func insertRun(_ s: PGSession, flowId: String, version: Int, kind: String, conf: [String: JSONValue], params: [String: JSONValue],
                   logicalDate: Date, intervalStart: Date, intervalEnd: Date, deadline: RunDeadline? = nil, runId: String? = nil) throws -> RunRecord? {
        let runId = runId ?? "\(kind)__\(Self.compactDate(logicalDate))__\(UUID().uuidString.prefix(8).lowercased())"
        let conflict = kind == "manual" ? "" : "ON CONFLICT (flow_id, logical_date) WHERE trigger_kind IN ('scheduled', 'backfill') DO NOTHING"
        let r = try s.query("""
            INSERT INTO runs AS r (run_id, flow_id, flow_version, trigger_kind, conf, params, state, logical_date, data_interval_start,
                                   data_interval_end, deadline_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, 'queued', $7, $8, $9, $10) \(conflict)
            RETURNING \(RunRecord.columns)
            """, [runId, flowId, version, kind, JSONValue.object(conf).jsonbText, JSONValue.object(params).jsonbText,
                  logicalDate, intervalStart, intervalEnd,
                  deadline.flatMap { $0.after == .logicalDate ? logicalDate.addingTimeInterval($0.seconds) : nil }])
        guard let row = r.first else { return nil }
        s.notifyAfterCommit("flowkit_runs", runId)
        return try RunRecord(row: row)
    }

    static func compactDate(_ d: Date) -> String {
        Instant.format(d)
    }

    /// Starts queued runs whose flow has room under `max_active_runs`: creates their task
    /// instances and queues the tasks that can start. Oldest first, but only among flows with
    /// room, so a flow at its cap never hides another flow's queued runs.
    ///
    /// At most `limit` runs a transaction: the flow's row stays locked until commit, and the
    /// other schedulers' starters wait on it. Under CPU starvation (#23: 50 debug clients on two
    /// cores) a 50-run batch held it, idle in transaction between statements, for 18 s.
    public func startQueuedRuns(now: Date, limit: Int = 10) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                // Per flow, only as many of its oldest queued runs as it has room for. The room is
                // counted once per flow with queued runs, not once per queued run: a per-row count
                // made a 1,000-run burst quadratic, and a generic plan that re-ran it per outer row
                // held every slot free for 100 s (make stress). Both reads use partial indexes.
                let queued = try s.query("""
                    WITH room AS MATERIALIZED (
                        SELECT f.flow_id, f.max_active_runs - (SELECT count(*) FROM runs a WHERE a.flow_id = f.flow_id AND a.state = 'running') AS room
                        FROM flows f
                        WHERE NOT f.is_paused AND EXISTS (SELECT 1 FROM runs q WHERE q.flow_id = f.flow_id AND q.state = 'queued'))
                    SELECT r.id, r.flow_id, r.flow_version FROM room
                    CROSS JOIN LATERAL (SELECT q.id, q.flow_id, q.flow_version FROM runs q WHERE q.flow_id = room.flow_id AND q.state = 'queued'
                                        ORDER BY q.id LIMIT GREATEST(room.room, 0) FOR NO KEY UPDATE SKIP LOCKED) r
                    ORDER BY r.id LIMIT $1
                    """, [limit]).all
                // Per flow: running runs and the cap, counted once under the flow's lock, then kept here.
                var room: [String: Int] = [:]
                for row in queued {
                    let runPk = try row.int("id"), flowId = try row.string("flow_id"), version = try row.int("flow_version")
                    if room[flowId] == nil {
                        // The flow's row serialises the count among schedulers. NO KEY UPDATE: a
                        // manual run's INSERT (its foreign key takes KEY SHARE) does not wait for it.
                        // Two statements: the count must see what a starter that held the lock
                        // before committed, so it needs a snapshot taken after the lock is granted.
                        try s.query("SELECT 1 FROM flows WHERE flow_id = $1 FOR NO KEY UPDATE", [flowId])
                        let counts = try s.query("""
                            SELECT (SELECT count(*) FROM runs WHERE flow_id = $1 AND state = 'running') AS active, max_active_runs
                            FROM flows WHERE flow_id = $1
                            """, [flowId]).single()
                        room[flowId] = try counts.int("max_active_runs") - counts.int("active")
                    }
                    guard room[flowId]! > 0 else { continue }
                    room[flowId]! -= 1
                    let graph = try graphs.graph(s, flow: flowId, version: version)
                    let tasks = graph.definition.tasks
                    try s.query("""
                        INSERT INTO task_instances (run_pk, task_id, state, max_tries, queue, priority, timeout_seconds, executor, pool, pool_slots)
                        SELECT $1, t, 'pending', m, q, p, NULLIF(o, -1), e, NULLIF(pl, ''), ps
                        FROM unnest($2::text[], $3::int[], $4::text[], $5::int[], $6::float8[], $7::text[], $8::text[], $9::int[])
                             AS u(t, m, q, p, o, e, pl, ps)
                        """, [runPk, tasks.map(\.id), tasks.map(\.retry.maxTries), tasks.map(\.queue), tasks.map(\.priority),
                              tasks.map { $0.timeoutSeconds ?? -1 }, tasks.map { $0.celeryName != nil ? "celery" : $0.runsOnScheduler ? "scheduler" : "flowkit" },
                              tasks.map { $0.pool ?? "" }, tasks.map { $0.poolSlots ?? 1 }])
                    let deadline = graph.definition.deadline.map { d in
                        d.after == .start ? now.addingTimeInterval(d.seconds) : nil } ?? nil
                    try s.query("""
                        UPDATE runs SET state = 'running', started_at = $2, unfinished_tasks = $3, timeout_at = $4,
                            deadline_at = COALESCE($5::timestamptz, deadline_at) WHERE id = $1
                        """, [runPk, now, tasks.count, graph.definition.runTimeoutSeconds.map { now.addingTimeInterval($0) }, deadline])
                    work.enqueue += try dispatchReady(s, runPk: runPk, graph: graph, ready: RunStateMachine.startingTasks(graph), now: now)
                }
                return work
            }
        }
    }

    /// Ends the run when no task instance is left unfinished; Airflow's leaf rule decides how
    /// (`RunStateMachine.finalState`, with its `failingLeafStates`). Queued, so it costs no round trip: it
    /// travels with the commit and sees every change made before it in the transaction.
    /// A flow with many leaves (W1 has 10,000) first asks whether the run is done, so that
    /// the leaf list is sent once, not with every batch.
    func finalizeIfDone(_ s: PGSession, runPk: Int, graph: FlowGraph, now: Date) throws {
        if graph.leaves.count > 64 {
            guard let r = try s.query("SELECT unfinished_tasks, state FROM runs WHERE id = $1", [runPk]).first,
                  try r.stringOrNull("state") == "running", try r.int("unfinished_tasks") <= 0 else { return }
        }
        let onFailure = graph.definition.notify?.notifiers(for: .onRunFailure).map(\.description) ?? []
        let onSuccess = graph.definition.notify?.notifiers(for: .onRunSuccess).map(\.description) ?? []
        // A run's end and its notifications (the outbox) in one statement, one transaction.
        let notify = onFailure.isEmpty && onSuccess.isEmpty ? "" : """
            , n AS (
                INSERT INTO notifications (delivery_key, event, notifier, flow_id, run_pk, run_id, state, error, next_attempt_at, created_at)
                SELECT e.run_id || '/run/0/' || e.event || '/' || e.notifier, e.event, e.notifier, e.flow_id, e.id, e.run_id, e.state,
                       CASE WHEN e.state = 'failed' THEN 'a leaf task did not succeed' END, $3, $3
                FROM (SELECT f.*, 'on_run_failure' AS event, x AS notifier FROM f, unnest($5::text[]) x WHERE f.state = 'failed'
                      UNION ALL SELECT f.*, 'on_run_success', x FROM f, unnest($6::text[]) x WHERE f.state = 'success') e
                ON CONFLICT (delivery_key) DO NOTHING)
            """
        if !notify.isEmpty { s.notifyAfterCommit("flowkit_notifications", "") }
        s.enqueue("""
            WITH f AS (
                UPDATE runs SET ended_at = $3, state = e.state,
                    triggers_pending = e.state = 'success' AND EXISTS (SELECT 1 FROM flow_subscriptions WHERE upstream = runs.flow_id)
                FROM (SELECT CASE WHEN bool_or(t.state = ANY($4::text[])) THEN 'failed' ELSE 'success' END AS state
                      FROM task_instances t WHERE t.run_pk = $1 AND t.task_id = ANY($2::text[])) e
                WHERE id = $1 AND runs.state = 'running' AND unfinished_tasks <= 0
                RETURNING id, run_id, flow_id, runs.state, triggers_pending, triggered_by)\(notify)
            SELECT flow_id, triggers_pending, triggered_by IS NOT NULL AS is_child FROM f
            """, [runPk, Array(graph.leaves), now, RunStateMachine.failingLeafStateNames] + (notify.isEmpty ? [] : [onFailure, onSuccess])) { result in
            // A finished run may let a queued run of the same flow start: wake the run starters.
            if let flow = try result.first?.stringOrNull("flow_id") { s.notifyAfterCommit("flowkit_runs", flow) }
            // A flow runs after this one's success, or a trigger task may wait for this run: wake the flow-trigger service.
            if try result.first?.boolOrNull("triggers_pending") == true || result.first?.boolOrNull("is_child") == true { s.notifyAfterCommit(Self.flowTriggersChannel, "") }
        }
    }

    /// Cancels a run: unfinished task instances become cancelled, and the workers running
    /// them are told to stop (through the broker work returned).
    public func cancelRun(runId: String, now: Date) async throws -> BrokerWork {
        return try await audited { [self] s, actor in
            guard let r = try s.query("SELECT id, state FROM runs WHERE run_id = $1 FOR NO KEY UPDATE", [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            let state = try r.string("state")
            guard state == "queued" || state == "running" else {
                throw StateConflict("run `\(runId)` is already \(state)")
            }
            try audit(s, actor, "cancel", runId, now: now)
            return try endRun(s, pk: r.int("id"), runId: runId, as: .cancelled, source: apiSource(actor), detail: "run cancelled", now: now)
        }
    }

    /// Decides the deadlines that have passed: a run that ended by its deadline `met` it; any
    /// other `missed` it, and gets an `onDeadlineMiss` notification in the same transaction,
    /// once (the state is set once, with SKIP LOCKED among schedulers). Returns the runs that missed.
    public func decideDeadlines(now: Date, limit: Int = 200) async throws -> [String] {
        try await db.run { [self] s in
            try s.transaction {
                let due = try s.query("""
                    UPDATE runs r SET deadline_state = CASE WHEN r.ended_at IS NOT NULL AND r.ended_at <= r.deadline_at THEN 'met' ELSE 'missed' END
                    FROM (SELECT id FROM runs WHERE deadline_at IS NOT NULL AND deadline_state IS NULL AND deadline_at <= $1
                          ORDER BY deadline_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED) d
                    WHERE r.id = d.id
                    RETURNING r.id, r.run_id, r.flow_id, r.flow_version, r.state, r.deadline_at, r.deadline_state
                    """, [now, limit]).all.filter { try $0.stringOrNull("deadline_state") == "missed" }
                var notes = NotificationBatch()
                for r in due {
                    let graph = try graphs.graph(s, flow: r.string("flow_id"), version: r.int("flow_version"))
                    notes.add(graph.definition.notify?.notifiers(for: .onDeadlineMiss) ?? [], event: .onDeadlineMiss, flow: try r.string("flow_id"),
                              runPk: try r.int("id"), runId: try r.string("run_id"), task: nil, try: nil, state: try r.string("state"),
                              error: "the run was not finished by its deadline, \(Instant.format(try r.date("deadline_at")))")
                }
                notes.insert(s, now: now)
                return try due.map { try $0.string("run_id") }
            }
        }
    }

    /// Fails runs still unfinished past their flow's `runTimeout` (at most `limit` at a time):
    /// their unfinished task instances are cancelled, and their running tries told to stop.
    public func failTimedOutRuns(now: Date, limit: Int = 100) async throws -> (runs: [String], work: BrokerWork) {
        try await db.run { [self] s in
            try s.transaction {
                let due = try s.query("""
                    SELECT id, run_id, flow_id, flow_version, extract(epoch FROM timeout_at - started_at) AS limit_s FROM runs
                    WHERE state = 'running' AND timeout_at <= $1 ORDER BY timeout_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED
                    """, [now, limit]).all
                var work = BrokerWork(), ended: [String] = [], notes = NotificationBatch()
                for r in due {
                    let runId = try r.string("run_id")
                    let limit = try r.doubleOrNull("limit_s").map { String(format: "%g", $0) } ?? "?"
                    let detail = "run timeout: the run was still unfinished \(limit)s after it started"
                    work.merge(try endRun(s, pk: r.int("id"), runId: runId, as: .failed, source: "scheduler", detail: detail, now: now))
                    ended.append(runId)
                    let graph = try graphs.graph(s, flow: r.string("flow_id"), version: r.int("flow_version"))
                    notes.add(graph.definition.notify?.notifiers(for: .onRunFailure) ?? [], event: .onRunFailure, flow: try r.string("flow_id"),
                              runPk: try r.int("id"), runId: runId, task: nil, try: nil, state: RunState.failed.rawValue, error: detail)
                }
                notes.insert(s, now: now)
                return (ended, work)
            }
        }
    }

    /// Ends a run as `state`: its unfinished task instances and tries become cancelled, with
    /// `detail` in their history; returns the running messages to stop on their workers.
    func endRun(_ s: PGSession, pk: Int, runId: String, as state: RunState, source: String, detail: String, now: Date) throws -> BrokerWork {
        var work = BrokerWork()
        work.cancel = try s.query("""
            WITH u AS (UPDATE task_instances SET state = 'cancelled', ended_at = $2, next_attempt_at = NULL,
                                                 error = CASE WHEN $3 = 'scheduler' THEN $4 ELSE error END
                       WHERE run_pk = $1 AND state IN ('pending', 'queued', 'running', 'up_for_retry', 'up_for_reschedule')
                       RETURNING task_id, try_number, message_id),
                 h AS (INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                       SELECT $1, task_id, try_number, NULL, 'cancelled', $2, $3, $4 FROM u)
            SELECT message_id FROM u WHERE message_id IS NOT NULL
            """, [pk, now, source, detail]).all.compactMap { try $0.stringOrNull("message_id") }
        s.enqueue("UPDATE task_tries SET state = 'cancelled', ended_at = $2 WHERE run_pk = $1 AND ended_at IS NULL", [pk, now])
        s.enqueue("UPDATE runs SET state = $3, ended_at = $2, unfinished_tasks = 0 WHERE id = $1", [pk, now, state.rawValue])
        s.notifyAfterCommit("flowkit_runs", runId)  // a slot is free for a queued run
        announceChange(s, runPk: pk)
        s.notifyAfterCommit(Self.slotsChannel, "")  // and its tasks' pool slots are free
        return work
    }

    /// Creates a queued `backfill` run for every cron tick of the flow in `[from, to]`, oldest
    /// first; ticks that already have a scheduled or backfill run are skipped. At most `limit`.
    public func createBackfillRuns(flowId: String, from: Date, to: Date, conf: [String: JSONValue], limit: Int = 1000) async throws -> [RunRecord] {
        guard from <= to else { throw StateConflict("backfill: --from \(Instant.format(from)) is after --to \(Instant.format(to))") }
        return try await audited { [self] s, actor in
            guard let f = try s.query("SELECT current_version, schedule, timezone FROM flows WHERE flow_id = $1 FOR NO KEY UPDATE", [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { try $0.stringOrNull("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            guard let cron = try f.stringOrNull("schedule") else { throw StateConflict("flow `\(flowId)` has no schedule to backfill") }
            let compiled = try Schedule(cron: cron, timeZone: f.string("timezone")).compiled()
            let version = try f.int("current_version")
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
            try audit(s, actor, "backfill", flowId, ["runs": .int(created.count), "from": .string(Instant.format(from)), "to": .string(Instant.format(to))],
                      now: self.clock.now())
            return created
        }
    }

    /// Makes the runs for every due cron tick: with catchup off only the latest missed tick,
    /// with catchup on every missed tick, oldest first. Exactly one run per tick, whatever the
    /// number of schedulers (row locks plus the unique index on flow and logical date).
    public func createDueScheduledRuns(now: Date, maxTicksPerFlow: Int = 1000) async throws -> [RunRecord] {
        try await db.run { [self] s in
            try s.transaction {
                var created: [RunRecord] = []
                let due = try s.query("""
                    SELECT flow_id, current_version, schedule, timezone, catchup, next_tick FROM flows
                    WHERE next_tick <= $1 AND is_active AND NOT is_paused AND schedule IS NOT NULL
                    ORDER BY next_tick LIMIT 100 FOR NO KEY UPDATE SKIP LOCKED
                    """, [now]).all
                for f in due {
                    let flowId = try f.string("flow_id")
                    let cron = try f.string("schedule"), zone = try f.string("timezone")
                    guard let compiled = try? Schedule(cron: cron, timeZone: zone).compiled(),
                          var tick = try f.dateOrNull("next_tick") else { continue }
                    var ticks: [Date] = []
                    while tick <= now, ticks.count < maxTicksPerFlow {
                        ticks.append(tick)
                        guard let n = compiled.nextFire(after: tick) else { break }
                        tick = n
                    }
                    let chosen = try f.boolOrNull("catchup") == true ? ticks : Array(ticks.suffix(1))
                    let version = try f.int("current_version")
                    let graph = try graphs.graph(s, flow: flowId, version: version)
                    let params = try graph.definition.resolveParams(conf: [:])
                    for t in chosen {
                        let prev = compiled.latestFire(atOrBefore: t.addingTimeInterval(-1)) ?? t
                        if let r = try insertRun(s, flowId: flowId, version: version, kind: "scheduled", conf: [:], params: params,
                                                 logicalDate: t, intervalStart: prev, intervalEnd: t, deadline: graph.definition.deadline) {
                            created.append(r)
                        }
                    }
                    try s.query("UPDATE flows SET next_tick = $2 WHERE flow_id = $1", [flowId, tick])
                }
                return created
            }
        }
    }

    /// The earliest next tick of an active, unpaused flow.
    public func nextTickTime() async throws -> Date? {
        try await db.run { s in
            try s.query("SELECT min(next_tick) AS t FROM flows WHERE is_active AND NOT is_paused").first?.dateOrNull("t")
        }
    }

    /// Runs, newest first, filtered; pass the last page's smallest `id` as `before` for the next page.
    public func runs(_ f: RunFilter) async throws -> [RunRecord] {
        try await db.run { s in
            // The page, and when asked its task counts, in one round trip. The counts have a
            // statement of their own: as a per-row aggregate in the page's statement they raised
            // the custom plan's estimated cost above the generic plan's, and PostgreSQL switched
            // to a sequential scan and sort of every run (W5: 4,000 → 330 req/s). Even apart, they
            // cost W5 about a third, so they are read only when asked for.
            let filter = """
                FROM runs r
                WHERE ($1::text IS NULL OR r.flow_id = $1) AND ($2::text IS NULL OR r.state = $2)
                  AND ($3::timestamptz IS NULL OR r.logical_date >= $3) AND ($4::timestamptz IS NULL OR r.logical_date < $4)
                  AND ($5::bigint IS NULL OR r.id < $5)\(f.kind == nil ? "" : " AND r.trigger_kind = $7")
                ORDER BY r.id DESC LIMIT $6
                """
            // The kind's condition is in the text only when asked: the unfiltered page keeps its
            // prepared statement and plan (W5).
            var params: [any PGEncodable] = [f.flowId, f.state, f.since, f.until, f.before, f.limit]
            if let kind = f.kind { params.append(kind) }
            guard f.withTaskCounts else { return try s.query("SELECT \(RunRecord.columns) \(filter)", params).decode(RunRecord.self) }
            let results = try s.queries([
                ("SELECT \(RunRecord.columns) \(filter)", params),
                ("""
                 SELECT run_pk, state, count(*) AS n FROM task_instances WHERE run_pk IN (SELECT r.id \(filter)) GROUP BY run_pk, state
                 """, params),
            ])
            var runs = try results[0].decode(RunRecord.self)
            var counts: [Int: [String: Int]] = [:]
            for r in results[1].all { counts[try r.int("run_pk"), default: [:]][try r.string("state")] = try r.int("n") }
            for i in runs.indices { runs[i].taskCounts = counts[runs[i].id] ?? [:] }
            return runs
        }
    }

    /// A run's state and times, without its task counts: for a watcher that polls (the bench),
    /// which must not aggregate a 10,000-task run's instances fifty times a second (#31: that
    /// read, added with the task counts, cost W1 ~15 % on two cores).
    public func runProgress(_ runId: String) async throws -> (state: String, createdAt: Date, endedAt: Date?) {
        try await db.run { s in
            guard let r = try s.query("SELECT state, created_at, ended_at FROM runs WHERE run_id = $1", [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            return (try r.string("state"), try r.date("created_at"), try r.dateOrNull("ended_at"))
        }
    }

    public func run(_ runId: String) async throws -> RunRecord {
        try await db.run { s in
            guard let r = try s.query("SELECT \(RunRecord.columns), \(RunRecord.taskCountsColumn) FROM runs r WHERE r.run_id = $1",
                                      [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            return try RunRecord(row: r)
        }
    }

    /// Runs and task instances by state, for `/metrics`.
    public func stateCounts() async throws -> (runs: [String: Int], tasks: [String: Int]) {
        try await db.run { s in
            var runs: [String: Int] = [:], tasks: [String: Int] = [:]
            for r in try s.query("SELECT state, count(*) AS n FROM runs GROUP BY state").all { runs[try r.string("state")] = try r.int("n") }
            // Only states with a partial index: the cost must not grow with the history.
            for r in try s.query("""
                SELECT 'queued' AS state, count(*) AS n FROM task_instances WHERE state = 'queued'
                UNION ALL SELECT 'running', count(*) FROM task_instances WHERE state = 'running'
                UNION ALL SELECT 'up_for_retry', count(*) FROM task_instances WHERE state = 'up_for_retry'
                UNION ALL SELECT 'up_for_reschedule', count(*) FROM task_instances WHERE state = 'up_for_reschedule'
                """).all {
                tasks[try r.string("state")] = try r.int("n")
            }
            return (runs, tasks)
        }
    }
}
