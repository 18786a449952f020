import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient

extension SchedulerStore {
    /// Applies a batch of worker events in one transaction: state changes, logs, heartbeats and
    /// worker records; then evaluates the downstream tasks of every task that ended.
    ///
    /// Set-based: a batch of any size costs a fixed number of statements plus one evaluation per
    /// run touched, not a round trip per event. A report that does not match the task
    /// instance's current try (a late report from a reaped try, a duplicate delivery) is recorded
    /// in the history with `applied = false` and changes nothing else.
    ///
    /// With `durable` false the commit does not wait for the WAL flush: the caller must not
    /// acknowledge the events until a later synchronous commit (`flushDurably`) has returned —
    /// WAL is flushed in order, so that commit makes this one durable too.
    public func applyEvents(_ events: [WorkerEvent], now: Date, durable: Bool = true) async throws -> BrokerWork {
        guard !events.isEmpty else { return BrokerWork() }
        return try await db.run { [self] s in
            try s.transaction { try s.plans(generic: events.count <= SchedulerStore.smallBatch) {
                if !durable { s.enqueue("SET LOCAL synchronous_commit = off") }
                let runIds = Array(Set(events.compactMap(\.runId)))
                var runPks: [String: Int] = [:]
                var current: [String: PGRow] = [:]
                if !runIds.isEmpty {
                    // The runs' locks and, in the same round trip, the task instances that outcomes report on.
                    let reported = events.filter { [.succeeded, .failed, .skipped].contains($0.kind) && $0.runId != nil && $0.taskId != nil }
                    var statements: [(String, [any PGEncodable])] = [
                        ("SELECT id, run_id FROM runs WHERE run_id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE", [runIds]),
                    ]
                    if !reported.isEmpty {
                        statements.append(("""
                            SELECT t.run_pk, t.task_id, t.state, t.try_number, t.max_tries, t.message_id, r.flow_id, r.flow_version, r.state AS run_state
                            FROM unnest($1::text[], $2::text[]) AS u(run_id, task_id)
                            JOIN runs r ON r.run_id = u.run_id
                            CROSS JOIN LATERAL (SELECT * FROM task_instances ti WHERE ti.run_pk = r.id AND ti.task_id = u.task_id LIMIT 1) t
                            """, [reported.map { $0.runId! }, reported.map { $0.taskId! }]))
                    }
                    let results = try s.queries(statements)
                    for r in results[0].all { runPks[r.string("run_id")!] = r.int("id")! }
                    for r in results.dropFirst().first?.all ?? [] { current["\(r.int("run_pk")!)/\(r.string("task_id")!)"] = r }
                }
                // Events of runs the database does not have change nothing; they go to the dead-letter list.
                let orphans = events.filter { ev in ev.runId.map { runPks[$0] == nil } ?? false }
                var logs = ColumnBatch(), started: [(Int, WorkerEvent)] = [], outcomes: [(Int, WorkerEvent)] = []
                var heartbeatIds: [String] = []
                var latestWorkerEvent: [String: WorkerEvent] = [:]
                for ev in events {
                    switch ev.kind {
                    case .log:
                        guard let pk = ev.runId.flatMap({ runPks[$0] }), let task = ev.taskId, let t = ev.tryNumber else { continue }
                        for line in ev.lines ?? [] { logs.add(pk, task, t, Date(timeIntervalSince1970: ev.at), Self.storableLogLine(line)) }
                    case .heartbeat, .workerOnline, .workerOffline:
                        if ev.kind == .heartbeat { heartbeatIds += ev.running ?? [] }
                        if let prev = latestWorkerEvent[ev.worker], prev.kind == .workerOnline, ev.kind == .heartbeat { continue }
                        latestWorkerEvent[ev.worker] = ev
                    case .started:
                        if let pk = ev.runId.flatMap({ runPks[$0] }), ev.taskId != nil, ev.tryNumber != nil, ev.messageId != nil { started.append((pk, ev)) }
                    case .succeeded, .failed, .skipped:
                        if let pk = ev.runId.flatMap({ runPks[$0] }), ev.taskId != nil, ev.tryNumber != nil, ev.messageId != nil { outcomes.append((pk, ev)) }
                    case .cancelled:
                        guard let pk = ev.runId.flatMap({ runPks[$0] }), let task = ev.taskId else { continue }
                        s.enqueue("""
                            INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail, applied)
                            VALUES ($1, $2, $3, NULL, 'cancelled', $4, $5, 'worker dropped the cancelled try', false)
                            """, [pk, task, ev.tryNumber ?? 0, Date(timeIntervalSince1970: ev.at), "worker:\(ev.worker)"])
                    }
                }
                for ev in latestWorkerEvent.values { try upsertWorker(s, ev, now: now) }
                if !logs.isEmpty {
                    s.enqueue("""
                        INSERT INTO task_logs (run_pk, task_id, try_number, at, line)
                        SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::text[])
                        """, [logs.pk, logs.task, logs.tryNumber, logs.at, logs.text])
                }
                if !heartbeatIds.isEmpty {
                    s.enqueue("UPDATE task_instances SET heartbeat_at = $2 WHERE message_id = ANY($1::text[]) AND state = 'running'",
                                [Array(Set(heartbeatIds)), now])
                }
                let nowRunning = try applyStarted(s, started, now: now)
                var work = try applyOutcomes(s, outcomes, current: current, startedInBatch: nowRunning, now: now)
                work.orphans = orphans.map { ($0, "a \($0.kind.rawValue) event of unknown run `\($0.runId!)`: the database has no such run") }
                return work
            } }
        }
    }

