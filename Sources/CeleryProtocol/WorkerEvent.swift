public import FlowJSON
public import Foundation

/// What a worker reports to the schedulers through the `flowkit:events` stream.
public struct WorkerEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case started, heartbeat, log, succeeded, failed, skipped, cancelled
        /// A sensor's poke found its condition not met yet (`error` says why).
        case rescheduled
        case workerOnline = "worker_online"
        case workerOffline = "worker_offline"
    }

    public var kind: Kind
    public var worker: String
    /// Seconds since 1970 when it happened on the worker.
    public var at: Double
    public var messageId: String?
    public var runId: String?
    public var taskId: String?
    public var tryNumber: Int?
    /// When the try started on the worker (outcome events of tries too short to report their start).
    public var startedAt: Double?
    public var result: JSONValue?
    public var error: String?
    public var lines: [String]?
    /// Message ids the worker is running (heartbeats).
    public var running: [String]?
    /// Host, pid, queues, concurrency and version (worker_online).
    public var info: JSONValue?

    public init(kind: Kind, worker: String, at: Date = Date(), messageId: String? = nil, runId: String? = nil,
                taskId: String? = nil, tryNumber: Int? = nil, result: JSONValue? = nil, error: String? = nil,
                lines: [String]? = nil, running: [String]? = nil, info: JSONValue? = nil) {
        self.kind = kind; self.worker = worker; self.at = at.timeIntervalSince1970; self.messageId = messageId
        self.runId = runId; self.taskId = taskId; self.tryNumber = tryNumber; self.result = result
        self.error = error; self.lines = lines; self.running = running; self.info = info
    }

    /// `XADD` arguments for this event (the stream is capped, approximately, at a million entries).
    public func xaddCommand() -> [String] {
        ["XADD", FlowKitKeys.events, "MAXLEN", "~", "1000000", "*", "e", json]
    }

    public static func decode(_ json: String) throws -> WorkerEvent {
        try WorkerEvent(json: json)
    }
}

/// The FlowKit part of a task message's kwargs: which run, task and try it is.
public struct FlowTaskInvocation: Codable, Sendable, Equatable {
    public var flowId: String
    public var runId: String
    public var taskId: String
    public var tryNumber: Int
    public var logicalDate: Double
    public var dataIntervalStart: Double
    public var dataIntervalEnd: Double
    public var params: [String: JSONValue]
    public var upstream: [String: JSONValue]
    public var timeoutSeconds: Double?
    /// In an external run sensor's poke: the watched run as the scheduler saw it.
    public var externalRun: JSONValue?
    /// In a run started by assets: the events that started it.
    public var triggeringEvents: JSONValue?
    /// In an instance of a mapped task (`taskId` is `task[index]`): its index and element.
    public var mapIndex: Int?
    public var mapItem: JSONValue?
    /// The run's flow version and its content hash: a worker whose own flow hashes differently
    /// hands the message back for one that has it (absent in messages from older schedulers).
    public var flowVersion: Int?
    public var flowHash: String?
    /// Connections and variables from the store that the task declares, each still sealed with
    /// the keys the workers share (`{"connections": {name: "fk1:…"}, "variables": {…}}`).
    public var secrets: JSONValue?

    public init(flowId: String, runId: String, taskId: String, tryNumber: Int, logicalDate: Date, dataIntervalStart: Date,
                dataIntervalEnd: Date, params: [String: JSONValue], upstream: [String: JSONValue], timeoutSeconds: Double?,
                mapIndex: Int? = nil, mapItem: JSONValue? = nil) {
        self.flowId = flowId; self.runId = runId; self.taskId = taskId; self.tryNumber = tryNumber
        self.logicalDate = logicalDate.timeIntervalSince1970
        self.dataIntervalStart = dataIntervalStart.timeIntervalSince1970
        self.dataIntervalEnd = dataIntervalEnd.timeIntervalSince1970
        self.params = params; self.upstream = upstream; self.timeoutSeconds = timeoutSeconds
        self.mapIndex = mapIndex; self.mapItem = mapItem
    }

    /// The kwargs key that carries it.
    public static let kwarg = "flowkit"

    /// The Celery task name FlowKit uses for a flow's task.
    public static func taskName(flow: String, task: String) -> String { "flowkit.\(flow).\(task)" }
}
