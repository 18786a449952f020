public import CeleryProtocol
public import FlowKit
public import FlowJSON
public import Foundation
import PostgresClient

/// An approval task's question and, once made, its decision.
public struct ApprovalRecord: Codable, Sendable {
    public var runId: String
    public var flowId: String
    public var taskId: String
    public var tryNumber: Int
    public var prompt: String
    public var options: [String]
    /// The options that reject (fail or skip the task).
    public var rejectOptions: [String]
    /// True when the options are the branches to follow.
    public var branch: Bool
    public var form: [Param]
    public var requestedAt: Date
    public var timeoutAt: Date?
    public var onTimeout: String
    /// `waiting`, `decided` or `timed_out`.
    public var state: String
    public var decision: String?
    public var decidedBy: String?
    public var decidedAt: Date?
    public var comment: String?
    public var values: [String: JSONValue]?
    /// The task instance's state (`running` while it waits).
    public var taskState: String

    init(row r: PGRow) throws {
        let spec = try JSONDecoder().decode(ApprovalSpec.self, from: Data(try r.string("spec").utf8))
        runId = try r.string("run_id")
        flowId = try r.string("flow_id")
        taskId = try r.string("task_id")
        tryNumber = try r.int("try_number")
        prompt = spec.prompt
        options = spec.options
        rejectOptions = spec.rejectOptions
        branch = spec.branch
        form = spec.form
        onTimeout = spec.onTimeout.rawValue
        requestedAt = try r.date("requested_at")
        timeoutAt = try r.dateOrNull("timeout_at")
        decision = try r.stringOrNull("decision")
        decidedBy = try r.stringOrNull("decided_by")
        decidedAt = try r.dateOrNull("decided_at")
        comment = try r.stringOrNull("comment")
        values = try r.jsonOrNull("form_values")?.objectValue
        taskState = try r.string("task_state")
        state = try r.bool("timed_out") ? "timed_out" : decidedAt == nil ? "waiting" : "decided"
    }

    static let columns = """
        a.spec::text AS spec, r.run_id, r.flow_id, a.task_id, a.try_number, a.requested_at, a.timeout_at, a.decision, a.decided_by,
        a.decided_at, a.comment, a.form_values::text AS form_values, a.timed_out, t.state AS task_state
        """
    static let from = """
        approvals a JOIN runs r ON r.id = a.run_pk JOIN task_instances t ON t.run_pk = a.run_pk AND t.task_id = a.task_id
        """
}

extension SchedulerStore {
    /// The approvals waiting for a decision (oldest first), or every one (newest first), of a
    /// run or of all runs.
    public func approvals(waitingOnly: Bool = true, runId: String? = nil, limit: Int = 200) async throws -> [ApprovalRecord] {
        try await db.run { s in
            try s.query("""
                SELECT \(ApprovalRecord.columns) FROM \(ApprovalRecord.from)
                WHERE ($1::text IS NULL OR r.run_id = $1) AND (NOT $2::bool OR (a.decided_at IS NULL AND t.state = 'running' AND t.try_number = a.try_number))
                ORDER BY CASE WHEN $2::bool THEN a.requested_at END, a.requested_at DESC LIMIT $3
                """, [runId, waitingOnly, limit]).all.map { try ApprovalRecord(row: $0) }
        }
    }

