public import Foundation

/// What a running task knows: which flow, run, task and try it is, its dates, its params, its
/// upstream tasks' results, a logger whose lines become the task's log, and cancellation.
public struct TaskContext: Sendable {
    public let flowId: String
    public let runId: String
    public let taskId: String
    public let tryNumber: Int
    public let logicalDate: Date
    public let dataIntervalStart: Date
    public let dataIntervalEnd: Date
    /// The flow's param defaults merged with the trigger's conf.
    public let params: [String: JSONValue]
    /// Results of the tasks this one depends on directly, by task id.
    public let upstream: [String: JSONValue]
    /// Named connections from configuration (`FLOWKIT_CONN_<NAME>`), e.g. `warehouse`.
    public var connections: [String: String]
    /// Variables (`flowctl variables set`) the task declared, as the scheduler sent them, and
    /// the worker's own `FLOWKIT_VAR_<NAME>`.
    public var variables: [String: String] = [:]
    public let log: TaskLogger
    /// Runs the task's commands (`run(_:)`); nil where no process may be started.
    public let commandRunner: (any CommandRunner)?
    /// In a run started by assets: the asset events that started it (`[{"id", "uri", "extra",
    /// "at", "runId", "taskId"}]`, oldest first); nil in other runs.
    public var triggeringEvents: JSONValue?
    /// Loads results of ancestors that are not direct upstream tasks (`result(of:)`).
    public var resultLoader: (any ResultLoader)?
    /// Runs SQL for the SQL sensor; nil where no database may be reached.
    public var sqlRunner: (any SQLRunner)?
    /// In an external run sensor's poke: the watched flow's run for this logical date, as the
    /// scheduler saw it when it sent the poke (`{"flowId", "runId", "state"}`; no `runId` when none exists).
    public var externalRun: JSONValue?
    /// In an instance of a mapped task: its index (from 0) and its element of the list.
    public var mapIndex: Int?
    public var mapItem: JSONValue?
    private let cancelled: @Sendable () -> Bool

    public init(flowId: String, runId: String, taskId: String, tryNumber: Int, logicalDate: Date,
                dataIntervalStart: Date, dataIntervalEnd: Date, params: [String: JSONValue],
                upstream: [String: JSONValue], connections: [String: String] = [:],
                log: TaskLogger, commandRunner: (any CommandRunner)? = nil, mapIndex: Int? = nil, mapItem: JSONValue? = nil,
                isCancelled: @escaping @Sendable () -> Bool = { false }) {
        self.flowId = flowId; self.runId = runId; self.taskId = taskId; self.tryNumber = tryNumber
        self.logicalDate = logicalDate; self.dataIntervalStart = dataIntervalStart; self.dataIntervalEnd = dataIntervalEnd
        self.params = params; self.upstream = upstream; self.connections = connections
        self.log = log; self.commandRunner = commandRunner; self.cancelled = isCancelled
        self.mapIndex = mapIndex; self.mapItem = mapItem
    }

    /// True once the run was cancelled or the try timed out; long tasks should check it.
    public var isCancelled: Bool { cancelled() || Task.isCancelled }

    /// Throws `CancellationError` when the task should stop.
    public func checkCancellation() throws {
        if isCancelled { throw CancellationError() }
    }

    public func param(_ name: String) -> JSONValue? { params[name] }

    /// The result of any ancestor task, by id: a direct upstream task's from `upstream`, others
    /// loaded only when asked (so a long chain's messages do not carry every result before
    /// them). Nil when the task returned nothing or was skipped.
    public func result(of task: String) async throws -> JSONValue? {
        if let r = upstream[task] { return r }
        guard let loader = resultLoader else {
            throw TaskError("task `\(taskId)` cannot load the result of `\(task)` here: only direct upstream results are in this context")
        }
        return try await loader.result(of: task, for: self)
    }

    /// The connection string configured for `name`, or an error naming where to set it.
    public func connection(_ name: String) throws -> String {
        if let c = connections[name] { return c }
        throw TaskError("no connection named `\(name)` reached task `\(taskId)`: declare it on the task (`connections: [\"\(name)\"]`) "
                        + "and set it with `flowctl connections set \(name) --uri URL`, or set \(TaskNeeds.environmentName(connection: name)) on the worker")
    }

    /// The value of variable `key`, or an error naming where to set it.
    public func variable(_ key: String) throws -> String {
        if let v = variables[key] { return v }
        throw TaskError("no variable `\(key)` reached task `\(taskId)`: declare it on the task (`variables: [\"\(key)\"]`) "
                        + "and set it with `flowctl variables set \(key) VALUE`, or set \(TaskNeeds.environmentName(variable: key)) on the worker")
    }

    /// Variable `key` parsed as JSON (`flowctl variables set limits '{"rows": 10}'`).
    public func jsonVariable(_ key: String) throws -> JSONValue {
        let text = try variable(key)
        do { return try JSONValue.parse(text) } catch { throw TaskError("variable `\(key)` is not JSON: \(error)") }
    }
}

/// Where a task's log lines go; each line becomes part of the try's log.
public struct TaskLogger: Sendable {
    private let sink: @Sendable (String) -> Void
    public init(_ sink: @escaping @Sendable (String) -> Void) { self.sink = sink }
    public func info(_ line: String) { sink(line) }
    public func callAsFunction(_ line: String) { sink(line) }
    public static let discard = TaskLogger { _ in }
}

/// A task failure with a message for the user.
public struct TaskError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Thrown by a task to end as `skipped` instead of success (Airflow's `AirflowSkipException`).
public struct TaskSkipped: Error, Sendable {
    public let reason: String
    public init(_ reason: String = "skipped") { self.reason = reason }
}

/// Loads an ancestor's result for `TaskContext.result(of:)`; a FlowKit worker provides one.
public protocol ResultLoader: Sendable {
    func result(of task: String, for context: TaskContext) async throws -> JSONValue?
}
