public import FlowKit

// The API's request bodies, one Swift type each: `flowctl` encodes them and FlowServer decodes
// them (camelCase or snake_case keys), so a field of the wrong type is a 400 naming it.

/// `POST /api/v1/flows/{flow_id}/runs`.
public struct TriggerBody: Codable, Sendable {
    public var conf: [String: JSONValue]?
    public var logicalDate: String?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["conf": "a JSON object", "logicalDate": "an ISO-8601 instant"]
    public init(conf: [String: JSONValue]? = nil, logicalDate: String? = nil) { self.conf = conf; self.logicalDate = logicalDate }
}

/// `POST /api/v1/flows/{flow_id}/backfill`.
public struct BackfillBody: Codable, Sendable {
    public var from: String
    public var to: String
    public var conf: [String: JSONValue]?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["from": "an ISO-8601 instant", "to": "an ISO-8601 instant", "conf": "a JSON object"]
    public init(from: String, to: String, conf: [String: JSONValue]? = nil) { self.from = from; self.to = to; self.conf = conf }
}

/// `POST /api/v1/backfills`: a backfill object (or, with `dryRun`, what it would do).
public struct BackfillCreateBody: Codable, Sendable {
    public var flowId: String
    public var from: String
    public var to: String
    public var conf: [String: JSONValue]?
    /// `none` (default), `failed` or `all`.
    public var reprocess: String?
    public var maxActiveRuns: Int?
    /// Newest tick first (default: oldest first).
    public var newestFirst: Bool?
    public var dryRun: Bool?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["flowId": "a flow id", "from": "an ISO-8601 instant", "to": "an ISO-8601 instant", "conf": "a JSON object",
                                "reprocess": "none, failed or all", "maxActiveRuns": "a whole number from 1 to 1000",
                                "newestFirst": "true or false", "dryRun": "true or false"]
    public init(flowId: String, from: String, to: String, conf: [String: JSONValue]? = nil, reprocess: String? = nil, maxActiveRuns: Int? = nil,
                newestFirst: Bool? = nil, dryRun: Bool? = nil) {
        self.flowId = flowId; self.from = from; self.to = to; self.conf = conf; self.reprocess = reprocess
        self.maxActiveRuns = maxActiveRuns; self.newestFirst = newestFirst; self.dryRun = dryRun
    }
}

/// `POST /api/v1/runs/{run_id}/clear`.
public struct ClearBody: Codable, Sendable {
    public var taskIds: [String]?
    public var onlyFailed: Bool?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["taskIds": "an array of task ids", "onlyFailed": "true or false"]
    public init(taskIds: [String]? = nil, onlyFailed: Bool? = nil) { self.taskIds = taskIds; self.onlyFailed = onlyFailed }
}

/// `POST /api/v1/runs/{run_id}/tasks/{task_id}/mark`.
public struct MarkBody: Codable, Sendable {
    public var state: String
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["state": "\"success\" or \"failed\""]
    public init(state: String) { self.state = state }
}

/// `POST /api/v1/runs/{run_id}/tasks/{task_id}/decision`: a decision on an approval task.
public struct DecisionBody: Codable, Sendable {
    public var decision: String
    public var comment: String?
    /// The approval form's values (its fields without a default are required, unless rejecting).
    public var values: [String: JSONValue]?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["decision": "one of the approval's options", "comment": "a string", "values": "a JSON object of the form's fields"]
    public init(decision: String, comment: String? = nil, values: [String: JSONValue]? = nil) {
        self.decision = decision; self.comment = comment; self.values = values
    }
}

/// `POST /api/v1/assets/events`.
public struct AssetEventBody: Codable, Sendable {
    public var uri: String
    public var extra: [String: JSONValue]?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["uri": "a string, scheme://name", "extra": "a JSON object"]
    public init(uri: String, extra: [String: JSONValue]? = nil) { self.uri = uri; self.extra = extra }
}

/// `PUT /api/v1/pools/{pool}`.
public struct PoolBody: Codable, Sendable {
    public var slots: Int
    public var description: String?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["slots": "a whole number of slots, 0 or more",
                         "description": "a string of at most 1,000 bytes, without NUL characters"]
    public init(slots: Int, description: String? = nil) { self.slots = slots; self.description = description }
}

/// `PUT /api/v1/connections/{name}`.
public struct ConnectionBody: Codable, Sendable {
    public var uri: String
    public var description: String?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["uri": "a string: the connection's URL, e.g. postgresql://user:password@host:5432/db",
                         "description": "a string"]
    public init(uri: String, description: String? = nil) { self.uri = uri; self.description = description }
}

/// `PUT /api/v1/variables/{key}`: any JSON value (a string is kept as it is, anything else as its JSON text).
public struct VariableBody: Codable, Sendable {
    public var value: JSONValue?
    public var description: String?
    /// What each field holds, in words: the 400 that names a field says it.
    public static let fields = ["value": "a string, or any JSON value stored as its JSON text", "description": "a string"]
    public init(value: JSONValue? = nil, description: String? = nil) { self.value = value; self.description = description }
}
