public import CeleryProtocol
public import FlowKit
public import Foundation
import PostgresClient

/// Task instances: queueing tries and building their messages, downstream evaluation, clear,
/// retries, messages the broker lost; reads.
extension SchedulerStore {
    /// Moves tasks from pending or up_for_retry to queued with a new try and builds their messages.
    /// Tasks under a concurrency limit are parked instead, for the pool admitter (`Pools.swift`).
    func queueTasks(_ s: PGSession, runPk: Int, graph: FlowGraph, taskIds: [String], now: Date, sink: MessageSink? = nil) throws -> [CeleryMessage] {
        guard !taskIds.isEmpty else { return [] }
        var free = taskIds
        let limited = taskIds.filter { graph.isLimited($0) }
        if !limited.isEmpty {
            parkLimited(s, runPk: runPk, taskIds: limited, now: now)
            free = taskIds.filter { !graph.isLimited($0) }
            guard !free.isEmpty else { return [] }
        }
        return try s.plans(generic: free.count <= Self.smallBatch) {
            try queueTasksNow(s, runPk: runPk, graph: graph, taskIds: free, now: now, sink: sink)
        }
    }

    /// Batches up to this size run with generic plans (`PGSession.plans`).
    static let smallBatch = 4

    /// With a `sink`, the statements are queued, not sent: they travel with the next statement
    /// or the commit, and the messages reach the sink when their results arrive — the event
    /// consumer's hop saves a round trip. Without one, the messages are returned at once.
    func queueTasksNow(_ s: PGSession, runPk: Int, graph: FlowGraph, taskIds: [String], now: Date, sink: MessageSink? = nil) throws -> [CeleryMessage] {
        let messageIds = taskIds.map { _ in UUID().uuidString.lowercased() }
        // The new tries, their rows and history in one statement; the run and the upstream
        // results for the messages in the same round trip.
        var statements: [(String, [any PGEncodable])] = [("""
            WITH up AS (
                UPDATE task_instances t SET state = 'queued', try_number = t.try_number + 1, message_id = u.mid, queued_at = $4,
                    next_attempt_at = NULL, started_at = NULL, ended_at = NULL, heartbeat_at = NULL, worker = NULL, error = NULL, result = NULL,
                    wait_reason = NULL, poke_deadline = NULL
                FROM (SELECT u.task_id, u.mid, o.state AS old_state FROM unnest($2::text[], $3::text[]) AS u(task_id, mid)
                      JOIN task_instances o ON o.run_pk = $1 AND o.task_id = u.task_id) u
                WHERE t.run_pk = $1 AND t.task_id = u.task_id
                  AND (t.state IN ('pending', 'up_for_retry') OR (t.state = 'queued' AND t.message_id IS NULL))
                RETURNING t.task_id, t.try_number, t.message_id, t.queue, t.priority, t.timeout_seconds, t.map_index,
                          t.map_item::text AS map_item, u.old_state),
            tries AS (
                INSERT INTO task_tries (run_pk, task_id, try_number, message_id, state, queued_at)
                SELECT $1, task_id, try_number, message_id, 'queued', $4 FROM up),
            history AS (
                INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source)
                SELECT $1, task_id, try_number, old_state, 'queued', $4, 'scheduler' FROM up)
            SELECT * FROM up
            """, [runPk, taskIds, messageIds, now])]
        let context = messageContextQueries(runPk: runPk, graph: graph, taskIds: taskIds)
        statements += context.queries
        func build(_ found: [PGResult]) throws -> [CeleryMessage] {
            guard !found[0].isEmpty else { return [] }
            announceChange(s, runPk: runPk)
            // RETURNING has no order: keep the caller's (priority) order for the broker.
            let position = Dictionary(taskIds.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            let updated = try found[0].all.sorted { position[try $0.string("task_id"), default: 0] < position[try $1.string("task_id"), default: 0] }
            // Trigger-flow and approval tasks have no message: the flow-trigger service runs them.
            if try updated.contains(where: { graph.tasks[try $0.string("task_id")]?.runsOnScheduler == true }) { s.notifyAfterCommit(Self.flowTriggersChannel, "") }
            return try messages(runPk: runPk, graph: graph, rows: updated, context: context, found: found[1...])
        }
        guard let sink else { return try build(try s.queries(statements)) }
        let found = ResultCollector(count: statements.count)
        for (i, (sql, params)) in statements.enumerated() {
            s.enqueue(sql, params) { r in
                found.results[i] = r
                if i == statements.count - 1 { sink.messages += try build(found.results.map { $0! }) }
            }
        }
        return []
    }

    /// The Celery messages of queued tries (`rows` carry task_id, try_number, message_id, queue,
    /// priority, timeout_seconds, map_index, map_item), with the run's params and the upstream tasks' results.
    func buildMessages(_ s: PGSession, runPk: Int, graph: FlowGraph, rows: [PGRow]) throws -> [CeleryMessage] {
        guard !rows.isEmpty else { return [] }
        let context = messageContextQueries(runPk: runPk, graph: graph, taskIds: try rows.map { try $0.string("task_id") })
        return try messages(runPk: runPk, graph: graph, rows: rows, context: context, found: try s.queries(context.queries)[...])
    }

    /// The queries that read what messages need, and where the optional ones are among them.
    struct MessageContext {
        var queries: [(String, [any PGEncodable])]
        /// Index of the watched flows' runs (external run sensors), when asked.
        var externalAt: Int?
        /// Index of the sealed connections and variables, when a task declares some.
        var storeAt: Int?
    }

    /// What messages need beside their tries: the run, the results of the tasks' upstream
    /// tasks, for external run sensors the watched flows' runs for the same logical date, and
    /// for tasks that need connections or variables their sealed values (read only then: other
    /// tasks' dispatch reads nothing more).
    func messageContextQueries(runPk: Int, graph: FlowGraph, taskIds: [String]) -> MessageContext {
        let upstreamIds = Array(Set(taskIds.flatMap { graph.tasks[$0]?.upstream ?? [] }))
        var out: [(String, [any PGEncodable])] = [
            ("""
             SELECT run_id, flow_id, params::text AS params, logical_date, data_interval_start, data_interval_end,
                    triggering_events::text AS triggering_events FROM runs WHERE id = $1
             """, [runPk]),
            ("SELECT task_id, result::text AS result FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[]) AND result IS NOT NULL",
             [runPk, upstreamIds]),
        ]
        let watched = Array(Set(taskIds.compactMap { graph.tasks[$0]?.sensor?.externalFlow }))
        if !watched.isEmpty {
            out.append(("""
                SELECT DISTINCT ON (w.flow_id) w.flow_id, w.run_id, w.state FROM runs w
                WHERE w.flow_id = ANY($2::text[]) AND w.logical_date = (SELECT logical_date FROM runs WHERE id = $1)
                ORDER BY w.flow_id, w.id DESC
                """, [runPk, watched]))
        }
        var context = MessageContext(queries: out, externalAt: watched.isEmpty ? nil : 2)
        let needing = taskIds.compactMap { graph.tasks[$0] }.filter(\.needsStore)
        if !needing.isEmpty {
            let connections = Array(Set(needing.flatMap(\.neededConnections))), variables = Array(Set(needing.flatMap(\.neededVariables)))
            context.storeAt = context.queries.count
            context.queries.append(("""
                SELECT 'connection' AS kind, name, secret FROM connections WHERE name = ANY($1::text[])
                UNION ALL SELECT 'variable', key, secret FROM variables WHERE key = ANY($2::text[])
                """, [connections, variables]))
        }
        return context
    }

    /// The rows read, handed to the pure `TaskMessageBuilder`.
    func messages(runPk: Int, graph: FlowGraph, rows: [PGRow], context: MessageContext, found: ArraySlice<PGResult>) throws -> [CeleryMessage] {
        let base = found.startIndex
        guard let run = found[base].first, !rows.isEmpty else { return [] }
        let resultRows = found[base + 1]
        let external = context.externalAt.map { found[base + $0] }
        var sealed = TaskMessageBuilder.Sealed()
        for r in context.storeAt.map({ found[base + $0].all }) ?? [] {
            if try r.stringOrNull("kind") == "connection" { sealed.connections[try r.string("name")] = try r.string("secret") }
            else { sealed.variables[try r.string("name")] = try r.string("secret") }
        }
        var externalRuns: [String: JSONValue] = [:]
        for r in external?.all ?? [] {
            externalRuns[try r.string("flow_id")] = ["flowId": .string(try r.string("flow_id")), "runId": .string(try r.string("run_id")),
                                                  "state": .string(try r.string("state"))]
        }
        var results: [String: JSONValue] = [:]
        for r in resultRows.all { results[try r.string("task_id")] = try r.json("result") }
        let runContext = TaskMessageBuilder.Run(
            runId: try run.string("run_id"), flowId: try run.string("flow_id"),
            params: try run.json("params").objectValue ?? [:],
            logicalDate: try run.date("logical_date"), dataIntervalStart: try run.date("data_interval_start"),
            dataIntervalEnd: try run.date("data_interval_end"),
            triggeringEvents: try run.jsonOrNull("triggering_events"))
        let tries = try rows.filter { graph.tasks[try $0.string("task_id")]?.runsOnScheduler != true }.map {
            TaskMessageBuilder.Try(taskId: try $0.string("task_id"), tryNumber: try $0.int("try_number"), messageId: try $0.string("message_id"),
                                   queue: try $0.string("queue"), timeoutSeconds: try $0.doubleOrNull("timeout_seconds"), mapIndex: try $0.intOrNull("map_index"),
                                   mapItem: try $0.jsonOrNull("map_item"))
        }
        return TaskMessageBuilder.messages(run: runContext, tries: tries, graph: graph, results: results, externalRuns: externalRuns, sealed: sealed)
    }

    /// Evaluates the downstream tasks of `finished` in one run (`RunStateMachine`): queues those
    /// now ready, and marks skipped or upstream_failed those that never will be, transitively —
    /// a wave per round of propagation, each reading the states it needs.
    func evaluateDownstream(_ s: PGSession, runPk: Int, graph: FlowGraph, finished: [String], branchChoices: [String: [String]] = [:],
                            now: Date, sink: MessageSink? = nil, known: KnownStates? = nil) throws -> [CeleryMessage] {
        announceChange(s, runPk: runPk)
        // Ended instances of mapped tasks count down their task; it ends with its last one.
        let instances = finished.filter(MappedInstance.isInstance)
        var changed = finished.filter { !MappedInstance.isInstance($0) }
        if !instances.isEmpty { changed += try settleMapped(s, runPk: runPk, instances: instances, now: now) }
        var ready: [String] = []
        // A branch that succeeded skips the direct downstream tasks it did not choose.
        let notChosen = RunStateMachine.notChosen(branchChoices, in: graph)
        if !notChosen.isEmpty {
            skipPending(s, runPk: runPk, notChosen, as: .skipped, now: now)
            changed += notChosen
        }
        // States read early serve the first wave only, and only when nothing above changed any.
        var early = instances.isEmpty && notChosen.isEmpty ? known : nil
        while !changed.isEmpty {
            let candidates = RunStateMachine.candidates(after: changed, in: graph)
            if candidates.isEmpty { break }
            var states: [String: TaskState] = [:]
            let needed = RunStateMachine.statesNeeded(for: candidates, in: graph)
            if let k = early, needed.allSatisfy(k.covered.contains) {
                for t in needed { if let st = k.states[t] { states[t] = st } }
            } else {
                for r in try s.query("SELECT task_id, state FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[])",
                                     [runPk, needed]).all {
                    states[try r.string("task_id")] = TaskState(rawValue: try r.string("state"))
                }
            }
            early = nil
            let wave = RunStateMachine.evaluate(candidates, states: states, in: graph, alreadyReady: Set(ready))
            ready += wave.ready
            for (list, state) in [(wave.skipped, TaskState.skipped), (wave.upstreamFailed, TaskState.upstreamFailed)] where !list.isEmpty {
                skipPending(s, runPk: runPk, list, as: state, now: now)
            }
            changed = wave.ended
        }
        return try dispatchReady(s, runPk: runPk, graph: graph, ready: RunStateMachine.dispatchOrder(ready, in: graph), now: now, sink: sink)
    }

    /// Ends pending task instances without running them (skipped or upstream_failed), with
    /// their history; queued, so it costs no round trip.
    private func skipPending(_ s: PGSession, runPk: Int, _ tasks: [String], as state: TaskState, now: Date) {
        s.enqueue("""
            WITH u AS (UPDATE task_instances SET state = $3, ended_at = $4 WHERE run_pk = $1 AND task_id = ANY($2::text[]) AND state = 'pending'
                       RETURNING task_id, try_number),
                 h AS (INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source)
                       SELECT $1, task_id, try_number, 'pending', $3, $4, 'scheduler' FROM u)
            UPDATE runs SET unfinished_tasks = unfinished_tasks - (SELECT count(*) FROM u) WHERE id = $1
            """, [runPk, tasks, state.rawValue, now])
    }

    /// Marks a task instance `success` or `failed` by hand (Airflow's mark success / mark
    /// failed). A try in progress is told to stop, and its late report changes nothing.
    ///
    /// Marked success, it counts as if it had succeeded: descendants that were
    /// `upstream_failed` (and `skipped` ones, when the task itself had been skipped) go back to
    /// pending, a finished run reopens, and downstream tasks run as their trigger rules allow.
    /// Marked failed, the failure is final (no retry) and propagates as a failure would.
    public func markTask(runId: String, taskId: String, as target: TaskState, now: Date) async throws -> BrokerWork {
        guard target == .success || target == .failed else {
            throw StateConflict("a task can be marked success or failed, not \(target.rawValue)")
        }
        return try await audited { [self] s, actor in
            try audit(s, actor, "mark", runId, ["taskId": .string(taskId), "state": .string(target.rawValue)], now: now)
            guard let r = try s.query("SELECT id, state, flow_id, flow_version, ended_at FROM runs WHERE run_id = $1 FOR NO KEY UPDATE", [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            let pk = try r.int("id"), runState = try r.string("state"), runEnded = try r.dateOrNull("ended_at")
            guard runState != "queued", runState != "cancelled" else {
                throw StateConflict("run `\(runId)` is \(runState); its tasks cannot be marked")
            }
            let graph = try graphs.graph(s, flow: r.string("flow_id"), version: r.int("flow_version"))
            if let m = MappedInstance.parse(taskId) {
                throw StateConflict("`\(taskId)` is one instance of mapped task `\(m.task)`: mark `\(m.task)` as a whole, or clear it to run its instances again")
            }
            guard graph.tasks[taskId] != nil else { throw Self.noSuchTask(runId, taskId, among: graph.definition.tasks.map(\.id)) }
            let rows = try s.query("SELECT task_id, state, message_id FROM task_instances WHERE run_pk = $1", [pk]).all
            let states = Dictionary(uniqueKeysWithValues: try rows.map { (try $0.string("task_id"), TaskState(rawValue: try $0.string("state")) ?? .pending) })
            let ti = try rows.first { try $0.stringOrNull("task_id") == taskId }!
            let was = states[taskId] ?? .pending
            guard was != target else { throw StateConflict("task `\(taskId)` of run `\(runId)` is already \(target.rawValue)") }
            var work = BrokerWork()
            if was == .queued || was == .running, let m = try ti.stringOrNull("message_id") { work.cancel = [m] }
            if graph.isLimited(taskId) { s.notifyAfterCommit(Self.slotsChannel, "") }
            let detail = "marked \(target.rawValue) by hand"
            try s.query("""
                UPDATE task_instances SET state = $3, ended_at = CASE WHEN $6 AND ended_at IS NOT NULL THEN ended_at ELSE $4 END, next_attempt_at = NULL,
                    error = CASE WHEN $3 = 'failed' THEN $5 ELSE NULL END
                WHERE run_pk = $1 AND task_id = $2
                """, [pk, taskId, target.rawValue, now, detail, was.isTerminal])  // a task that had ended keeps its end: marking is not work
            try s.query("UPDATE task_tries SET state = $3, ended_at = $4 WHERE run_pk = $1 AND task_id = $2 AND ended_at IS NULL",
                        [pk, taskId, target.rawValue, now])
            // A mapped task's unfinished instances end with it: cancelled, and told to stop.
            var instancesEnded = 0
            if graph.tasks.isMapped(taskId) {
                let ended = try s.query("""
                    WITH u AS (UPDATE task_instances SET state = 'cancelled', ended_at = $3, next_attempt_at = NULL
                               WHERE run_pk = $1 AND map_parent = $2 AND state IN ('pending', 'queued', 'running', 'up_for_retry', 'up_for_reschedule')
                               RETURNING task_id, try_number, message_id),
                         t AS (UPDATE task_tries SET state = 'cancelled', ended_at = $3 WHERE run_pk = $1
                               AND task_id IN (SELECT task_id FROM u) AND ended_at IS NULL),
                         h AS (INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                               SELECT $1, task_id, try_number, NULL, 'cancelled', $3, $5, 'mapped task `' || $2 || '` ' || $4 FROM u)
                    SELECT message_id FROM u
                    """, [pk, taskId, now, detail, apiSource(actor)]).all
                instancesEnded = ended.count
                work.cancel += try ended.compactMap { try $0.stringOrNull("message_id") }
                try s.query("UPDATE task_instances SET map_left = 0 WHERE run_pk = $1 AND task_id = $2", [pk, taskId])
            }
            // Descendants that ended because this task did not succeed get another chance.
            var reset: [String] = []
            if target == .success {
                let again: Set<TaskState> = was == .skipped ? [.upstreamFailed, .skipped] : [.upstreamFailed]
                reset = graph.descendants(of: [taskId]).filter { again.contains(states[$0] ?? .pending) }.sorted()
                if !reset.isEmpty {
                    try s.query("UPDATE task_instances SET state = 'pending', ended_at = NULL WHERE run_pk = $1 AND task_id = ANY($2::text[])",
                                [pk, reset])
                }
            }
            try s.query("""
                INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                SELECT $1, t.task_id, t.try_number, CASE WHEN t.task_id = $2 THEN $3 ELSE NULL END,
                       CASE WHEN t.task_id = $2 THEN $4 ELSE 'pending' END, $5, $8,
                       CASE WHEN t.task_id = $2 THEN $6 ELSE 'reset: upstream task `' || $2 || '` ' || $6 END
                FROM task_instances t WHERE t.run_pk = $1 AND (t.task_id = $2 OR t.task_id = ANY($7::text[]))
                """, [pk, taskId, was.rawValue, target.rawValue, now, detail, reset, apiSource(actor)])
            let delta = reset.count - (was.isTerminal ? 0 : 1) - instancesEnded
            try s.query("UPDATE runs SET state = 'running', ended_at = NULL, unfinished_tasks = unfinished_tasks + $2 WHERE id = $1",
                        [pk, delta])
            work.enqueue = try evaluateDownstream(s, runPk: pk, graph: graph, finished: [taskId], now: now)
            try finalizeIfDone(s, runPk: pk, graph: graph, now: now)
            // A run that had ended and ends again at once (nothing ran again) keeps its end: marking
            // an hour later does not make it an hour longer.
            if let runEnded {
                try s.query("UPDATE runs SET ended_at = $2 WHERE id = $1 AND state IN ('success', 'failed') AND ended_at IS NOT NULL", [pk, runEnded])
            }
            return work
        }
    }

    /// Clears failed tasks of a finished run (or the named ones) and everything downstream of
    /// them, so they run again; the run goes back to running. Each cleared task gets a fresh
    /// set of tries. A cleared mapped task expands again.
    public func clearTasks(runId: String, taskIds: [String]?, onlyFailed: Bool = false, now: Date) async throws -> BrokerWork {
        return try await audited { [self] s, actor in
            try audit(s, actor, "clear", runId, ["taskIds": taskIds.map { .array($0.map(JSONValue.string)) } ?? .null, "onlyFailed": .bool(onlyFailed)], now: now)
            return try clearRun(s, actor: actor, runId: runId, taskIds: taskIds, onlyFailed: onlyFailed, now: now)
        }
    }

    /// `clearTasks` inside the caller's transaction (a backfill re-runs existing runs with it).
    func clearRun(_ s: PGSession, actor: String?, runId: String, taskIds: [String]?, onlyFailed: Bool, now: Date) throws -> BrokerWork {
        guard let r = try s.query("SELECT id, state, flow_id, flow_version FROM runs WHERE run_id = $1 FOR NO KEY UPDATE", [runId]).first else {
            throw NotFound("unknown run `\(runId)`")
        }
        let pk = try r.int("id")
        let state = try r.string("state")
        guard state == "failed" || state == "success" || state == "running" else {
            throw StateConflict("run `\(runId)` is \(state); only failed, successful or running runs can be cleared")
        }
        let graph = try graphs.graph(s, flow: r.string("flow_id"), version: r.int("flow_version"))
        let states = Dictionary(uniqueKeysWithValues: try s.query("SELECT task_id, state FROM task_instances WHERE run_pk = $1", [pk]).all
            .map { (try $0.string("task_id"), try $0.string("state")) })
        var roots: [String]
        if let taskIds, !taskIds.isEmpty {
            for t in taskIds {
                if let m = MappedInstance.parse(t) {
                    throw StateConflict("`\(t)` is one instance of mapped task `\(m.task)`: clear `\(m.task)`, which expands again")
                }
                if graph.tasks[t] == nil { throw Self.noSuchTask(runId, t, among: graph.definition.tasks.map(\.id)) }
            }
            roots = taskIds
        } else {
            // A failed mapped instance has failed its mapped task, which is cleared (and expands again).
            roots = states.filter { ($0.value == "failed" || $0.value == "upstream_failed") && !MappedInstance.isInstance($0.key) }.map(\.key)
        }
        guard !roots.isEmpty else { throw StateConflict("run `\(runId)` has no failed tasks to clear") }
        var cleared = Array(Set(roots).union(graph.descendants(of: roots))).sorted()
        if onlyFailed {
            // Airflow's "only failed": of the tasks chosen and their descendants, the failed ones.
            cleared = cleared.filter { states[$0] == "failed" || states[$0] == "upstream_failed" }
            guard !cleared.isEmpty else { throw StateConflict("run `\(runId)`: none of those tasks or their descendants failed") }
        }
        let active = cleared.filter { ["queued", "running", "up_for_retry", "up_for_reschedule"].contains(states[$0] ?? "") }
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
            SELECT $1, t.task_id, t.try_number, NULL, 'pending', $3, $4, 'cleared' FROM task_instances t
            WHERE t.run_pk = $1 AND t.task_id = ANY($2::text[])
            """, [pk, cleared, now, apiSource(actor)])
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

    /// Evaluates tasks whose upstream tasks are all outside the cleared set.
    func evaluateEntry(_ s: PGSession, runPk: Int, graph: FlowGraph, tasks: [String], now: Date) throws -> [CeleryMessage] {
        var states: [String: TaskState] = [:]
        for r in try s.query("SELECT task_id, state FROM task_instances WHERE run_pk = $1", [runPk]).all {
            states[try r.string("task_id")] = TaskState(rawValue: try r.string("state"))
        }
        let ready = tasks.filter { t in
            graph.tasks[t]!.triggerRule.evaluate(graph.tasks[t]!.upstream.map { states[$0] ?? .pending }) == .run
        }
        return try dispatchReady(s, runPk: runPk, graph: graph, ready: ready, now: now)
    }

    /// A run's task instances in the flow's declaration order, each with every try.
    public func taskInstances(runId: String) async throws -> [TaskInstanceRecord] {
        try await db.run { [self] s in
            guard let run = try s.query("SELECT id, flow_id, flow_version FROM runs WHERE run_id = $1", [runId]).first else {
                throw NotFound("unknown run `\(runId)`")
            }
            let pk = try run.int("id")
            let graph = try graphs.graph(s, flow: run.string("flow_id"), version: run.int("flow_version"))
            let order = Dictionary(graph.definition.tasks.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
            var tries: [String: [TaskTryRecord]] = [:]
            for t in try s.query("""
                SELECT task_id, try_number, message_id, state, queued_at, started_at, ended_at, worker, result::text AS result, error
                FROM task_tries WHERE run_pk = $1 ORDER BY task_id, try_number
                """, [pk]).all {
                tries[try t.string("task_id"), default: []].append(TaskTryRecord(
                    tryNumber: try t.int("try_number"), messageId: try t.string("message_id"), state: try t.string("state"),
                    queuedAt: try t.dateOrNull("queued_at"), startedAt: try t.dateOrNull("started_at"), endedAt: try t.dateOrNull("ended_at"),
                    worker: try t.stringOrNull("worker"), result: try t.jsonOrNull("result"), error: try t.stringOrNull("error")))
            }
            let rows = try s.query("""
                SELECT task_id, state, try_number, max_tries, queue, priority, queued_at, started_at, ended_at, next_attempt_at, worker,
                       result::text AS result, error, map_parent, map_index, pool,
                       CASE WHEN state = 'queued' AND message_id IS NULL THEN wait_reason END AS wait_reason
                FROM task_instances WHERE run_pk = $1
                """, [pk]).all
            var lengths: [String: Int] = [:]
            for t in rows { if let p = try t.stringOrNull("map_parent") { lengths[p, default: 0] += 1 } }
            // Declaration order; a mapped task's instances follow it, by index.
            func key(_ r: TaskInstanceRecord) -> (Int, Int) {
                (order[r.mapParent ?? r.taskId, default: Int.max], r.mapIndex ?? -1)
            }
            return try rows.map { t in
                let id = try t.string("task_id"), tryNumber = try t.int("try_number")
                return TaskInstanceRecord(taskId: id, state: try t.string("state"), tryNumber: try t.int("try_number"),
                                          maxTries: try t.int("max_tries"), queue: try t.string("queue"), priority: try t.int("priority"),
                                          // The try's first start: a sensor's whole wait, not its last poke.
                                          queuedAt: try t.dateOrNull("queued_at"),
                                          startedAt: try tries[id]?.last { $0.tryNumber == tryNumber }?.startedAt ?? t.dateOrNull("started_at"),
                                          endedAt: try t.dateOrNull("ended_at"),
                                          nextAttemptAt: try t.dateOrNull("next_attempt_at"), worker: try t.stringOrNull("worker"),
                                          result: try t.jsonOrNull("result"), error: try t.stringOrNull("error"),
                                          tries: tries[id] ?? [], mapParent: try t.stringOrNull("map_parent"), mapIndex: try t.intOrNull("map_index"),
                                          mapLength: graph.tasks.isMapped(id) ? lengths[id] : nil, pool: try t.stringOrNull("pool"),
                                          waitReason: try t.stringOrNull("wait_reason"))
            }.sorted { key($0) < key($1) }
        }
    }

    /// Queues the next try of tasks whose retry time has come.
    public func queueDueRetries(now: Date, limit: Int = 500) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork()
                let due = try s.query("""
                    SELECT t.run_pk, t.task_id, t.state, r.flow_id, r.flow_version FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    WHERE t.state IN ('up_for_retry', 'up_for_reschedule') AND t.next_attempt_at <= $1 AND r.state = 'running'
                    ORDER BY t.next_attempt_at LIMIT $2 FOR NO KEY UPDATE OF r SKIP LOCKED
                    """, [now, limit]).all
                var byRun: [Int: (String, Int, [String], [String])] = [:]
                for r in due {
                    let pk = try r.int("run_pk")
                    let poke = try r.stringOrNull("state") == TaskState.upForReschedule.rawValue
                    let flow = try r.string("flow_id"), version = try r.int("flow_version"), task = try r.string("task_id")
                    byRun[pk, default: (flow, version, [], [])].2.append(contentsOf: poke ? [] : [task])
                    byRun[pk]!.3.append(contentsOf: poke ? [task] : [])
                }
                for (pk, v) in byRun.sorted(by: { $0.key < $1.key }) {
                    let graph = try graphs.graph(s, flow: v.0, version: v.1)
                    work.enqueue += try queueTasks(s, runPk: pk, graph: graph, taskIds: v.2, now: now)
                    work.enqueue += try queuePokes(s, runPk: pk, graph: graph, taskIds: v.3, now: now)
                }
                return work
            }
        }
    }

    /// Queues sensors' next pokes: the same try, with a new message, so every poke writes to
    /// one log and pokes never use up retries.
    func queuePokes(_ s: PGSession, runPk: Int, graph: FlowGraph, taskIds: [String], now: Date) throws -> [CeleryMessage] {
        guard !taskIds.isEmpty else { return [] }
        let rows = try s.query("""
            WITH up AS (
                UPDATE task_instances t SET state = 'queued', message_id = u.mid, queued_at = $4, next_attempt_at = NULL, started_at = NULL,
                    ended_at = NULL, heartbeat_at = NULL, worker = NULL, error = NULL
                FROM unnest($2::text[], $3::text[]) AS u(task_id, mid)
                WHERE t.run_pk = $1 AND t.task_id = u.task_id AND t.state = 'up_for_reschedule'
                RETURNING t.task_id, t.try_number, t.message_id, t.queue, t.priority, t.timeout_seconds, t.map_index, t.map_item::text AS map_item),
            tries AS (
                UPDATE task_tries tt SET state = 'queued', message_id = up.message_id, ended_at = NULL, error = NULL
                FROM up WHERE tt.run_pk = $1 AND tt.task_id = up.task_id AND tt.try_number = up.try_number),
            history AS (
                INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                SELECT $1, task_id, try_number, 'up_for_reschedule', 'queued', $4, 'scheduler', 'next poke' FROM up)
            SELECT * FROM up
            """, [runPk, taskIds, taskIds.map { _ in UUID().uuidString.lowercased() }, now]).all
        return try buildMessages(s, runPk: runPk, graph: graph, rows: rows)
    }

    /// When the earliest retry is due, if any (so the retry timer can sleep until then).
    public func nextRetryTime() async throws -> Date? {
        try await db.run { s in
            try s.query("""
                SELECT least((SELECT min(next_attempt_at) FROM task_instances WHERE state = 'up_for_retry'),
                             (SELECT min(next_attempt_at) FROM task_instances WHERE state = 'up_for_reschedule')) AS t
                """).first?.dateOrNull("t")
        }
    }

    /// Task instances queued for longer than `olderThan` seconds: candidates for a lost message.
    public func staleQueued(now: Date, olderThan: Double, limit: Int = 200) async throws -> [(messageId: String, queue: String)] {
        try await db.run { s in
            try s.query("""
                SELECT message_id, queue FROM task_instances
                WHERE state = 'queued' AND queued_at < $1 AND message_id IS NOT NULL AND executor <> 'scheduler'
                ORDER BY queued_at LIMIT $2
                """, [now.addingTimeInterval(-olderThan), limit]).all.map { (try $0.string("message_id"), try $0.string("queue")) }
        }
    }

    /// Rebuilds the message of a queued try whose message the broker lost (same id, same try).
    public func rebuildQueuedMessages(_ messageIds: [String], now: Date) async throws -> [CeleryMessage] {
        guard !messageIds.isEmpty else { return [] }
        return try await db.run { [self] s in
            try s.transaction {
                var out: [CeleryMessage] = []
                let rows = try s.query("""
                    SELECT t.run_pk, t.task_id, t.try_number, t.message_id, t.queue, t.priority, t.timeout_seconds, t.map_index,
                           t.map_item::text AS map_item, r.flow_id, r.flow_version
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    WHERE t.message_id = ANY($1::text[]) AND t.state = 'queued' FOR NO KEY UPDATE OF t SKIP LOCKED
                    """, [messageIds]).all
                var byRun: [Int: [PGRow]] = [:]
                var h = HistoryBatch()
                for r in rows { byRun[try r.int("run_pk"), default: []].append(r) }
                for (pk, tis) in byRun.sorted(by: { $0.key < $1.key }) {
                    let graph = try graphs.graph(s, flow: tis[0].string("flow_id"), version: tis[0].int("flow_version"))
                    out += try buildMessages(s, runPk: pk, graph: graph, rows: tis)
                    for t in tis {
                        h.add(pk, try t.string("task_id"), try t.int("try_number"), "queued", "queued", now, "reaper",
                              "message \(try t.string("message_id")) was missing from the broker: enqueued again", true)
                    }
                }
                h.insert(s)  // one statement for every try
                return out
            }
        }
    }
}

/// The messages of tries whose queueing statements were queued with a sink
/// (`queueTasksNow(sink:)`): complete once the transaction has committed.
final class MessageSink: @unchecked Sendable {
    var messages: [CeleryMessage] = []
}

/// The results of queued statements, as they arrive.
private final class ResultCollector: @unchecked Sendable {
    var results: [PGResult?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
}
