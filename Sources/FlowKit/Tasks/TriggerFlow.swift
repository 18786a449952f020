import Foundation

/// A task that starts a run of another flow (Airflow's `TriggerDagRunOperator`). The scheduler
/// runs it, not a worker: it creates the child run in PostgreSQL with the key
/// `<parent run id>/<task id>`, so a retry, a clear or a second scheduler never starts a second
/// child. With `wait`, the task ends as the child run ends (success, or failed naming the child's
/// state); without, it succeeds once the child run exists. Its result is
/// `{"flowId": …, "runId": …, "state": …}`.
public struct TriggerFlowSpec: Sendable, Hashable, Codable {
    /// The flow to start.
    public var flow: String
    /// The child run's conf.
    public var conf: [String: JSONValue]
    /// A direct upstream task whose result (a JSON object) is merged over `conf`.
    public var confFromResultOf: String?
    public var wait: Bool

    /// Tasks the scheduler runs itself are queued on this queue, which no worker consumes.
    public static let internalQueue = "flowkit.internal"
}

/// A flow-level trigger: start a run of this flow when a run of `flow` succeeds, once per
/// upstream run. With `passConf`, the upstream run's conf becomes the new run's conf (keys the
/// flow declares as params; the rest are dropped). With `passResults`, the upstream tasks'
/// results reach the new run's context in `triggeringEvents[0].extra.results`.
public struct FlowTrigger: Sendable, Hashable, Codable {
    public var flow: String
    public var passConf: Bool
    public var passResults: Bool

    /// When a run of `flow` succeeds.
    public static func success(of flow: String, passConf: Bool = false, passResults: Bool = false) -> FlowTrigger {
        FlowTrigger(flow: flow, passConf: passConf, passResults: passResults)
    }

    /// The URI under which an upstream run's success shows in `triggeringEvents`.
    public static func uri(_ flow: String) -> String { "flow://\(flow)" }
}

extension FlowBuilder {
    /// A task that starts a run of `flow` (see `TriggerFlowSpec`): `conf` is the child's conf,
    /// with the result of `confFromResultOf` (a direct upstream task returning an object) merged
    /// over it; `wait` makes the task end as the child run ends. Retries re-check the same child.
    @discardableResult
    public func triggerFlow(_ id: String, flow: String, conf: [String: JSONValue] = [:], confFromResultOf: TaskRef? = nil,
                            wait: Bool = false, after upstream: [TaskRef] = [], retry: RetryPolicy? = nil,
                            triggerRule: TriggerRule? = nil, description: String = "", fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        let ups = upstream.map(\.id) + (confFromResultOf.map { [$0.id] } ?? [])
        var seen = Set<String>()
        return add(FlowTask(id: id, body: .triggerFlow(TriggerFlowSpec(flow: flow, conf: conf, confFromResultOf: confFromResultOf?.id, wait: wait)),
                            upstream: ups.filter { seen.insert($0).inserted },
                            options: .init(retry: retry, queue: TriggerFlowSpec.internalQueue, triggerRule: triggerRule),
                            description: description))
    }
}
