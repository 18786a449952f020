import Foundation

/// What a task does when it runs.
public enum TaskBody: Sendable {
    /// Swift code; the value it returns is the task's result, readable by downstream tasks.
    case closure(@Sendable (TaskContext) async throws -> JSONValue?)
    /// A process; its last line of stdout, parsed as JSON when it is JSON, is the result.
    case shell(ShellCommand)
    /// A task executed by a Celery worker under this name (e.g. a Python task).
    case celery(name: String)
    /// A branch: Swift code that returns the ids of the direct downstream tasks to follow; the
    /// others are skipped (and the skip propagates). Its result is that list.
    case branch(@Sendable (TaskContext) async throws -> [String])
    /// A sensor (`FlowBuilder.sensor`): pokes `check` on the schedule of its spec.
    case sensor(SensorSpec, SensorCheck)
    /// A run of another flow, started by the scheduler (`FlowBuilder.triggerFlow`).
    case triggerFlow(TriggerFlowSpec)
    /// SQL run by a worker against a named connection (`FlowBuilder.sql`).
    case sql(SQLTaskSpec)
    /// A Python function run by a worker in a subprocess (`FlowBuilder.python`).
    case python(PythonTaskSpec)
    /// A dbt command run by a worker (`FlowBuilder.dbt`, `FlowBuilder.dbtModels`).
    case dbt(DbtTaskSpec)
    /// An object-storage operation run by a worker (`FlowBuilder.s3`).
    case s3(S3TaskSpec)
    /// A decision by a person, awaited by the scheduler (`FlowBuilder.approval`).
    case approval(ApprovalSpec)

    var kind: String {
        switch self {
        case .closure: return "swift"
        case .shell: return "shell"
        case .celery: return "celery"
        case .branch: return TaskBody.branchKind
        case .sensor: return "sensor"
        case .triggerFlow: return TaskBody.triggerFlowKind
        case .sql: return "sql"
        case .python: return "python"
        case .dbt: return "dbt"
        case .s3: return "s3"
        case .approval: return TaskBody.approvalKind
        }
    }

    /// The `kind` of a branch task in a flow's definition.
    public static let branchKind = "branch"
    /// The `kind` of a task that starts another flow's run.
    public static let triggerFlowKind = "trigger_flow"
    /// The `kind` of a task that waits for a person's decision.
    public static let approvalKind = "approval"
}

/// One task of a flow: an id, what it runs, its upstream tasks and options.
public struct FlowTask: Sendable {
    public let id: String
    public let body: TaskBody
    public internal(set) var upstream: [String]
    public var options: TaskOptions
    public var description: String
    /// Set on a mapped task (`FlowBuilder.map`): what it expands over, and its cap.
    public internal(set) var mapOver: MapSource?
    public internal(set) var maxMapLength: Int?
    /// A Celery task that also receives `flowkit_context` (`FlowBuilder.celery(context: true)`).
    public internal(set) var celeryContext = false
    /// Where the flow's code declares it (`Flows/Examples.swift:42`, from `#fileID` and `#line`).
    /// Not part of the flow's definition or hash: moving code makes no new version.
    public internal(set) var declaredAt: String?

    /// The connections the task needs: those it declares and the one its SQL or S3 body names.
    public var neededConnections: [String] {
        var named: String?
        switch body {
        case .sql(let spec): named = spec.connection
        case .s3(let spec): named = spec.connection
        default: break
        }
        return TaskNeeds.merge(options.connections, named)
    }

    /// The variables the task declares.
    public var neededVariables: [String] { TaskNeeds.merge(options.variables, nil) }

    public init(id: String, body: TaskBody, upstream: [String] = [], options: TaskOptions = .init(), description: String = "") {
        self.id = id
        self.body = body
        self.upstream = upstream
        self.options = options
        self.description = description
    }
}

/// The largest result a task may return, in bytes of compact JSON; results travel through
/// Redis and PostgreSQL and are handed to every downstream task.
public let maxResultBytes = 64 * 1024

/// Checks a task's result against `maxResultBytes`.
public func checkResultSize(_ value: JSONValue, task: String) throws -> String {
    let json = value.compactJSON
    if json.utf8.count > maxResultBytes {
        throw TaskError("task `\(task)` returned a result of \(json.utf8.count) bytes; results are capped at \(maxResultBytes) bytes — write large data to storage and return its location")
    }
    return json
}

/// What a task needs from the connections and variables store.
public enum TaskNeeds {
    /// `declared` and `named`, without repeats, sorted.
    static func merge(_ declared: [String]?, _ named: String?) -> [String] {
        var all = Set(declared ?? [])
        if let named, !named.isEmpty { all.insert(named) }
        return all.sorted()
    }

    /// Whether `name` may name a connection or variable: 1–250 letters, digits, `_`, `-` and `.`
    /// (what an environment variable can carry once upper-cased, plus `-` and `.`).
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 250
            && name.unicodeScalars.allSatisfy { ($0.isASCII && (CharacterSet.alphanumerics.contains($0))) || "_-.".unicodeScalars.contains($0) }
    }

    /// Variables whose values are masked in logs and for API readers, as Airflow masks them: a
    /// key containing `password`, `secret`, `passwd`, `authorization`, `api_key`, `apikey`,
    /// `access_token` or `private_key`.
    public static func isSensitiveVariable(_ key: String) -> Bool {
        let k = key.lowercased()
        return ["password", "secret", "passwd", "authorization", "api_key", "apikey", "access_token", "private_key"].contains { k.contains($0) }
    }

    /// Query options of a connection URL whose values are secrets: masked in what the API shows
    /// of a stored connection and in task logs alike.
    public static let secretURLOptions: Set<String> = ["password", "secret", "token", "session_token", "sslpassword", "api_key", "apikey", "access_token"]

    /// The environment variable a worker may set to override the stored `name`.
    public static func environmentName(connection name: String) -> String { "FLOWKIT_CONN_\(envSafe(name))" }
    public static func environmentName(variable name: String) -> String { "FLOWKIT_VAR_\(envSafe(name))" }
    static func envSafe(_ name: String) -> String { String(name.uppercased().map { $0 == "." || $0 == "-" ? "_" : $0 }) }
    /// The key `namedConnections` / `namedVariables` give the worker's own value of `name`.
    public static func environmentKey(_ name: String) -> String { envSafe(name).lowercased() }
}

extension TaskRef {
    /// Declares connections and variables the task uses (`ctx.connection`, `ctx.variable`):
    /// `f.task("report") { … }.needs(connections: ["warehouse"], variables: ["threshold"])`.
    @discardableResult
    public func needs(connections: [String] = [], variables: [String] = []) -> TaskRef {
        builder.declare(index, connections: connections, variables: variables)
        return self
    }
}

extension FlowBuilder {
    func declare(_ index: Int, connections: [String], variables: [String]) {
        var o = tasks[index].options
        if !connections.isEmpty { o.connections = TaskNeeds.merge((o.connections ?? []) + connections, nil) }
        if !variables.isEmpty { o.variables = TaskNeeds.merge((o.variables ?? []) + variables, nil) }
        tasks[index].options = o
    }
}
