import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient

extension SchedulerStore {
    /// Applies a batch of worker events in one transaction: state changes, logs, heartbeats and
    /// worker records; then evaluates the downstream tasks of every task that ended.
    ///
    /// A report that does not match the task instance's current try (a late report from a reaped
    /// try, a duplicate delivery) is recorded in the history with `applied = false` and changes
    /// nothing else.
    public func applyEvents(_ events: [WorkerEvent], now: Date) async throws -> BrokerWork {
        guard !events.isEmpty else { return BrokerWork() }
        return try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                let runIds = Array(Set(events.compactMap(\.runId)))
                var runPks: [String: Int] = [:]
                if !runIds.isEmpty {
                    for r in try s.query("SELECT id, run_id FROM runs WHERE run_id = ANY($1::text[]) ORDER BY id FOR UPDATE", [runIds]).all {
                        runPks[r.string("run_id")!] = r.int("id")!
                    }
                }
                var logRows: (pk: [Int], task: [String], try: [Int], at: [Date], line: [String]) = ([], [], [], [], [])
                var heartbeatIds: [String] = []
                for ev in events {
                    switch ev.kind {
                    case .log:
                        guard let runId = ev.runId, let pk = runPks[runId], let task = ev.taskId, let t = ev.tryNumber else { continue }
                        for line in ev.lines ?? [] {
                            logRows.pk.append(pk); logRows.task.append(task); logRows.try.append(t)
                            logRows.at.append(Date(timeIntervalSince1970: ev.at)); logRows.line.append(line)
                        }
                    case .heartbeat:
                        heartbeatIds += ev.running ?? []
                        try upsertWorker(s, ev, now: now)
                    case .workerOnline, .workerOffline:
                        try upsertWorker(s, ev, now: now)
                    case .started:
                        guard let pk = ev.runId.flatMap({ runPks[$0] }) else { continue }
                        try applyStarted(s, runPk: pk, ev, now: now)
                    case .succeeded, .failed, .skipped:
                        guard let pk = ev.runId.flatMap({ runPks[$0] }) else { continue }
                        work.merge(try applyOutcome(s, runPk: pk, ev, now: now))
                    case .cancelled:
                        guard let pk = ev.runId.flatMap({ runPks[$0] }), let task = ev.taskId else { continue }
                        try s.query("""
                            INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail, applied)
                            VALUES ($1, $2, $3, NULL, 'cancelled', $4, $5, 'worker dropped the cancelled try', false)
                            """, [pk, task, ev.tryNumber ?? 0, Date(timeIntervalSince1970: ev.at), "worker:\(ev.worker)"])
                    }
                }
                if !logRows.pk.isEmpty {
                    try s.query("""
                        INSERT INTO task_logs (run_pk, task_id, try_number, at, line)
                        SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::text[])
                        """, [logRows.pk, logRows.task, logRows.try, logRows.at, logRows.line])
                }
                if !heartbeatIds.isEmpty {
                    try s.query("UPDATE task_instances SET heartbeat_at = $2 WHERE message_id = ANY($1::text[]) AND state = 'running'",
                                [heartbeatIds, now])
                }
                return work
            }
        }
    }

    private func upsertWorker(_ s: PGSession, _ ev: WorkerEvent, now: Date) throws {
        let info = ev.info
        let at = Date(timeIntervalSince1970: ev.at)
        let state = ev.kind == .workerOffline ? "offline" : "online"
        try s.query("""
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
                         source: String, detail: String?, applied: Bool) throws {
        try s.query("""
            INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail, applied)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """, [runPk, task, tryNumber, from, to, at, source, detail, applied])
    }

    private func applyStarted(_ s: PGSession, runPk: Int, _ ev: WorkerEvent, now: Date) throws {
        guard let task = ev.taskId, let t = ev.tryNumber, let mid = ev.messageId else { return }
        let at = Date(timeIntervalSince1970: ev.at)
        let n = try s.query("""
            UPDATE task_instances SET state = 'running', started_at = COALESCE(started_at, $5), heartbeat_at = $6, worker = $4
            WHERE run_pk = $1 AND task_id = $2 AND message_id = $3 AND state IN ('queued', 'running')
            """, [runPk, task, mid, ev.worker, at, now]).affectedRows
        if n == 1 {
            try s.query("UPDATE task_tries SET state = 'running', started_at = $4, worker = $5 WHERE run_pk = $1 AND task_id = $2 AND try_number = $3",
                        [runPk, task, t, at, ev.worker])
        }
        try history(s, runPk: runPk, task: task, try: t, from: n == 1 ? "queued" : nil, to: "running", at: at,
                    source: "worker:\(ev.worker)", detail: n == 1 ? nil : "stale report: not the current try or not queued", applied: n == 1)
    }

    /// A try ended on a worker: success, skipped, or failure (retried while tries remain).
    private func applyOutcome(_ s: PGSession, runPk: Int, _ ev: WorkerEvent, now: Date) throws -> BrokerWork {
        guard let task = ev.taskId, let t = ev.tryNumber, let mid = ev.messageId else { return BrokerWork() }
        let at = Date(timeIntervalSince1970: ev.at)
        let source = "worker:\(ev.worker)"
        guard let ti = try s.query("""
            SELECT t.state, t.try_number, t.max_tries, t.message_id, r.flow_id, r.flow_version, r.state AS run_state
            FROM task_instances t JOIN runs r ON r.id = t.run_pk WHERE t.run_pk = $1 AND t.task_id = $2
            """, [runPk, task]).first else { return BrokerWork() }
        let state = ti.string("state")!
        let target: TaskState = ev.kind == .succeeded ? .success : ev.kind == .skipped ? .skipped : .failed
        guard ti.string("message_id") == mid, state == "queued" || state == "running", ti.string("run_state") == "running" else {
            try history(s, runPk: runPk, task: task, try: t, from: nil, to: target.rawValue, at: at, source: source,
                        detail: "stale report ignored (task is \(state), try \(ti.int("try_number")!))", applied: false)
            return BrokerWork()
        }
        let graph = try graphs.graph(s, flow: ti.string("flow_id")!, version: ti.int("flow_version")!)
        var newState = target
        var nextAttempt: Date?
        if target == .failed, t < ti.int("max_tries")! {
            newState = .upForRetry
            let policy = graph.tasks[task]?.retry ?? .none
            nextAttempt = now.addingTimeInterval(policy.delay(afterTry: t, unit: random()))
        }
        let resultJSON = ev.result.map(\.compactJSON)
        try s.query("""
            UPDATE task_instances SET state = $3, ended_at = $4, result = $5::jsonb, error = $6, next_attempt_at = $7, worker = $8
            WHERE run_pk = $1 AND task_id = $2
            """, [runPk, task, newState.rawValue, at, resultJSON, ev.error, nextAttempt, ev.worker])
        try s.query("""
            UPDATE task_tries SET state = $4, ended_at = $5, result = $6::jsonb, error = $7, worker = $8,
                started_at = COALESCE(started_at, $5) WHERE run_pk = $1 AND task_id = $2 AND try_number = $3
            """, [runPk, task, t, target.rawValue, at, resultJSON, ev.error, ev.worker])
        try history(s, runPk: runPk, task: task, try: t, from: state, to: newState.rawValue, at: at, source: source,
                    detail: ev.error, applied: true)
        var work = BrokerWork()
        if newState.isTerminal {
            try s.query("UPDATE runs SET unfinished_tasks = unfinished_tasks - 1 WHERE id = $1", [runPk])
            work.enqueue = try evaluateDownstream(s, runPk: runPk, graph: graph, finished: [task], now: now)
            try finalizeIfDone(s, runPk: runPk, graph: graph, now: now)
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
                    ORDER BY t.next_attempt_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED
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
                    ORDER BY next_tick LIMIT 100 FOR UPDATE SKIP LOCKED
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
                    WHERE t.state = 'running' AND ((t.heartbeat_at < $1 AND NOT (COALESCE(t.worker, '') = ANY($4::text[])))
                          OR (t.timeout_seconds IS NOT NULL AND t.started_at + make_interval(secs => t.timeout_seconds + $3) < $2))
                    LIMIT 500 FOR UPDATE OF r SKIP LOCKED
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
                    try history(s, runPk: pk, task: task, try: t, from: "running", to: newState.rawValue, at: now, source: "reaper",
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
                    WHERE t.message_id = ANY($1::text[]) AND t.state = 'queued' FOR UPDATE OF t SKIP LOCKED
                    """, [messageIds]).all
                var byRun: [Int: [PGRow]] = [:]
                for r in rows { byRun[r.int("run_pk")!, default: []].append(r) }
                for (pk, tis) in byRun.sorted(by: { $0.key < $1.key }) {
                    let graph = try graphs.graph(s, flow: tis[0].string("flow_id")!, version: tis[0].int("flow_version")!)
                    out += try buildMessages(s, runPk: pk, graph: graph, rows: tis)
                    for t in tis {
                        try history(s, runPk: pk, task: t.string("task_id")!, try: t.int("try_number")!, from: "queued", to: "queued", at: now,
                                    source: "reaper", detail: "message \(t.string("message_id")!) was missing from the broker: enqueued again", applied: true)
                    }
                }
                return out
            }
        }
    }

    // MARK: - Scheduler liveness

    public func schedulerHeartbeat(name: String, host: String, startedAt: Date, now: Date) async throws {
        try await db.run { s in
            try s.query("""
                INSERT INTO schedulers (name, host, started_at, heartbeat_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (name) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at
                """, [name, host, startedAt, now])
        }
    }
}
