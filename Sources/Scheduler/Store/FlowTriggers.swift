public import CeleryProtocol
public import FlowKit
public import Foundation
import PostgresClient

/// Flow-to-flow triggers: runs owed to flows declared `after:` another flow's success, and
/// trigger-flow tasks, which the scheduler runs itself. Both create runs keyed so that a second
/// pass, a second scheduler or a retry finds the run already made.
extension SchedulerStore {
    /// Wakes the flow-trigger service: a run with subscribers ended, or a trigger task was queued.
    static let flowTriggersChannel = "flowkit_flow_triggers"

    /// Records which flows run after which (the flows' `after:`), replacing what these flows said before.
    func registerFlowSubscriptions(_ s: PGSession, _ defs: [FlowDefinition]) throws {
        try s.query("DELETE FROM flow_subscriptions WHERE downstream = ANY($1::text[])", [defs.map(\.id)])
        let subs = defs.flatMap { d in (d.after ?? []).map { (d.id, $0) } }
        guard !subs.isEmpty else { return }
        try s.query("""
            INSERT INTO flow_subscriptions (upstream, downstream, pass_conf, pass_results)
            SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[]) ON CONFLICT DO NOTHING
            """, [subs.map(\.1.flow), subs.map(\.0), subs.map(\.1.passConf), subs.map(\.1.passResults)])
    }

    /// A queued run with an idempotency key, or the run that already has that key (`created` false).
    func insertKeyedRun(_ s: PGSession, flowId: String, version: Int, kind: String, conf: [String: JSONValue], params: [String: JSONValue],
                        key: String, deadline: RunDeadline?, triggeredBy: String? = nil, triggeringEvents: JSONValue? = nil,
                        logicalDate: Date? = nil, runId: String? = nil, now: Date) throws -> (run: RunRecord, created: Bool) {
        let date = logicalDate ?? now
        // The unique index decides between concurrent writers; the loser reads the winner's run.
        if let inserted = try s.query("""
            INSERT INTO runs AS r (run_id, flow_id, flow_version, trigger_kind, conf, params, state, logical_date, data_interval_start,
                                   data_interval_end, deadline_at, idempotency_key, triggered_by, triggering_events)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, 'queued', $7, $7, $7, $8, $9, $10, $11::jsonb)
            ON CONFLICT (flow_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING \(RunRecord.columns)
            """, [runId ?? "\(kind)__\(Self.compactDate(now))__\(UUID().uuidString.prefix(8).lowercased())", flowId, version, kind,
                  JSONValue.object(conf).jsonbText, JSONValue.object(params).jsonbText, date,
                  deadline.flatMap { $0.after == .logicalDate ? date.addingTimeInterval($0.seconds) : nil }, key, triggeredBy,
                  triggeringEvents?.jsonbText]).first {
            s.notifyAfterCommit("flowkit_runs", flowId)
            return (try RunRecord(row: inserted), true)
        }
        let row = try s.query("SELECT \(RunRecord.columns) FROM runs r WHERE r.flow_id = $1 AND r.idempotency_key = $2", [flowId, key]).single()
        return (try RunRecord(row: row), false)
    }

