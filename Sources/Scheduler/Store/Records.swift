public import FlowKit
public import Foundation
import PostgresClient

/// A flow as the API shows it.
public struct FlowRecord: Codable, Sendable {
    public var flowId: String
    public var version: Int
    public var hash: String
    public var isActive: Bool
    public var isPaused: Bool
    public var schedule: String?
    public var timezone: String
    public var nextRunAt: Date?
    public var description: String
    public var owner: String
    public var tags: [String]
    public var definition: FlowDefinition?
    public var latestRuns: [RunRecord]?
    /// The newest run's id, state and time (its end, else its start, else its creation): what a
    /// dashboard's flow list shows without a call per row.
    public var latestRun: LatestRun?
    /// The last 10 runs, newest first (flow lists).
    public var recentRuns: [LatestRun]?
    /// What starts its runs besides its schedule and manual triggers, in words: `assets: s3://a`,
    /// `webhook`, `after: upstream_flow` (absent when nothing does).
    public var triggers: [String]?
    /// The connections and variables its tasks need and whether the store holds them (flow
    /// detail only; absent when it needs none).
    public var needs: FlowNeeds?
    /// Where the flow and its tasks are declared in code (flow detail only):
    /// `{"flow": "Flows/Examples.swift:12", "tasks": {"extract": "Flows/Examples.swift:20"}}`.
    public var source: JSONValue?
}

/// A flow that could not be registered (an import error), as the API shows it.
public struct ImportErrorRecord: Codable, Sendable, Equatable {
    public var flowId: String
    public var message: String
    /// The scheduler that found it.
    public var reportedBy: String
    public var at: Date
}

/// A flow's grid (`SchedulerStore.grid`): tasks × recent runs.
public struct FlowGrid: Codable, Sendable {
    public var flowId: String
    public var version: Int
    public var tasks: [GridTask]
    /// Newest first.
    public var runs: [RunRecord]
    /// By run id, then task id.
    public var cells: [String: [String: GridCell]]
}

public struct GridTask: Codable, Sendable {
    public var id: String
    public var kind: String
    public var upstream: [String]
    public var mapped: Bool
}

public struct GridCell: Codable, Sendable {
    public var state: String
    public var tryNumber: Int
    /// From its start to its end (or now, while it runs).
    public var seconds: Double?
    /// A mapped task's instances by state.
    public var instances: [String: Int] = [:]
}

public struct LatestRun: Codable, Sendable, Equatable {
    public var runId: String
    public var state: String
    public var at: Date
}

/// A flow run.
public struct RunRecord: Codable, Sendable {
    public var id: Int
    public var runId: String
    public var flowId: String
    public var flowVersion: Int
    public var triggerKind: String
    public var state: String
    public var conf: JSONValue
    public var logicalDate: Date
    public var dataIntervalStart: Date
    public var dataIntervalEnd: Date
    public var createdAt: Date
    public var startedAt: Date?
    public var endedAt: Date?
    /// Its task instances by state, in run lists and single-run reads (absent elsewhere).
    public var taskCounts: [String: Int]?
    /// When it should have ended by (its flow's deadline), and `met` or `missed` once decided.
    public var deadlineAt: Date?
    public var deadlineState: String?
    /// The run that started it: the upstream run (a flow declared `after:`) or the parent run of a trigger-flow task.
    public var triggeredBy: String?
    /// Why it cannot go on by itself, while that lasts: no live worker carries its flow version
    /// (or consumes a queue it waits on).
    public var stalledReason: String?

    static let columns = """
        r.id, r.run_id, r.flow_id, r.flow_version, r.trigger_kind, r.state, r.conf::text AS conf, r.logical_date,
        r.data_interval_start, r.data_interval_end, r.created_at, r.started_at, r.ended_at, r.deadline_at, r.deadline_state, r.triggered_by,
        r.stalled_reason
        """

    init(row: PGRow) throws(PGDecodingError) {
        id = try row.int("id")
        runId = try row.string("run_id")
        flowId = try row.string("flow_id")
        flowVersion = try row.int("flow_version")
        triggerKind = try row.string("trigger_kind")
        state = try row.string("state")
        conf = try row.json("conf")
        logicalDate = try row.date("logical_date")
        dataIntervalStart = try row.date("data_interval_start")
        dataIntervalEnd = try row.date("data_interval_end")
        createdAt = try row.date("created_at")
        startedAt = try row.dateOrNull("started_at")
        endedAt = try row.dateOrNull("ended_at")
        deadlineAt = try row.dateOrNull("deadline_at")
        deadlineState = try row.stringOrNull("deadline_state")
        triggeredBy = try row.stringOrNull("triggered_by")
        stalledReason = try row.stringOrNull("stalled_reason")
        // Only the statements that ask for it have it (`taskCountsColumn`).
        taskCounts = try row.has("task_counts") ? row.jsonOrNull("task_counts")?.objectValue?.compactMapValues(\.intValue) : nil
    }

    /// `task_counts` for `RunRecord.init`: a run's task instances by state (`r` is the run).
    static let taskCountsColumn = """
        (SELECT COALESCE(jsonb_object_agg(state, n), '{}')::text FROM
           (SELECT state, count(*) AS n FROM task_instances WHERE run_pk = r.id GROUP BY state) c) AS task_counts
        """
}