    /// Records a person's decision on an approval task that waits for one; the flow-trigger
    /// service ends the task with it. `decision` must be one of the options; `values` must fit
    /// the form (its fields without a default are required). Audited.
    public func decide(runId: String, taskId: String, decision: String, comment: String?, values: [String: JSONValue], now: Date) async throws -> ApprovalRecord {
        try await audited { [self] s, actor in
            guard let t = try s.query("""
                SELECT t.run_pk, t.state, t.try_number, r.flow_id, r.flow_version FROM runs r
                LEFT JOIN task_instances t ON t.run_pk = r.id AND t.task_id = $2 WHERE r.run_id = $1
                """, [runId, taskId]).first else { throw NotFound("unknown run `\(runId)`") }
            // No lock on the run: the approval row's FOR UPDATE below serializes deciders (and a
            // timeout), and re-reads the row a concurrent one wrote.
            let graph = try graphs.graph(s, flow: t.string("flow_id"), version: t.int("flow_version"))
            guard let spec = graph.tasks[taskId]?.approval else {
                if graph.tasks[taskId] == nil { throw Self.noSuchTask(runId, taskId, among: graph.definition.tasks.map(\.id)) }
                throw BadRequest("task `\(taskId)` of run `\(runId)` is not an approval: it takes no decision")
            }
            guard let pk = try t.intOrNull("run_pk"), let state = try t.stringOrNull("state") else {
                throw StateConflict("`\(taskId)` of run `\(runId)` is not waiting for a decision: the run has not started")
            }
            let tryNumber = try t.int("try_number")
            let asked = try s.query("SELECT decision, decided_by, decided_at FROM approvals WHERE run_pk = $1 AND task_id = $2 AND try_number = $3 FOR UPDATE",
                                    [pk, taskId, tryNumber]).first
            if let asked, let by = try asked.stringOrNull("decided_by"), let at = try asked.dateOrNull("decided_at") {
                throw StateConflict("`\(taskId)` of run `\(runId)` was already decided: `\(try asked.string("decision"))` by \(by) at \(Instant.format(at))")
            }
            guard asked != nil, state == "running" else {
                throw StateConflict("`\(taskId)` of run `\(runId)` is not waiting for a decision (it is \(state))")
            }
            guard spec.options.contains(decision) else {
                throw BadRequest("`decision` must be one of \(spec.options.map { "`\($0)`" }.joined(separator: ", ")), not `\(decision)`")
            }
            let resolved = try Self.formValues(spec.form, values, rejecting: spec.rejectOptions.contains(decision))
            try s.query("""
                UPDATE approvals SET decision = $4, decided_by = $5, decided_at = $6, comment = $7, form_values = $8::jsonb
                WHERE run_pk = $1 AND task_id = $2 AND try_number = $3
                """, [pk, taskId, tryNumber, decision, actor ?? "unknown", now, comment, resolved.map { JSONValue.object($0).jsonbText }])
            try audit(s, actor, "decide", "\(runId)/\(taskId)", ["decision": .string(decision), "comment": comment.map(JSONValue.string) ?? .null],
                      now: now)
            s.notifyAfterCommit(Self.flowTriggersChannel, "")
            guard let row = try s.query("""
                SELECT \(ApprovalRecord.columns) FROM \(ApprovalRecord.from) WHERE a.run_pk = $1 AND a.task_id = $2 AND a.try_number = $3
                """, [pk, taskId, tryNumber]).first else { throw StateConflict("the approval of `\(taskId)` vanished") }
            return try ApprovalRecord(row: row)
        }
    }

    /// A decision's form values, with the defaults filled in; nil when the form is empty. A
    /// rejection needs no values.
    static func formValues(_ form: [Param], _ values: [String: JSONValue], rejecting: Bool) throws -> [String: JSONValue]? {
        guard !form.isEmpty else {
            guard values.isEmpty else { throw BadRequest("this approval has no form: `values` must be empty") }
            return nil
        }
        let known = Dictionary(uniqueKeysWithValues: form.map { ($0.name, $0) })
        var out: [String: JSONValue] = [:]
        for (k, v) in values.sorted(by: { $0.key < $1.key }) {
            guard let p = known[k] else {
                throw BadRequest("the form has no field `\(k)`; its fields: \(form.map(\.name).joined(separator: ", "))")
            }
            guard p.accepts(v) else { throw BadRequest("form field `\(k)` must be of type \(p.kind.rawValue), got \(v.compactJSON)") }
            out[k] = v
        }
        for p in form where out[p.name] == nil {
            if let d = p.defaultValue { out[p.name] = d } else if !rejecting { throw BadRequest("form field `\(p.name)` is required") }
        }
        return out
    }