    /// Longest log line kept whole; longer ones are cut, saying how much was dropped.
    static let maxLogLine = 16 * 1024

    static func storableLogLine(_ line: String) -> String {
        guard line.utf8.count > maxLogLine else { return line }
        let kept = String(decoding: line.utf8.prefix(maxLogLine), as: UTF8.self)
        return kept + " …[line cut: \(line.utf8.count - kept.utf8.count) more bytes]"
    }

    private func upsertWorker(_ s: PGSession, _ ev: WorkerEvent, now: Date) throws {
        let info = ev.info
        let at = Date(timeIntervalSince1970: ev.at)
        let state = ev.kind == .workerOffline ? "offline" : "online"
        s.enqueue("""
            INSERT INTO workers (name, host, pid, queues, concurrency, version, started_at, heartbeat_at, running, state)
            VALUES ($1, $2, $3, $4::text[], $5, $6, $7, $7, $8, $9)
            ON CONFLICT (name) DO UPDATE SET heartbeat_at = GREATEST(workers.heartbeat_at, EXCLUDED.heartbeat_at),
                running = EXCLUDED.running, state = EXCLUDED.state,
                host = CASE WHEN $10 THEN EXCLUDED.host ELSE workers.host END,
                pid = COALESCE(EXCLUDED.pid, workers.pid),
                queues = CASE WHEN $10 THEN EXCLUDED.queues ELSE workers.queues END,
                concurrency = CASE WHEN $10 THEN EXCLUDED.concurrency ELSE workers.concurrency END,
                version = COALESCE(EXCLUDED.version, workers.version),
                started_at = CASE WHEN $10 THEN EXCLUDED.started_at ELSE workers.started_at END
            """, [ev.worker, info?["host"]?.stringValue ?? "unknown", info?["pid"]?.intValue, (info?["queues"]?.arrayValue ?? []).compactMap(\.stringValue),
                  info?["concurrency"]?.intValue ?? 1, info?["version"]?.stringValue, at, ev.running?.count ?? 0, state,
                  ev.kind == .workerOnline])
    }

    private func history(_ s: PGSession, runPk: Int, task: String, try tryNumber: Int, from: String?, to: String, at: Date,
                         source: String, detail: String?, applied: Bool) {
        var h = HistoryBatch()
        h.add(runPk, task, tryNumber, from, to, at, source, detail, applied)
        h.insert(s)
    }