    /// Creates the runs that ended upstream runs owe the flows declared `after:` them: one per
    /// successful upstream run and subscriber (keyed `after:<upstream run id>`), in the
    /// transaction that clears the upstream runs' flags. Returns the runs made and the
    /// subscribers that could not get one (their params refused even the defaults), with why.
    public func startFlowTriggeredRuns(now: Date, limit: Int = 50) async throws -> (runs: [RunRecord], refused: [String]) {
        try await db.run { [self] s in
            try s.transaction {
                let ups = try s.query("""
                    SELECT id, run_id, flow_id, state, conf::text AS conf, ended_at FROM runs WHERE triggers_pending
                    ORDER BY id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED
                    """, [limit]).all
                guard !ups.isEmpty else { return ([], []) }
                var created: [RunRecord] = [], refused: [String] = []
                for u in ups where try u.stringOrNull("state") == "success" {
                    let upRunId = try u.string("run_id"), upFlow = try u.string("flow_id")
                    let upConf = try u.json("conf").objectValue ?? [:]
                    let subs = try s.query("""
                        SELECT s.downstream, s.pass_conf, s.pass_results, f.current_version
                        FROM flow_subscriptions s JOIN flows f ON f.flow_id = s.downstream AND f.is_active
                        WHERE s.upstream = $1 ORDER BY s.downstream
                        """, [upFlow]).all
                    var results: JSONValue?
                    for sub in subs {
                        let flow = try sub.string("downstream"), version = try sub.int("current_version")
                        let graph = try graphs.graph(s, flow: flow, version: version)
                        let declared = Set(graph.definition.params.map(\.name))
                        var conf = try sub.boolOrNull("pass_conf") == true ? upConf.filter { declared.contains($0.key) } : [:]
                        let params: [String: JSONValue]
                        do { params = try graph.definition.resolveParams(conf: conf) } catch {
                            // A passed value the flow's params refuse: the run starts from its defaults, and says so.
                            guard let p = try? graph.definition.resolveParams(conf: [:]) else {
                                refused.append("flow `\(flow)` after run \(upRunId) of `\(upFlow)`: \(error)")
                                continue
                            }
                            refused.append("flow `\(flow)` after run \(upRunId) of `\(upFlow)`: the passed conf was refused (\(error)); started with its defaults")
                            conf = [:]
                            params = p
                        }
                        var extra: [String: JSONValue] = ["flowId": .string(upFlow), "state": "success", "conf": .object(upConf)]
                        if try sub.boolOrNull("pass_results") == true {
                            if results == nil {
                                var r: [String: JSONValue] = [:]
                                for row in try s.query("""
                                    SELECT task_id, result::text AS result FROM task_instances
                                    WHERE run_pk = $1 AND result IS NOT NULL AND map_parent IS NULL
                                    """, [u.int("id")]).all {
                                    r[try row.string("task_id")] = try row.json("result")
                                }
                                results = .object(r)
                            }
                            extra["results"] = results
                        }
                        let event: JSONValue = ["id": 0, "uri": .string(FlowTrigger.uri(upFlow)), "source": "flow", "runId": .string(upRunId),
                                                "taskId": .null, "at": .string(PGTime.format(try u.dateOrNull("ended_at") ?? now)), "extra": .object(extra)]
                        let made = try insertKeyedRun(s, flowId: flow, version: version, kind: "flow", conf: conf, params: params,
                                                      key: "after:\(upRunId)", deadline: graph.definition.deadline, triggeredBy: upRunId,
                                                      triggeringEvents: [event], now: now)
                        if made.created { created.append(made.run) }
                    }
                }
                try s.query("UPDATE runs SET triggers_pending = false WHERE id = ANY($1::bigint[])", [ups.map { try $0.int("id") }])
                return (created, refused)
            }
        }
    }

    /// Whether any task the scheduler runs itself (a trigger-flow task, an approval) is queued
    /// or running: one probe of `task_instances_internal`.
    public func hasSchedulerRunTasks() async throws -> Bool {
        try await db.run { s in
            try s.query("""
                SELECT EXISTS (SELECT 1 FROM task_instances WHERE queue = '\(TriggerFlowSpec.internalQueue)' AND state IN ('queued', 'running')) AS any
                """).single().bool("any")
        }
    }