    /// One pass over approval tasks: a queued one is asked (its approval row, with the time it
    /// times out) and starts waiting; a waiting one that was decided, or timed out, ends as the
    /// decision says. Returns the events, to apply as a worker's would be (`applyEvents`): a
    /// pass that dies before applying them is repeated and finds the same rows.
    public func approvalEvents(now: Date, limit: Int = 100) async throws -> [WorkerEvent] {
        try await db.run { [self] s in
            try s.transaction {
                let rows = try s.query("""
                    SELECT t.run_pk, t.task_id, t.try_number, t.message_id, t.state, r.run_id, r.flow_id, r.flow_version, r.params::text AS params,
                           a.decision, a.decided_by, a.comment, a.form_values::text AS form_values, a.decided_at, a.timeout_at, a.requested_at,
                           a.timed_out
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    LEFT JOIN approvals a ON a.run_pk = t.run_pk AND a.task_id = t.task_id AND a.try_number = t.try_number
                    WHERE t.queue = '\(TriggerFlowSpec.internalQueue)' AND t.executor = 'scheduler' AND t.state IN ('queued', 'running')
                      AND t.message_id IS NOT NULL
                      AND ((t.state = 'queued' AND a.run_pk IS NULL)
                           OR (t.state = 'running' AND (a.decided_at IS NOT NULL OR a.timeout_at <= $1)
                               AND (a.concluded_at IS NULL OR a.concluded_at < $1 - interval '30 seconds')))
                    ORDER BY t.queued_at LIMIT $2 FOR NO KEY UPDATE OF t SKIP LOCKED
                    """, [now, limit]).all
                var events: [WorkerEvent] = []
                for t in rows {
                    let runId = try t.string("run_id"), taskId = try t.string("task_id"), tryNumber = try t.int("try_number"), pk = try t.int("run_pk")
                    let graph = try graphs.graph(s, flow: t.string("flow_id"), version: t.int("flow_version"))
                    guard let spec = graph.tasks[taskId]?.approval else { continue }
                    let messageId = try t.string("message_id")
                    func event(_ kind: WorkerEvent.Kind, result: JSONValue? = nil, error: String? = nil, lines: [String]? = nil) -> WorkerEvent {
                        WorkerEvent(kind: kind, worker: Self.approvalWorker, at: now, messageId: messageId, runId: runId,
                                    taskId: taskId, tryNumber: tryNumber, result: result, error: error, lines: lines)
                    }
                    if try t.string("state") == "queued" {
                        let params = try t.jsonOrNull("params")?.objectValue ?? [:]
                        let seconds = spec.timeoutParam.flatMap { params[$0]?.doubleValue } ?? spec.timeoutSeconds
                        let timeoutAt = seconds.map { now.addingTimeInterval($0) }
                        try s.query("""
                            INSERT INTO approvals (run_pk, task_id, try_number, spec, requested_at, timeout_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6)
                            ON CONFLICT DO NOTHING
                            """, [pk, taskId, tryNumber, String(decoding: try JSONEncoder().encode(spec), as: UTF8.self), now, timeoutAt])
                        let until = timeoutAt.map { "; without one by \(Instant.format($0)) it \(Self.timeoutWords(spec))" } ?? ""
                        events.append(event(.started))
                        events.append(event(.log, lines: ["waiting for a decision: \(spec.prompt) (options: \(spec.options.joined(separator: ", "))\(until))"]))
                        continue
                    }
                    var decision = try t.stringOrNull("decision"), by = try t.stringOrNull("decided_by") ?? "unknown"
                    var comment = try t.stringOrNull("comment"), timedOut = try t.bool("timed_out")
                    if decision == nil {
                        // Timed out: the timeout decides, as onTimeout says.
                        let waited = try t.date("timeout_at").timeIntervalSince(try t.date("requested_at"))
                        let why = "no decision within \(Int(waited.rounded()))s"
                        switch spec.onTimeout {
                        case .approve: decision = spec.approveOption ?? "approve"
                        case .reject: decision = spec.rejectOptions.first ?? "reject"
                        case .fail: decision = "fail"
                        }
                        (by, comment, timedOut) = ("timeout", why, true)
                        try s.query("""
                            UPDATE approvals SET decision = $4, decided_by = 'timeout', decided_at = $5, timed_out = true, comment = $6
                            WHERE run_pk = $1 AND task_id = $2 AND try_number = $3
                            """, [pk, taskId, tryNumber, decision, now, why])
                        events.append(event(.log, lines: ["\(why): the approval \(Self.timeoutWords(spec))"]))
                    } else {
                        events.append(event(.log, lines: ["decided `\(decision!)` by \(by)" + (comment.map { ": \($0)" } ?? "")]))
                    }
                    try s.query("UPDATE approvals SET concluded_at = $4 WHERE run_pk = $1 AND task_id = $2 AND try_number = $3", [pk, taskId, tryNumber, now])
                    if timedOut && spec.onTimeout == .fail {
                        events.append(event(.failed, error: "\(comment ?? "no decision in time") (onTimeout: fail)"))
                    } else {
                        events.append(Self.outcome(spec, decision: decision!, by: by, comment: comment,
                                                   values: try t.jsonOrNull("form_values")?.objectValue, event: event))
                    }
                }
                return events
            }
        }
    }

    /// The name approval events carry as their worker.
    static let approvalWorker = "scheduler:approvals"

    static func timeoutWords(_ spec: ApprovalSpec) -> String {
        switch spec.onTimeout {
        case .approve: return "approves (`\(spec.approveOption ?? "?")`)"
        case .reject: return spec.onReject == .skip ? "is rejected: the task is skipped" : "is rejected: the task fails"
        case .fail: return "fails"
        }
    }

    /// The event a decision ends the task with: a rejection fails or skips it; any other
    /// decision succeeds with `{decision, approved_by, comment, values}`.
    static func outcome(_ spec: ApprovalSpec, decision: String, by: String, comment: String?, values: [String: JSONValue]?,
                        event: (WorkerEvent.Kind, JSONValue?, String?, [String]?) -> WorkerEvent) -> WorkerEvent {
        if spec.rejectOptions.contains(decision) {
            let why = "rejected (`\(decision)`) by \(by)" + (comment.map { ": \($0)" } ?? "")
            return event(spec.onReject == .skip ? .skipped : .failed, nil, why, nil)
        }
        var result: [String: JSONValue] = ["decision": .string(decision), "approved_by": .string(by)]
        if let comment { result["comment"] = .string(comment) }
        if let values { result["values"] = .object(values) }
        return event(.succeeded, .object(result), nil, nil)
    }
}