/// One try of a task instance.
public struct TaskTryRecord: Codable, Sendable {
    public var tryNumber: Int
    public var messageId: String
    public var state: String
    public var queuedAt: Date?
    public var startedAt: Date?
    public var endedAt: Date?
    public var worker: String?
    public var result: JSONValue?
    public var error: String?
}

/// A task instance of a run, with every try.
public struct TaskInstanceRecord: Codable, Sendable {
    public var taskId: String
    public var state: String
    public var tryNumber: Int
    public var maxTries: Int
    public var queue: String
    public var priority: Int
    public var queuedAt: Date?
    public var startedAt: Date?
    public var endedAt: Date?
    public var nextAttemptAt: Date?
    public var worker: String?
    public var result: JSONValue?
    public var error: String?
    public var tries: [TaskTryRecord]
    /// On an instance of a mapped task (`double[3]`): its mapped task and index.
    public var mapParent: String?
    public var mapIndex: Int?
    /// On a mapped task: how many instances it expanded into (absent before it expands).
    public var mapLength: Int?
    /// Its pool, if any; and, while it waits `queued` for a slot, why.
    public var pool: String?
    public var waitReason: String?
}

/// A log line of one try.
public struct LogLine: Codable, Sendable {
    public var offset: Int
    public var at: Date
    public var line: String
}

/// A worker as the schedulers last heard of it.
public struct WorkerRecord: Codable, Sendable {
    public var name: String
    public var host: String
    public var pid: Int?
    public var queues: [String]
    public var concurrency: Int
    public var version: String?
    public var state: String
    public var running: Int
    public var startedAt: Date
    public var heartbeatAt: Date
    public var heartbeatAgeSeconds: Double
    /// The flow versions this worker's binary carries (absent for workers that did not say).
    public var flows: [WorkerFlow]?
}

/// One flow version a worker carries: its registered version number (absent when no scheduler
/// registered that hash) and its content hash.
public struct WorkerFlow: Codable, Sendable, Equatable {
    public var flowId: String
    public var version: Int?
    public var hash: String
}

/// Filters and a keyset cursor for listing runs.
public struct RunFilter: Sendable {
    public var flowId: String?
    public var state: String?
    public var since: Date?
    public var until: Date?
    /// Return runs with an internal id below this one (the `next` cursor of the previous page).
    public var before: Int?
    public var limit: Int = 50
    /// Also read each run's task counts by state (one more statement in the same round trip).
    public var withTaskCounts = false
    /// Only runs of this trigger kind (scheduled, manual, backfill, asset, webhook, flow).
    public var kind: String?
    public init(flowId: String? = nil, state: String? = nil, since: Date? = nil, until: Date? = nil, before: Int? = nil, limit: Int = 50) {
        self.flowId = flowId; self.state = state; self.since = since; self.until = until; self.before = before; self.limit = limit
    }
}

/// A state conflict the user should hear about (HTTP 409).
public struct StateConflict: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A request the store refuses as invalid (HTTP 400).
public struct BadRequest: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Something that does not exist (HTTP 404).
public struct NotFound: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension JSONValue {
    /// The JSON text for a `jsonb` column: jsonb refuses `\u0000` (22P05), so NUL characters in
    /// strings and keys become U+FFFD, as in text columns (`String.pgText`).
    var jsonbText: String { withoutNUL.compactJSON }

    private var withoutNUL: JSONValue {
        func clean(_ s: String) -> String { s.utf8.contains(0) ? s.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : s }
        switch self {
        case .string(let s): return .string(clean(s))
        case .array(let a): return .array(a.map(\.withoutNUL))
        case .object(let o): return .object(Dictionary(o.map { (clean($0.key), $0.value.withoutNUL) }, uniquingKeysWith: { a, _ in a }))
        default: return self
        }
    }
}

/// A record read from one row: `init(row:)` reads its columns through `PGRow`'s throwing
/// accessors, so a column the statement lacks, a NULL or a value of another type is an error
/// naming the column, its table and the statement — never a crash or a silent default.
protocol RowDecodable {
    init(row: PGRow) throws(PGDecodingError)
}

extension PGResult {
    /// Every row as `T`.
    func decode<T: RowDecodable>(_ type: T.Type = T.self) throws(PGDecodingError) -> [T] {
        var out: [T] = []
        out.reserveCapacity(rows.count)
        for r in all { out.append(try T(row: r)) }
        return out
    }
    /// The first row as `T`, nil when there is none.
    func decodeFirst<T: RowDecodable>(_ type: T.Type = T.self) throws(PGDecodingError) -> T? {
        guard let r = first else { return nil }
        return try T(row: r)
    }
}

extension PGRow {
    /// A `jsonb`/`json` column (or one cast to text), parsed; NULL is nil.
    func jsonOrNull(_ column: String) throws(PGDecodingError) -> JSONValue? {
        try parsedOrNull(column, as: "JSON") { try? JSONValue.parse($0) }
    }
    func json(_ column: String) throws(PGDecodingError) -> JSONValue {
        try parsed(column, as: "JSON") { try? JSONValue.parse($0) }
    }
    /// A text column holding one of `T`'s raw values.
    func enumValue<T: RawRepresentable>(_ column: String, as type: T.Type = T.self) throws(PGDecodingError) -> T where T.RawValue == String {
        try parsed(column, as: "a \(T.self)") { T(rawValue: $0) }
    }
}

extension RunRecord: RowDecodable {}
extension AssetRecord: RowDecodable {}
extension ConnectionRecord: RowDecodable {}
extension PoolRecord: RowDecodable {}
