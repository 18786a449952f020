public import CeleryProtocol
import FlowKit
public import Foundation
import PostgresClient
import Synchronization

/// Tries and their history: worker events applied in batches, the reaper, tries run by Celery workers.
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
    /// WAL is flushed in order, so that commit makes this one durable too. Not when the primary
    /// has synchronous standbys (`commitsWaitForStandby`): there the commit waits as configured.
    public func applyEvents(_ events: [WorkerEvent], now: Date, durable: Bool = true) async throws -> BrokerWork {
        guard !events.isEmpty else { return BrokerWork() }
        // The next tasks' messages are built as the commit's round trip brings their rows.
        let sink = MessageSink()
        return try await db.run { [self] s in
            var work = try s.transaction { try s.plans(generic: events.count <= SchedulerStore.smallBatch) {
                if !durable && !commitsWaitForStandby.load(ordering: .relaxed) { s.enqueue("SET LOCAL synchronous_commit = off") }
                let runIds = Array(Set(events.compactMap(\.runId)))
                var runPks: [String: Int] = [:]
                var current: [String: PGRow] = [:]
                var knownStates: [Int: KnownStates] = [:]
                if !runIds.isEmpty {
                    // The runs' locks and, in the same round trip, the task instances that outcomes report on.
                    let reported = events.filter { [.succeeded, .failed, .skipped, .rescheduled].contains($0.kind) && $0.runId != nil && $0.taskId != nil }
                    var statements: [(String, [any PGEncodable])] = [
                        ("SELECT id, run_id FROM runs WHERE run_id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE", [runIds]),
                    ]
                    if !reported.isEmpty {
                        statements.append(("""
                            SELECT t.run_pk, t.task_id, t.state, t.try_number, t.max_tries, t.message_id, t.poke_deadline, r.flow_id, r.flow_version,
                                   r.state AS run_state, r.params::text AS run_params
                            FROM unnest($1::text[], $2::text[]) AS u(run_id, task_id)
                            JOIN runs r ON r.run_id = u.run_id
                            CROSS JOIN LATERAL (SELECT * FROM task_instances ti WHERE ti.run_pk = r.id AND ti.task_id = u.task_id LIMIT 1) t
                            """, [reported.map { $0.runId! }, reported.map { $0.taskId! }]))
                    }
                    // The states the downstream evaluation will need, read now rather than in a round
                    // trip of their own — for runs whose flow graph is known before their rows are.
                    let plan = planStateReads(reported)
                    if !plan.runIds.isEmpty {
                        statements.append(("""
                            SELECT r.run_id, t.task_id, t.state FROM unnest($1::text[], $2::text[]) AS u(run_id, task_id)
                            JOIN runs r ON r.run_id = u.run_id JOIN task_instances t ON t.run_pk = r.id AND t.task_id = u.task_id
                            """, [plan.runIds, plan.taskIds]))
                    }
                    let results = try s.queries(statements)
                    for r in results[0].all { runPks[try r.string("run_id")] = try r.int("id") }
                    for r in results.dropFirst().first?.all ?? [] { current["\(try r.int("run_pk"))/\(try r.string("task_id"))"] = r }
                    let runIdOf = Dictionary(runPks.map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
                    var versionOf: [Int: (flow: String, version: Int)] = [:]
                    for r in current.values {
                        let pk = try r.int("run_pk"), flow = try r.string("flow_id"), version = try r.int("flow_version")
                        versionOf[pk] = (flow, version)
                        if let runId = runIdOf[pk] { runFlows.set(runId, flow: flow, version: version) }
                    }
                    if !plan.runIds.isEmpty {
                        for (runId, planned) in plan.graphs {
                            // Used only if the run's row agrees with the graph the reads were planned on.
                            guard let pk = runPks[runId], let v = versionOf[pk], v == planned else { continue }
                            knownStates[pk] = KnownStates(covered: plan.covered[runId] ?? [])
                        }
                        for r in results[2].all {
                            guard let pk = runPks[try r.string("run_id")], knownStates[pk] != nil else { continue }
                            knownStates[pk]!.states[try r.string("task_id")] = TaskState(rawValue: try r.string("state"))
                        }
                    }
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
                    case .succeeded, .failed, .skipped, .rescheduled:
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
                for pk in Set(started.map(\.0) + outcomes.map(\.0)) { announceChange(s, runPk: pk) }
                let nowRunning = try applyStarted(s, started, now: now)
                var work = try applyOutcomes(s, outcomes, current: current, startedInBatch: nowRunning, now: now, sink: sink,
                                             knownStates: knownStates)
                work.orphans = orphans.map { ($0, "a \($0.kind.rawValue) event of unknown run `\($0.runId!)`: the database has no such run") }
                return work
            } }
            work.enqueue += sink.messages
            return work
        }
    }

    /// `started` reports: queued (or, on a redelivery, running) tries become running.
    /// Returns the task instances (`run_pk/task_id`) it moved to running.
    func applyStarted(_ s: PGSession, _ started: [(Int, WorkerEvent)], now: Date) throws -> Set<String> {
        guard !started.isEmpty else { return [] }
        let applied = try s.query("""
            UPDATE task_instances t SET state = 'running', started_at = COALESCE(t.started_at, u.at), heartbeat_at = $6, worker = u.worker
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS u(run_pk, task_id, mid, worker, at)
            WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id AND t.message_id = u.mid AND t.state IN ('queued', 'running')
            RETURNING t.run_pk, t.task_id, t.message_id
            """, [started.map(\.0), started.map { $0.1.taskId! }, started.map { $0.1.messageId! }, started.map(\.1.worker),
                  started.map { Date(timeIntervalSince1970: $0.1.at) }, now]).all
        let ok = Set(try applied.map { "\(try $0.int("run_pk"))/\(try $0.string("message_id"))" })
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
        return Set(try applied.map { "\(try $0.int("run_pk"))/\(try $0.string("task_id"))" })
    }

    /// Which task states to read with the runs' locks: for each reported task whose run's flow
    /// graph is cached, its downstream candidates' and their upstream tasks' (`statesNeeded`).
    /// Mapped instances are left to the usual reads.
    func planStateReads(_ reported: [WorkerEvent]) -> (runIds: [String], taskIds: [String], graphs: [String: (flow: String, version: Int)],
                                                       covered: [String: Set<String>]) {
        var graphsUsed: [String: (flow: String, version: Int)] = [:], covered: [String: Set<String>] = [:]
        // Each run's graph looked up once per batch (W1's batches hold thousands of one run's events).
        var known: [String: (fv: (flow: String, version: Int), graph: FlowGraph)?] = [:]
        func lookup(_ runId: String) -> (fv: (flow: String, version: Int), graph: FlowGraph)? {
            if let k = known[runId] { return k }
            let found = runFlows.get(runId).flatMap { fv in graphs.cached(flow: fv.flow, version: fv.version).map { (fv, $0) } }
            known[runId] = .some(found)
            return found
        }
        for ev in reported {
            guard let runId = ev.runId, let task = ev.taskId, !MappedInstance.isInstance(task), let (fv, g) = lookup(runId) else { continue }
            let candidates = RunStateMachine.candidates(after: [task], in: g)
            guard !candidates.isEmpty else { continue }
            graphsUsed[runId] = fv
            covered[runId, default: []].formUnion(RunStateMachine.statesNeeded(for: candidates, in: g))
        }
        var runIds: [String] = [], taskIds: [String] = []
        for (runId, tasks) in covered.sorted(by: { $0.key < $1.key }) {
            for t in tasks.sorted() { runIds.append(runId); taskIds.append(t) }
        }
        return (runIds, taskIds, graphsUsed, covered)
    }

    /// Tries that ended on a worker: success, skipped, or failure (retried while tries remain);
    /// then, per run, the downstream tasks of what ended are evaluated once.
    func applyOutcomes(_ s: PGSession, _ outcomes: [(Int, WorkerEvent)], current: [String: PGRow],
                               startedInBatch: Set<String>, now: Date, sink: MessageSink? = nil,
                               knownStates: [Int: KnownStates] = [:]) throws -> BrokerWork {
        guard !outcomes.isEmpty else { return BrokerWork() }
        var updates = OutcomeBatch(), h = HistoryBatch()
        var ended: [Int: [String]] = [:]
        var branchChoices: [Int: [String: [String]]] = [:]
        var decided = Set<String>()
        var freesSlot = false
        var deadlines = ColumnBatch()
        var notes = NotificationBatch()
        var assetEvents: [(uri: String, source: String, runId: String?, taskId: String?, extra: JSONValue)] = []
        for (pk, ev) in outcomes {
            let task = ev.taskId!, t = ev.tryNumber!, key = "\(pk)/\(task)"
            let at = Date(timeIntervalSince1970: ev.at)
            let source = "worker:\(ev.worker)"
            var target: TaskState = ev.kind == .succeeded ? .success : ev.kind == .skipped ? .skipped : .failed
            guard let ti = current[key] else { continue }
            // `current` was read before this batch's start reports were applied.
            let read = try ti.string("state")
            let state = read == "queued" && startedInBatch.contains(key) ? "running" : read
            guard try ti.stringOrNull("message_id") == ev.messageId, state == "queued" || state == "running",
                  try ti.stringOrNull("run_state") == "running", !decided.contains(key) else {
                let why = decided.contains(key) ? "duplicate report ignored" : "stale report ignored (task is \(state), try \(try ti.int("try_number")))"
                h.add(pk, task, t, nil, target.rawValue, at, source, why, false)
                continue
            }
            decided.insert(key)
            let graph = try graphs.graph(s, flow: ti.string("flow_id"), version: ti.int("flow_version"))
            if graph.isLimited(task) { freesSlot = true }
            var newState = target
            var nextAttempt: Date?
            var error = ev.error
            if ev.kind == .rescheduled {
                // A sensor's "not yet": poke again later in the same try, or give up past its deadline.
                let poke = sensorPoke(graph.tasks[task]?.sensor, deadline: try ti.dateOrNull("poke_deadline"), runParams: try ti.stringOrNull("run_params"),
                                      reason: ev.error ?? "not yet", now: now)
                newState = poke.state
                target = poke.state
                nextAttempt = poke.next
                error = poke.error
                deadlines.add(pk, task, t, poke.deadline, "")
            } else if target == .failed, try t < ti.int("max_tries") {
                newState = .upForRetry
                nextAttempt = now.addingTimeInterval((graph.tasks[task]?.retry ?? .none).delay(afterTry: t, unit: random()))
            }
            let startedAt = ev.startedAt.map(Date.init(timeIntervalSince1970:))
            updates.add(pk, task, t, newState, target, at, ev.result.map(\.jsonbText), error, nextAttempt, ev.worker, startedAt)
            var from = state
            if state == "queued", let startedAt {
                // A short try reported its start inside its outcome.
                h.add(pk, task, t, "queued", "running", startedAt, source, nil, true)
                from = "running"
            }
            h.add(pk, task, t, from, newState.rawValue, at, source, error, true)
            if newState.isTerminal { ended[pk, default: []].append(task) }
            if let refs = graph.tasks[task]?.notify, let event = Self.notificationEvent(newState), let runId = ev.runId {
                notes.add(refs.notifiers(for: event), event: event, flow: try ti.string("flow_id"), runPk: pk, runId: runId, task: task,
                          try: t, state: newState.rawValue, error: error)
            }
            if newState == .success, let outlets = graph.tasks[task]?.outlets, let runId = ev.runId {
                assetEvents += outlets.map { (uri: $0, source: "task", runId: runId, taskId: task, extra: ev.result ?? .null) }
            }
            if newState == .success, graph.tasks[task]?.kind == TaskBody.branchKind {
                branchChoices[pk, default: [:]][task] = ev.result?.arrayValue?.compactMap(\.stringValue) ?? []
            }
            if newState == .success, graph.tasks[task]?.approval?.branch == true {
                // A branch approval follows the option chosen.
                branchChoices[pk, default: [:]][task] = ev.result?["decision"]?.stringValue.map { [$0] } ?? []
            }
        }
        updates.apply(s)
        h.insert(s)
        notes.insert(s, now: now)
        // Outlets' asset events, and the runs they complete, commit with the successes.
        try recordAssetEvents(s, assetEvents, now: now)
        if !deadlines.isEmpty {
            s.enqueue("""
                UPDATE task_instances t SET poke_deadline = u.at
                FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(run_pk, task_id, at)
                WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id
                """, [deadlines.pk, deadlines.task, deadlines.at])
        }
        if freesSlot { s.notifyAfterCommit(Self.slotsChannel, "") }  // a limited task let go of its slot
        var work = BrokerWork()
        for (pk, tasks) in ended.sorted(by: { $0.key < $1.key }) {
            s.enqueue("UPDATE runs SET unfinished_tasks = unfinished_tasks - $2 WHERE id = $1", [pk, tasks.count])
            let r = current["\(pk)/\(tasks[0])"]!
            let graph = try graphs.graph(s, flow: r.string("flow_id"), version: r.int("flow_version"))
            // States read with the lock, brought up to date with this batch's own changes.
            var known = knownStates[pk]
            if known != nil {
                for key in startedInBatch where key.hasPrefix("\(pk)/") { known!.states[String(key.dropFirst("\(pk)/".count))] = .running }
                for i in updates.pk.indices where updates.pk[i] == pk { known!.states[updates.task[i]] = TaskState(rawValue: updates.state[i]) }
            }
            work.enqueue += try evaluateDownstream(s, runPk: pk, graph: graph, finished: tasks, branchChoices: branchChoices[pk] ?? [:], now: now,
                                                   sink: sink, known: known)
            try finalizeIfDone(s, runPk: pk, graph: graph, now: now)
        }
        return work
    }

    /// What a sensor's "not yet" leads to: the next poke (`up_for_reschedule` after its poke
    /// interval), or — once its deadline (its first "not yet" plus its timeout) has passed —
    /// `failed`, or `skipped` with `softFail`.
    func sensorPoke(_ spec: SensorSpec?, deadline: Date?, runParams: String?, reason: String, now: Date)
        -> (state: TaskState, next: Date?, deadline: Date, error: String?) {
        let spec = spec ?? SensorSpec(pokeInterval: .seconds(30), timeout: .seconds(3600))
        var timeout = spec.timeoutSeconds
        if let p = spec.timeoutParam, let v = (try? JSONValue.parse(runParams ?? "{}"))?[p]?.doubleValue, v > 0 { timeout = v }
        let until = deadline ?? now.addingTimeInterval(timeout)
        let next = now.addingTimeInterval(spec.pokeIntervalSeconds)
        if now >= until {
            let why = "sensor timed out after \(Self.seconds(timeout)): \(reason)"
            return (spec.softFail ? .skipped : .failed, nil, until, why)
        }
        return (.upForReschedule, min(next, until), until, reason)
    }

    /// The notification event of a task instance's new state, if it has one.
    static func notificationEvent(_ state: TaskState) -> NotificationEvent? {
        switch state {
        case .failed: return .onFailure
        case .upForRetry: return .onRetry
        case .success: return .onSuccess
        default: return nil
        }
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s))s" : "\(s)s" }

    /// Fails tries whose worker stopped heart-beating and tries past their execution timeout,
    /// retrying them per their policy. Returns the broker work (retries are queued by the timer;
    /// the reaped messages are forgotten so no worker runs the stale try).
    ///
    /// `aliveWorkers` are known to be alive right now (from Redis): their tries are not zombies
    /// even when the database has not seen their heartbeats yet (after a database outage, the
    /// heartbeats are still queued in the events stream). `waiting` are messages of stale tries
    /// that wait in their queue again (the unacked restorer gave a lost worker's claim back): the
    /// take-over has begun, so such a zombie goes back to `queued` — the same try, no retry used —
    /// and runs on the next free worker.
    public func reapZombies(now: Date, heartbeatTimeout: Double, aliveWorkers: Set<String> = [],
                            waiting: Set<String> = []) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                let cutoff = now.addingTimeInterval(-heartbeatTimeout)
                let rows = try s.query("""
                    SELECT t.run_pk, t.task_id, t.try_number, t.max_tries, t.message_id, t.worker, t.heartbeat_at, t.started_at,
                           t.timeout_seconds, r.flow_id, r.flow_version, r.run_id,
                           CASE WHEN t.heartbeat_at < $1 THEN 'zombie' ELSE 'timeout' END AS why, x.past_timeout
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    CROSS JOIN LATERAL (SELECT t.timeout_seconds IS NOT NULL
                                               AND t.started_at + make_interval(secs => t.timeout_seconds + $3) < $2 AS past_timeout) x
                    WHERE t.state = 'running' AND t.message_id IS NOT NULL
                      AND ((t.heartbeat_at < $1 AND t.executor = 'flowkit' AND NOT (COALESCE(t.worker, '') = ANY($4::text[]))) OR x.past_timeout)
                    LIMIT 500 FOR NO KEY UPDATE OF r SKIP LOCKED
                    """, [cutoff, now, heartbeatTimeout, Array(aliveWorkers)]).all
                // Set-based, like applied outcomes: one statement per table for every reaped try,
                // then one evaluation per run touched.
                var updates = OutcomeBatch(), h = HistoryBatch(), notes = NotificationBatch(), requeued = ColumnBatch()
                var ended: [Int: [String]] = [:], runGraphs: [Int: FlowGraph] = [:]
                for r in rows {
                    let pk = try r.int("run_pk"), task = try r.string("task_id"), t = try r.int("try_number")
                    let zombie = try r.stringOrNull("why") == "zombie"
                    let lost = "worker `\(try r.stringOrNull("worker") ?? "?")` stopped heart-beating (no heartbeat for \(Int(heartbeatTimeout))s)"
                    if zombie, let mid = try r.stringOrNull("message_id"), waiting.contains(mid), try !r.bool("past_timeout") {
                        requeued.add(pk, task, t, now, mid)
                        h.add(pk, task, t, "running", TaskState.queued.rawValue, now, "reaper",
                              "\(lost) and its message is back in the queue: the same try runs on the next free worker", true)
                        continue
                    }
                    let graph = try graphs.graph(s, flow: r.string("flow_id"), version: r.int("flow_version"))
                    let error = zombie ? "\(lost): zombie task" : "exceeded its execution timeout of \(try r.doubleOrNull("timeout_seconds") ?? 0)s"
                    var newState = TaskState.failed
                    var next: Date?
                    if try t < r.int("max_tries") {
                        newState = .upForRetry
                        next = now.addingTimeInterval((graph.tasks[task]?.retry ?? .none).delay(afterTry: t, unit: random()))
                    }
                    updates.add(pk, task, t, newState, .failed, now, nil, error, next, try r.stringOrNull("worker") ?? "", nil)
                    h.add(pk, task, t, "running", newState.rawValue, now, "reaper", error, true)
                    if let refs = graph.tasks[task]?.notify, let event = Self.notificationEvent(newState) {
                        notes.add(refs.notifiers(for: event), event: event, flow: try r.string("flow_id"), runPk: pk, runId: try r.string("run_id"),
                                  task: task, try: t, state: newState.rawValue, error: error)
                    }
                    if let mid = try r.stringOrNull("message_id") { work.forget.append(mid); work.cancel.append(mid) }
                    if newState.isTerminal { ended[pk, default: []].append(task); runGraphs[pk] = graph }
                }
                updates.apply(s)
                if !requeued.isEmpty {
                    s.enqueue("""
                        UPDATE task_instances t SET state = 'queued', worker = NULL, heartbeat_at = NULL
                        FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(run_pk, task_id, mid)
                        WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id AND t.message_id = u.mid AND t.state = 'running'
                        """, [requeued.pk, requeued.task, requeued.text])
                    // The try is queued again too, so that the next worker's start is recorded on it.
                    s.enqueue("""
                        UPDATE task_tries t SET state = 'queued', worker = NULL
                        FROM unnest($1::bigint[], $2::text[], $3::int[]) AS u(run_pk, task_id, n)
                        WHERE t.run_pk = u.run_pk AND t.task_id = u.task_id AND t.try_number = u.n AND t.state = 'running'
                        """, [requeued.pk, requeued.task, requeued.tryNumber])
                }
                h.insert(s)
                notes.insert(s, now: now)
                if !rows.isEmpty { s.notifyAfterCommit(Self.slotsChannel, "") }
                for (pk, tasks) in ended.sorted(by: { $0.key < $1.key }) {
                    s.enqueue("UPDATE runs SET unfinished_tasks = unfinished_tasks - $2 WHERE id = $1", [pk, tasks.count])
                    work.enqueue += try evaluateDownstream(s, runPk: pk, graph: runGraphs[pk]!, finished: tasks, now: now)
                    try finalizeIfDone(s, runPk: pk, graph: runGraphs[pk]!, now: now)
                }
                return work
            }
        }
    }

    /// Tries a Celery worker runs that have not ended: their outcome is read from Celery's result backend.
    public func celeryTriesInFlight(limit: Int = 1000) async throws -> [(messageId: String, runId: String, taskId: String, tryNumber: Int, queued: Bool)] {
        try await db.run { s in
            try s.query("""
                SELECT t.message_id, r.run_id, t.task_id, t.try_number, t.state FROM task_instances t JOIN runs r ON r.id = t.run_pk
                WHERE t.executor = 'celery' AND t.state IN ('queued', 'running') AND t.message_id IS NOT NULL LIMIT $1
                """, [limit]).all.map { (try $0.string("message_id"), try $0.string("run_id"), try $0.string("task_id"), try $0.int("try_number"),
                                         try $0.stringOrNull("state") == "queued") }
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

/// Task states of one run read early (with the run's lock, `planStateReads`): `covered` is what
/// was asked for — a task asked for without a row counts as pending, as in the usual read.
struct KnownStates {
    var covered: Set<String>
    var states: [String: TaskState] = [:]
}