    /// `started` reports: queued (or, on a redelivery, running) tries become running.
    /// Returns the task instances (`run_pk/task_id`) it moved to running.
    private func applyStarted(_ s: PGSession, _ started: [(Int, WorkerEvent)], now: Date) throws -> Set<String> {
        guard !started.isEmpty else { return [] }
        let applied = try s.query("""
            UPDATE task_instances t SET state = 'running', started_at = COALESCE(t.started_at, u.at), heartbeat_at = $6, worker = u.worker
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS u(run_pk, task_id, mid, worker, at)
            WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id AND t.message_id = u.mid AND t.state IN ('queued', 'running')
            RETURNING t.run_pk, t.task_id, t.message_id
            """, [started.map(\.0), started.map { $0.1.taskId! }, started.map { $0.1.messageId! }, started.map(\.1.worker),
                  started.map { Date(timeIntervalSince1970: $0.1.at) }, now]).all
        let ok = Set(applied.map { "\($0.int("run_pk")!)/\($0.string("message_id")!)" })
        var tries = ColumnBatch(), h = HistoryBatch()
        for (pk, ev) in started {
            let isApplied = ok.contains("\(pk)/\(ev.messageId!)")
            let at = Date(timeIntervalSince1970: ev.at)
            if isApplied { tries.add(pk, ev.taskId!, ev.tryNumber!, at, ev.worker) }
            h.add(pk, ev.taskId!, ev.tryNumber!, isApplied ? "queued" : nil, "running", at, "worker:\(ev.worker)",
                  isApplied ? nil : "stale report: not the current try, or the try already ended", isApplied)
        }
        if !tries.isEmpty {
            s.enqueue("""
                UPDATE task_tries t SET state = 'running', started_at = COALESCE(t.started_at, u.at), worker = u.worker
                FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::text[]) AS u(run_pk, task_id, n, at, worker)
                WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id AND t.try_number = u.n AND t.state = 'queued'
                """, [tries.pk, tries.task, tries.tryNumber, tries.at, tries.text])
        }
        h.insert(s)
        return Set(applied.map { "\($0.int("run_pk")!)/\($0.string("task_id")!)" })
    }

    /// Tries that ended on a worker: success, skipped, or failure (retried while tries remain);
    /// then, per run, the downstream tasks of what ended are evaluated once.
    private func applyOutcomes(_ s: PGSession, _ outcomes: [(Int, WorkerEvent)], current: [String: PGRow],
                               startedInBatch: Set<String>, now: Date) throws -> BrokerWork {
        guard !outcomes.isEmpty else { return BrokerWork() }
        var updates = OutcomeBatch(), h = HistoryBatch()
        var ended: [Int: [String]] = [:]
        var decided = Set<String>()
        for (pk, ev) in outcomes {
            let task = ev.taskId!, t = ev.tryNumber!, key = "\(pk)/\(task)"
            let at = Date(timeIntervalSince1970: ev.at)
            let source = "worker:\(ev.worker)"
            let target: TaskState = ev.kind == .succeeded ? .success : ev.kind == .skipped ? .skipped : .failed
            guard let ti = current[key] else { continue }
            // `current` was read before this batch's start reports were applied.
            let read = ti.string("state")!
            let state = read == "queued" && startedInBatch.contains(key) ? "running" : read
            guard ti.string("message_id") == ev.messageId, state == "queued" || state == "running",
                  ti.string("run_state") == "running", !decided.contains(key) else {
                let why = decided.contains(key) ? "duplicate report ignored" : "stale report ignored (task is \(state), try \(ti.int("try_number")!))"
                h.add(pk, task, t, nil, target.rawValue, at, source, why, false)
                continue
            }
            decided.insert(key)
            let graph = try graphs.graph(s, flow: ti.string("flow_id")!, version: ti.int("flow_version")!)
            var newState = target
            var nextAttempt: Date?
            if target == .failed, t < ti.int("max_tries")! {
                newState = .upForRetry
                nextAttempt = now.addingTimeInterval((graph.tasks[task]?.retry ?? .none).delay(afterTry: t, unit: random()))
            }
            let startedAt = ev.startedAt.map(Date.init(timeIntervalSince1970:))
            updates.add(pk, task, t, newState, target, at, ev.result.map(\.jsonbText), ev.error, nextAttempt, ev.worker, startedAt)
            var from = state
            if state == "queued", let startedAt {
                // A short try reported its start inside its outcome.
                h.add(pk, task, t, "queued", "running", startedAt, source, nil, true)
                from = "running"
            }
            h.add(pk, task, t, from, newState.rawValue, at, source, ev.error, true)
            if newState.isTerminal { ended[pk, default: []].append(task) }
        }
        updates.apply(s)
        h.insert(s)
        var work = BrokerWork()
        for (pk, tasks) in ended.sorted(by: { $0.key < $1.key }) {
            s.enqueue("UPDATE runs SET unfinished_tasks = unfinished_tasks - $2 WHERE id = $1", [pk, tasks.count])
            let r = current["\(pk)/\(tasks[0])"]!
            let graph = try graphs.graph(s, flow: r.string("flow_id")!, version: r.int("flow_version")!)
            work.enqueue += try evaluateDownstream(s, runPk: pk, graph: graph, finished: tasks, now: now)
            try finalizeIfDone(s, runPk: pk, graph: graph, now: now)
        }
        return work
    }