    /// One pass over trigger-flow tasks: a queued one gets its child run (found again by its key
    /// `<parent run id>/<task id>` when it exists) and starts; one that does not wait succeeds;
    /// one that waits ends as its child ended. Returns the events that say so, to apply as a
    /// worker's would be (`applyEvents`): a pass that dies before applying them is repeated, and
    /// finds the same child.
    public func triggerTaskEvents(now: Date, limit: Int = 100) async throws -> [WorkerEvent] {
        try await db.run { [self] s in
            try s.transaction {
                let rows = try s.query("""
                    SELECT t.run_pk, t.task_id, t.try_number, t.message_id, t.state, t.child_run_id, r.run_id, r.flow_id, r.flow_version,
                           c.state AS child_state
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    LEFT JOIN runs c ON c.run_id = t.child_run_id
                    WHERE t.queue = '\(TriggerFlowSpec.internalQueue)' AND t.state IN ('queued', 'running') AND t.message_id IS NOT NULL
                      AND (t.state = 'queued' OR c.state IN ('success', 'failed', 'cancelled'))
                    ORDER BY t.queued_at LIMIT $1 FOR NO KEY UPDATE OF t SKIP LOCKED
                    """, [limit]).all
                var events: [WorkerEvent] = []
                for t in rows {
                    let runId = try t.string("run_id"), taskId = try t.string("task_id"), tryNumber = try t.int("try_number")
                    let messageId = try t.string("message_id")
                    let graph = try graphs.graph(s, flow: t.string("flow_id"), version: t.int("flow_version"))
                    guard let spec = graph.tasks[taskId]?.triggerFlow else { continue }
                    func event(_ kind: WorkerEvent.Kind, result: JSONValue? = nil, error: String? = nil, lines: [String]? = nil) -> WorkerEvent {
                        WorkerEvent(kind: kind, worker: Self.triggerWorker, at: now, messageId: messageId, runId: runId,
                                    taskId: taskId, tryNumber: tryNumber, result: result, error: error, lines: lines)
                    }
                    func summary(_ child: String, _ state: String) -> JSONValue {
                        ["flowId": .string(spec.flow), "runId": .string(child), "state": .string(state)]
                    }
                    if try t.stringOrNull("state") == "running" {
                        let child = try t.string("child_run_id"), state = try t.string("child_state")
                        events.append(event(.log, lines: ["run \(child) of `\(spec.flow)` ended \(state)"]))
                        events.append(state == "success"
                            ? event(.succeeded, result: summary(child, state))
                            : event(.failed, error: "run \(child) of flow `\(spec.flow)` ended \(state)"))
                        continue
                    }
                    events.append(event(.started))
                    do {
                        let child = try startChildRun(s, parentPk: t.int("run_pk"), parentRunId: runId, taskId: taskId, spec: spec, now: now)
                        try s.query("UPDATE task_instances SET child_run_id = $3 WHERE run_pk = $1 AND task_id = $2",
                                    [t.int("run_pk"), taskId, child.run.runId])
                        let said = child.created ? "started run \(child.run.runId) of `\(spec.flow)`"
                            : "run \(child.run.runId) of `\(spec.flow)` was started before (by an earlier try): not starting another"
                        let ended = ["success", "failed", "cancelled"].contains(child.run.state)
                        events.append(event(.log, lines: [said] + (spec.wait && !ended ? ["waiting for it to end"] : [])))
                        if !spec.wait || child.run.state == "success" {
                            events.append(event(.succeeded, result: summary(child.run.runId, child.run.state)))
                        } else if ended {
                            events.append(event(.failed, error: "run \(child.run.runId) of flow `\(spec.flow)` ended \(child.run.state)"))
                        }
                    } catch {
                        events.append(event(.failed, error: "could not start flow `\(spec.flow)`: \(error)"))
                    }
                }
                return events
            }
        }
    }

    /// The worker name on events of tasks the scheduler runs itself.
    static let triggerWorker = "flowkit-scheduler"

    /// The child run of a trigger task: its conf (the static conf with the upstream result merged
    /// over it) checked against the child flow's params.
    func startChildRun(_ s: PGSession, parentPk: Int, parentRunId: String, taskId: String, spec: TriggerFlowSpec,
                       now: Date) throws -> (run: RunRecord, created: Bool) {
        guard let f = try s.query("SELECT current_version, is_active FROM flows WHERE flow_id = $1", [spec.flow]).first,
              try f.boolOrNull("is_active") == true else { throw NotFound("no active flow `\(spec.flow)`") }
        var conf = spec.conf
        if let from = spec.confFromResultOf {
            let row = try s.query("SELECT result::text AS result FROM task_instances WHERE run_pk = $1 AND task_id = $2", [parentPk, from]).first
            let value = try row?.jsonOrNull("result")
            switch value {
            case .object(let o)?: conf.merge(o) { _, new in new }
            case nil, .null?: break
            case let other?: throw BadRequest("the result of `\(from)` is \(other.compactJSON.prefix(80)), not a JSON object to use as conf")
            }
        }
        let version = try f.int("current_version")
        let graph = try graphs.graph(s, flow: spec.flow, version: version)
        let params = try graph.definition.resolveParams(conf: conf)
        return try insertKeyedRun(s, flowId: spec.flow, version: version, kind: "flow", conf: conf, params: params,
                                  key: "\(parentRunId)/\(taskId)", deadline: graph.definition.deadline, triggeredBy: parentRunId, now: now)
    }
}
