public import FlowKit
public import Foundation

// The API's response bodies, one Swift type each: FlowServer encodes them and `flowctl` decodes
// them (`APIWire.decode`), so the contract is kept in one place. The records inside them
// (`RunRecord`, `FlowRecord`, …) live beside the store that reads them.

/// `GET /api/v1/flows`.
public struct FlowList: Codable, Sendable {
    public var flows: [FlowRecord]
    public var importErrors: [ImportErrorRecord]
    public init(flows: [FlowRecord], importErrors: [ImportErrorRecord]) { self.flows = flows; self.importErrors = importErrors }
}

/// `GET /api/v1/runs`: a page, newest first; `nextCursor` is null on the last page.
public struct RunPage: Codable, Sendable {
    public var runs: [RunRecord]
    public var nextCursor: String?
    public init(runs: [RunRecord], nextCursor: String?) { self.runs = runs; self.nextCursor = nextCursor }
    enum CodingKeys: String, CodingKey { case runs, nextCursor }
    /// `nextCursor` is always present: null on the last page.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runs, forKey: .runs)
        try c.encode(nextCursor, forKey: .nextCursor)
    }
}

/// `GET /api/v1/runs/{run_id}/tasks`.
public struct TaskList: Codable, Sendable {
    public var tasks: [TaskInstanceRecord]
    public init(tasks: [TaskInstanceRecord]) { self.tasks = tasks }
}

/// `GET /api/v1/runs/{run_id}/tasks/{task_id}/logs`.
public struct LogPage: Codable, Sendable {
    public var tryNumber: Int
    public var lines: [LogLine]
    public var nextOffset: Int
    public init(tryNumber: Int, lines: [LogLine], nextOffset: Int) { self.tryNumber = tryNumber; self.lines = lines; self.nextOffset = nextOffset }
}

/// `GET /api/v1/schedulers`.
public struct SchedulerList: Codable, Sendable {
    public var schedulers: [SchedulerRecord]
    public var leaderHeld: Bool
    public init(schedulers: [SchedulerRecord], leaderHeld: Bool) { self.schedulers = schedulers; self.leaderHeld = leaderHeld }
}

/// `GET /api/v1/workers`.
public struct WorkerList: Codable, Sendable {
    public var workers: [WorkerRecord]
    public init(workers: [WorkerRecord]) { self.workers = workers }
}

/// `GET /api/v1/pools`.
public struct PoolList: Codable, Sendable {
    public var pools: [PoolRecord]
    public init(pools: [PoolRecord]) { self.pools = pools }
}

/// `GET /api/v1/assets`.
public struct AssetList: Codable, Sendable {
    public var assets: [AssetRecord]
    public init(assets: [AssetRecord]) { self.assets = assets }
}

/// `GET /api/v1/assets/events`.
public struct AssetEventList: Codable, Sendable {
    public var events: [AssetEventRecord]
    public init(events: [AssetEventRecord]) { self.events = events }
}

/// `POST /api/v1/assets/events`: the event recorded and the runs it started.
public struct AssetEventPosted: Codable, Sendable {
    public var eventId: Int
    public var runs: [String]
    public init(eventId: Int, runs: [String]) { self.eventId = eventId; self.runs = runs }
}

/// `GET /api/v1/notifications`.
public struct NotificationList: Codable, Sendable {
    public var notifications: [NotificationRecord]
    public init(notifications: [NotificationRecord]) { self.notifications = notifications }
}

/// `GET /api/v1/audit`.
public struct AuditPage: Codable, Sendable {
    public var entries: [AuditRecord]
    public init(entries: [AuditRecord]) { self.entries = entries }
}

/// `POST /api/v1/flows/{flow_id}/backfill`.
public struct BackfillCreated: Codable, Sendable {
    public var runs: [RunRecord]
    public init(runs: [RunRecord]) { self.runs = runs }
}

/// `GET /api/v1/approvals`.
public struct ApprovalList: Codable, Sendable {
    public var approvals: [ApprovalRecord]
    public init(approvals: [ApprovalRecord]) { self.approvals = approvals }
}

/// `GET /api/v1/backfills`.
public struct BackfillList: Codable, Sendable {
    public var backfills: [BackfillRecord]
    public init(backfills: [BackfillRecord]) { self.backfills = backfills }
}

/// `DELETE` of a pool, connection or variable.
public struct Deleted: Codable, Sendable {
    public var deleted: String
    public init(deleted: String) { self.deleted = deleted }
}

/// `GET /api/v1/connections` and `GET /api/v1/variables`.
public struct ConnectionList: Codable, Sendable {
    public var connections: [ConnectionRecord]
    public init(connections: [ConnectionRecord]) { self.connections = connections }
}
public struct VariableList: Codable, Sendable {
    public var variables: [VariableRecord]
    public init(variables: [VariableRecord]) { self.variables = variables }
}

/// `GET /api/v1/dead-letters`: a page of the capped list, newest first.
public struct DeadLetterPage: Codable, Sendable {
    public var total: Int
    public var capacity: Int
    public var entries: [JSONValue]
    public init(total: Int, capacity: Int, entries: [JSONValue]) { self.total = total; self.capacity = capacity; self.entries = entries }
}

/// `GET /health`: 200 with `status: ok`, or 503 with `unavailable` when a check fails.
public struct HealthReport: Codable, Sendable {
    public struct FlowError: Codable, Sendable {
        public var flowId: String
        public var message: String
        public init(flowId: String, message: String) { self.flowId = flowId; self.message = message }
    }
    public struct ConfigurationProblem: Codable, Sendable {
        public var notifier: String
        public var message: String
        public var count: Int
        public init(notifier: String, message: String, count: Int) { self.notifier = notifier; self.message = message; self.count = count }
    }
    public var status: String
    /// `postgres`, `redis`, `scheduler`: `ok`, or what is wrong.
    public var checks: [String: String]
    /// Messages waiting per queue (the queues workers consume, and `default`).
    public var queues: [String: Int]?
    public var importErrors: [FlowError]?
    public var configurationProblems: [ConfigurationProblem]?
    public init(status: String, checks: [String: String]) { self.status = status; self.checks = checks }
}

/// How the API writes instants (ISO-8601, milliseconds, UTC) and how clients read them back.
public enum APIWire {
    /// A request body as the JSON it is sent as (absent optionals left out).
    public static func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        try JSONValue.parse(try encoder.encode(value))
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// Decodes a response body into its type.
    public static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try decoder.decode(T.self, from: Data(value.compactJSON.utf8))
    }

    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { dec in
            let c = try dec.singleValueContainer()
            let s = try c.decode(String.self)
            guard let date = Instant.parse(s) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "`\(s)` is not an ISO-8601 instant")
            }
            return date
        }
        return d
    }()
}
