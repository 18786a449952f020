import Foundation

/// A task that waits for a person's decision (human in the loop, as Airflow 3.1's HITL
/// operators and Prefect's `pause_flow_run(wait_for_input=…)`). The scheduler runs it, not a
/// worker: while it waits it holds no worker slot. A decision comes from the dashboard, the API
/// (`POST /api/v1/runs/{run}/tasks/{task}/decision`) or `flowctl approvals decide`; who made it,
/// their comment and the form's values become the task's result (and are audited):
/// `{"decision": "approve", "approved_by": "token:alice", "comment": …, "values": {…}}`.
public struct ApprovalSpec: Sendable, Hashable, Codable {
    /// What to decide, in words (shown on the run and in the list of approvals waiting).
    public var prompt: String
    /// The choices offered. With `branchTo`, the direct downstream tasks to choose between.
    public var options: [String]
    /// The options that reject: the task fails (or is skipped, with `onReject: .skip`).
    public var rejectOptions: [String]
    public var onReject: RejectAction
    /// True when the decision picks the branch to follow: the chosen task runs, the other
    /// direct downstream tasks are skipped (as a branch task's are).
    public var branch: Bool
    /// Values asked for with the decision (types and defaults as a flow's params).
    public var form: [Param]
    /// How long it waits; a run param (`timeoutParam`, in seconds) wins when the run has it.
    public var timeoutSeconds: Double?
    public var timeoutParam: String?
    public var onTimeout: TimeoutAction

    public enum RejectAction: String, Sendable, Hashable, Codable { case fail, skip }
    /// What a timeout decides: reject (as `onReject` says), approve (the first option that
    /// does not reject), or fail the task naming the timeout.
    public enum TimeoutAction: String, Sendable, Hashable, Codable { case reject, approve, fail }

    /// The decision that approves when the timeout does.
    public var approveOption: String? { options.first { !rejectOptions.contains($0) } }
}

extension FlowBuilder {
    /// A task that waits for a decision among `options` (default approve / reject; see
    /// `ApprovalSpec`). `reject` options fail the task (`onReject: .skip` skips it and what
    /// follows instead); a `form` asks for values that reach downstream tasks in the result's
    /// `values`; `timeout` (or the run param `timeoutParam`, in seconds) ends the wait as
    /// `onTimeout` says.
    @discardableResult
    public func approval(_ id: String, prompt: String, options: [String] = ["approve", "reject"], reject: [String] = ["reject"],
                         onReject: ApprovalSpec.RejectAction = .fail, form: [Param] = [], timeout: Duration? = nil,
                         timeoutParam: String? = nil, onTimeout: ApprovalSpec.TimeoutAction = .reject, after upstream: [TaskRef] = [],
                         triggerRule: TriggerRule? = nil, description: String = "", fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        let spec = ApprovalSpec(prompt: prompt, options: options, rejectOptions: reject.filter(options.contains), onReject: onReject, branch: false,
                                form: form, timeoutSeconds: timeout.map(Self.seconds), timeoutParam: timeoutParam, onTimeout: onTimeout)
        return add(FlowTask(id: id, body: .approval(spec), upstream: upstream.map(\.id),
                            options: .init(retry: RetryPolicy.none, queue: TriggerFlowSpec.internalQueue, triggerRule: triggerRule),
                            description: description))
    }

    /// A task where a person chooses the branch to follow among `branchTo` (its direct
    /// downstream tasks, declared after it with `after:`); the others are skipped. `reject`
    /// adds a choice that fails the task (or skips everything after it, with `onReject: .skip`).
    @discardableResult
    public func approval(_ id: String, prompt: String, branchTo: [String], reject: String? = nil, onReject: ApprovalSpec.RejectAction = .fail,
                         form: [Param] = [], timeout: Duration? = nil, timeoutParam: String? = nil, onTimeout: ApprovalSpec.TimeoutAction = .reject,
                         after upstream: [TaskRef] = [], triggerRule: TriggerRule? = nil, description: String = "",
                         fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        let spec = ApprovalSpec(prompt: prompt, options: branchTo + (reject.map { [$0] } ?? []), rejectOptions: reject.map { [$0] } ?? [],
                                onReject: onReject, branch: true, form: form, timeoutSeconds: timeout.map(Self.seconds),
                                timeoutParam: timeoutParam, onTimeout: onTimeout)
        return add(FlowTask(id: id, body: .approval(spec), upstream: upstream.map(\.id),
                            options: .init(retry: RetryPolicy.none, queue: TriggerFlowSpec.internalQueue, triggerRule: triggerRule),
                            description: description))
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
}