    // MARK: - Retries

    /// Queues the next try of tasks whose retry time has come.
    public func queueDueRetries(now: Date, limit: Int = 500) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                let due = try s.query("""
                    SELECT t.run_pk, t.task_id, r.flow_id, r.flow_version FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    WHERE t.state = 'up_for_retry' AND t.next_attempt_at <= $1 AND r.state = 'running'
                    ORDER BY t.next_attempt_at LIMIT $2 FOR NO KEY UPDATE OF r SKIP LOCKED
                    """, [now, limit]).all
                var byRun: [Int: (String, Int, [String])] = [:]
                for r in due {
                    let pk = r.int("run_pk")!
                    byRun[pk, default: (r.string("flow_id")!, r.int("flow_version")!, [])].2.append(r.string("task_id")!)
                }
                for (pk, v) in byRun.sorted(by: { $0.key < $1.key }) {
                    let graph = try graphs.graph(s, flow: v.0, version: v.1)
                    work.enqueue += try queueTasks(s, runPk: pk, graph: graph, taskIds: v.2, now: now)
                }
                return work
            }
        }
    }

    /// When the earliest retry is due, if any (so the retry timer can sleep until then).
    public func nextRetryTime() async throws -> Date? {
        try await db.run { s in
            try s.query("SELECT min(next_attempt_at) AS t FROM task_instances WHERE state = 'up_for_retry'").first?.date("t")
        }
    }

    // MARK: - Cron

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
                    let flowId = f.string("flow_id")!
                    guard let compiled = try? Schedule(cron: f.string("schedule")!, timeZone: f.string("timezone")!).compiled(),
                          var tick = f.date("next_tick") else { continue }
                    var ticks: [Date] = []
                    while tick <= now, ticks.count < maxTicksPerFlow {
                        ticks.append(tick)
                        guard let n = compiled.nextFire(after: tick) else { break }
                        tick = n
                    }
                    let chosen = f.bool("catchup") == true ? ticks : Array(ticks.suffix(1))
                    let version = f.int("current_version")!
                    let graph = try graphs.graph(s, flow: flowId, version: version)
                    let params = try graph.definition.resolveParams(conf: [:])
                    for t in chosen {
                        let prev = compiled.latestFire(atOrBefore: t.addingTimeInterval(-1)) ?? t
                        if let r = try insertRun(s, flowId: flowId, version: version, kind: "scheduled", conf: [:], params: params,
                                                 logicalDate: t, intervalStart: prev, intervalEnd: t) {
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
            try s.query("SELECT min(next_tick) AS t FROM flows WHERE is_active AND NOT is_paused").first?.date("t")
        }
    }

    // MARK: - Reaper

    /// Fails tries whose worker stopped heart-beating and tries past their execution timeout,
    /// retrying them per their policy. Returns the broker work (retries are queued by the timer;
    /// the reaped messages are forgotten so no worker runs the stale try).
    /// Workers of running tries whose heartbeat in the database is older than `heartbeatTimeout`.
    public func workersWithStaleHeartbeats(now: Date, heartbeatTimeout: Double) async throws -> [String] {
        try await db.run { s in
            try s.query("SELECT DISTINCT worker FROM task_instances WHERE state = 'running' AND heartbeat_at < $1 AND worker IS NOT NULL",
                        [now.addingTimeInterval(-heartbeatTimeout)]).all.compactMap { $0.string("worker") }
        }
    }

    /// `aliveWorkers` are known to be alive right now (from Redis): their tries are not zombies
    /// even when the database has not seen their heartbeats yet (after a database outage, the
    /// heartbeats are still queued in the events stream).
    public func reapZombies(now: Date, heartbeatTimeout: Double, aliveWorkers: Set<String> = []) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                let cutoff = now.addingTimeInterval(-heartbeatTimeout)
                let rows = try s.query("""
                    SELECT t.run_pk, t.task_id, t.try_number, t.max_tries, t.message_id, t.worker, t.heartbeat_at, t.started_at,
                           t.timeout_seconds, r.flow_id, r.flow_version,
                           CASE WHEN t.heartbeat_at < $1 THEN 'zombie' ELSE 'timeout' END AS why
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    WHERE t.state = 'running' AND ((t.heartbeat_at < $1 AND t.executor = 'flowkit' AND NOT (COALESCE(t.worker, '') = ANY($4::text[])))
                          OR (t.timeout_seconds IS NOT NULL AND t.started_at + make_interval(secs => t.timeout_seconds + $3) < $2))
                    LIMIT 500 FOR NO KEY UPDATE OF r SKIP LOCKED
                    """, [cutoff, now, heartbeatTimeout, Array(aliveWorkers)]).all
                for r in rows {
                    let pk = r.int("run_pk")!, task = r.string("task_id")!, t = r.int("try_number")!
                    let graph = try graphs.graph(s, flow: r.string("flow_id")!, version: r.int("flow_version")!)
                    let error = r.string("why") == "zombie"
                        ? "worker `\(r.string("worker") ?? "?")` stopped heart-beating (no heartbeat for \(Int(heartbeatTimeout))s): zombie task"
                        : "exceeded its execution timeout of \(r.double("timeout_seconds") ?? 0)s"
                    var newState = TaskState.failed
                    var next: Date?
                    if t < r.int("max_tries")! {
                        newState = .upForRetry
                        next = now.addingTimeInterval((graph.tasks[task]?.retry ?? .none).delay(afterTry: t, unit: random()))
                    }
                    try s.query("UPDATE task_instances SET state = $3, ended_at = $4, error = $5, next_attempt_at = $6 WHERE run_pk = $1 AND task_id = $2",
                                [pk, task, newState.rawValue, now, error, next])
                    try s.query("UPDATE task_tries SET state = 'failed', ended_at = $4, error = $5 WHERE run_pk = $1 AND task_id = $2 AND try_number = $3",
                                [pk, task, t, now, error])
                    history(s, runPk: pk, task: task, try: t, from: "running", to: newState.rawValue, at: now, source: "reaper",
                                detail: error, applied: true)
                    if let mid = r.string("message_id") { work.forget.append(mid); work.cancel.append(mid) }
                    if newState.isTerminal {
                        try s.query("UPDATE runs SET unfinished_tasks = unfinished_tasks - 1 WHERE id = $1", [pk])
                        work.enqueue += try evaluateDownstream(s, runPk: pk, graph: graph, finished: [task], now: now)
                        try finalizeIfDone(s, runPk: pk, graph: graph, now: now)
                    }
                }
                return work
            }
        }
    }

    /// Task instances queued for longer than `olderThan` seconds: candidates for a lost message.
    public func staleQueued(now: Date, olderThan: Double, limit: Int = 200) async throws -> [(messageId: String, queue: String)] {
        try await db.run { s in
            try s.query("""
                SELECT message_id, queue FROM task_instances WHERE state = 'queued' AND queued_at < $1 ORDER BY queued_at LIMIT $2
                """, [now.addingTimeInterval(-olderThan), limit]).all.map { ($0.string("message_id")!, $0.string("queue")!) }
        }
    }

    /// Rebuilds the message of a queued try whose message the broker lost (same id, same try).
    public func rebuildQueuedMessages(_ messageIds: [String], now: Date) async throws -> [CeleryMessage] {
        guard !messageIds.isEmpty else { return [] }
        return try await db.run { [self] s in
            try s.transaction {
                var out: [CeleryMessage] = []
                let rows = try s.query("""
                    SELECT t.run_pk, t.task_id, t.try_number, t.message_id, t.queue, t.priority, t.timeout_seconds, r.flow_id, r.flow_version
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    WHERE t.message_id = ANY($1::text[]) AND t.state = 'queued' FOR NO KEY UPDATE OF t SKIP LOCKED
                    """, [messageIds]).all
                var byRun: [Int: [PGRow]] = [:]
                for r in rows { byRun[r.int("run_pk")!, default: []].append(r) }
                for (pk, tis) in byRun.sorted(by: { $0.key < $1.key }) {
                    let graph = try graphs.graph(s, flow: tis[0].string("flow_id")!, version: tis[0].int("flow_version")!)
                    out += try buildMessages(s, runPk: pk, graph: graph, rows: tis)
                    for t in tis {
                        history(s, runPk: pk, task: t.string("task_id")!, try: t.int("try_number")!, from: "queued", to: "queued", at: now,
                                    source: "reaper", detail: "message \(t.string("message_id")!) was missing from the broker: enqueued again", applied: true)
                    }
                }
                return out
            }
        }
    }

    // MARK: - Tasks run by Celery workers

    /// Tries a Celery worker runs that have not ended: their outcome is read from Celery's result backend.
    public func celeryTriesInFlight(limit: Int = 1000) async throws -> [(messageId: String, runId: String, taskId: String, tryNumber: Int, queued: Bool)] {
        try await db.run { s in
            try s.query("""
                SELECT t.message_id, r.run_id, t.task_id, t.try_number, t.state FROM task_instances t JOIN runs r ON r.id = t.run_pk
                WHERE t.executor = 'celery' AND t.state IN ('queued', 'running') LIMIT $1
                """, [limit]).all.map { ($0.string("message_id")!, $0.string("run_id")!, $0.string("task_id")!, $0.int("try_number")!,
                                         $0.string("state") == "queued") }
        }
    }

    // MARK: - Scheduler liveness

    /// A synchronous commit: when it returns, every transaction this scheduler committed before
    /// it — including those committed with `synchronous_commit = off` — is durable.
    public func flushDurably(name: String, host: String, startedAt: Date, now: Date) async throws {
        try await schedulerHeartbeat(name: name, host: host, startedAt: startedAt, now: now)
    }

    public func schedulerHeartbeat(name: String, host: String, startedAt: Date, now: Date) async throws {
        _ = try await db.run { s in
            try s.query("""
                INSERT INTO schedulers (name, host, started_at, heartbeat_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (name) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at
                """, [name, host, startedAt, now])
        }
    }
}

/// Columns for one `unnest` statement: run, task, try, time and a text.
struct ColumnBatch {
    var pk: [Int] = [], task: [String] = [], tryNumber: [Int] = [], at: [Date] = [], text: [String] = []
    var isEmpty: Bool { pk.isEmpty }
    mutating func add(_ p: Int, _ t: String, _ n: Int, _ d: Date, _ x: String) {
        pk.append(p); task.append(t); tryNumber.append(n); at.append(d); text.append(x)
    }
}

/// Rows of `task_history`, inserted in one statement.
struct HistoryBatch {
    var pk: [Int] = [], task: [String] = [], tryNumber: [Int] = [], from: [String?] = [], to: [String] = []
    var at: [Date] = [], source: [String] = [], detail: [String?] = [], applied: [Bool] = []
    mutating func add(_ p: Int, _ t: String, _ n: Int, _ f: String?, _ to: String, _ a: Date, _ src: String, _ d: String?, _ ok: Bool) {
        pk.append(p); task.append(t); tryNumber.append(n); from.append(f); self.to.append(to); at.append(a)
        source.append(src); detail.append(d); applied.append(ok)
    }
    func insert(_ s: PGSession) {
        guard !pk.isEmpty else { return }
        s.enqueue("""
            INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail, applied)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], $9::bool[])
            """, [pk, task, tryNumber, from, to, at, source, detail, applied])
    }
}

/// Task instance and try updates for reported outcomes, applied in two statements.
struct OutcomeBatch {
    var pk: [Int] = [], task: [String] = [], tryNumber: [Int] = [], state: [String] = [], tryState: [String] = []
    var at: [Date] = [], result: [String?] = [], error: [String?] = [], next: [Date?] = [], worker: [String] = []
    var started: [Date?] = []
    mutating func add(_ p: Int, _ t: String, _ n: Int, _ st: TaskState, _ tst: TaskState, _ a: Date, _ r: String?, _ e: String?,
                      _ nx: Date?, _ w: String, _ s: Date?) {
        pk.append(p); task.append(t); tryNumber.append(n); state.append(st.rawValue); tryState.append(tst.rawValue)
        at.append(a); result.append(r); error.append(e); next.append(nx); worker.append(w); started.append(s)
    }
    func apply(_ s: PGSession) {
        guard !pk.isEmpty else { return }
        s.enqueue("""
            UPDATE task_instances t SET state = u.state, ended_at = u.at, result = u.result::jsonb, error = u.error,
                next_attempt_at = u.next, worker = u.worker, started_at = COALESCE(u.started, t.started_at)
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::timestamptz[], $8::text[],
                        $9::timestamptz[]) AS u(run_pk, task_id, state, at, result, error, next, worker, started)
            WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id
            """, [pk, task, state, at, result, error, next, worker, started])
        s.enqueue("""
            UPDATE task_tries t SET state = u.state, ended_at = u.at, result = u.result::jsonb, error = u.error, worker = u.worker,
                started_at = COALESCE(t.started_at, u.started, u.at)
            FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[],
                        $9::timestamptz[]) AS u(run_pk, task_id, n, state, at, result, error, worker, started)
            WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id AND t.try_number = u.n
            """, [pk, task, tryNumber, tryState, at, result, error, worker, started])
    }
}
