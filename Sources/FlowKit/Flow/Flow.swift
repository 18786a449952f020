import Foundation

/// A flow: a named graph of tasks with a schedule — FlowKit's DAG.
///
/// ```swift
/// let flow = Flow("diamond", schedule: .cron("0 6 * * *", timeZone: "Europe/Madrid")) { f in
///     let extract = f.task("extract") { ctx in ["rows": 10] }
///     let left = f.task("left") { _ in nil }
///     let right = f.shell("right", script: "echo right")
///     let join = f.task("join") { ctx in ctx.upstream["left"] }
///     extract --> [left, right] --> join
///     join --> f.task("publish") { _ in nil }
/// }
/// ```
public struct Flow: Sendable {
    public let id: String
    public var description: String
    public var owner: String
    public var tags: [String]
    /// The version of this flow's code, when a change to a task's code alone (which the
    /// definition does not show) must reach only runs started after it: part of the content
    /// hash that pins each run to the workers that carry its version. `FLOWKIT_FLOWS_VERSION`
    /// sets it for every flow that sets none (an image tag, a git commit).
    public var version: String?
    public var schedule: Schedule?
    /// When off (the default), a scheduler that was down runs only the latest missed tick.
    public var catchup: Bool
    public var maxActiveRuns: Int
    /// At most this many of the flow's task instances queued or running at once, across its
    /// runs (Airflow's `max_active_tasks`). Nil: no limit.
    public var maxActiveTasks: Int?
    /// A run still unfinished this long after it started ends `failed`; its unfinished tasks are
    /// cancelled (Airflow's `dagrun_timeout`). Nil: no limit.
    public var runTimeout: Duration?
    /// When a run should have finished (an SLA): past it, `onDeadlineMiss` fires once. The run
    /// goes on; `runTimeout` is what stops one.
    public var deadline: RunDeadline?
    /// Data-aware scheduling: a run starts when every one of these assets has had an event since
    /// the flow's last asset-triggered run (with a cron `schedule` too, either one starts a run,
    /// like Airflow 3's `AssetOrTimeSchedule`).
    public var assets: [String]
    /// Starts runs from `POST /api/v1/hooks/{flow}` (nil: no hook).
    public var webhook: WebhookTrigger?
    /// Flow-to-flow triggers: a run starts when a run of one of these flows succeeds.
    public var after: [FlowTrigger]
    public var params: [Param]
    /// Who hears about failures, retries and ends (tasks may choose their own task events).
    public var notify: Notifications
    /// Options every task takes unless it sets its own.
    public var defaults: TaskOptions
    /// Where the flow is declared (`Flows/Examples.swift:12`); not part of its definition or hash.
    public var declaredAt: String?

    /// Where the flow and each task are declared: `{"flow": "File.swift:12", "tasks": {"id": "File.swift:20"}}`.
    public var sourceLocations: JSONValue {
        var tasksAt: [String: JSONValue] = [:]
        for t in tasks { if let at = t.declaredAt { tasksAt[t.id] = .string(at) } }
        return ["flow": declaredAt.map(JSONValue.string) ?? .null, "tasks": .object(tasksAt)]
    }
    public private(set) var tasks: [FlowTask]

    public init(_ id: String, description: String = "", owner: String = "data-team", tags: [String] = [], version: String? = nil,
                schedule: Schedule? = nil, catchup: Bool = false, maxActiveRuns: Int = 16, maxActiveTasks: Int? = nil, runTimeout: Duration? = nil,
                deadline: RunDeadline? = nil, assets: [String] = [], webhook: WebhookTrigger? = nil, after: [FlowTrigger] = [],
                params: [Param] = [], notify: Notifications = .init(), defaults: TaskOptions = .init(),
                fileID: String = #fileID, line: Int = #line, build: (FlowBuilder) -> Void) {
        self.id = id
        self.declaredAt = "\(fileID):\(line)"
        self.description = description
        self.owner = owner
        self.tags = tags
        self.version = version
        self.schedule = schedule
        self.catchup = catchup
        self.maxActiveRuns = maxActiveRuns
        self.maxActiveTasks = maxActiveTasks
        self.runTimeout = runTimeout
        self.deadline = deadline
        self.assets = assets
        self.webhook = webhook
        self.after = after
        self.params = params
        self.notify = notify
        self.defaults = defaults
        let builder = FlowBuilder()
        build(builder)
        self.tasks = builder.tasks
    }

    public func task(_ id: String) -> FlowTask? { tasks.first { $0.id == id } }

    /// Changes one task in place (for tests and tools that rewrite flows).
    mutating func replaceTask(_ id: String, _ change: (inout FlowTask) -> Void) {
        if let i = tasks.firstIndex(where: { $0.id == id }) { change(&tasks[i]) }
    }

    /// A task's options with the flow's defaults filled in, and FlowKit's own defaults last.
    public func effectiveOptions(_ task: FlowTask) -> TaskOptions {
        var o = task.options.merged(over: defaults)
        o.retry = o.retry ?? RetryPolicy.none
        o.queue = o.queue ?? defaultQueue
        o.priority = o.priority ?? 0
        o.triggerRule = o.triggerRule ?? .allSuccess
        return o
    }
}

/// Collects a flow's tasks and their dependencies while the flow is declared.
public final class FlowBuilder {
    var tasks: [FlowTask] = []

    init() {}

    /// A Swift task. The closure's return value is the task's result.
    @discardableResult
    public func task(_ id: String, after upstream: [TaskRef] = [], description: String = "",
                     retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil,
                     priority: Int? = nil, triggerRule: TriggerRule? = nil, pool: String? = nil, poolSlots: Int? = nil,
                     maxActiveTisPerFlow: Int? = nil, notify: Notifications? = nil, outlets: [String]? = nil,
                     connections: [String] = [], variables: [String] = [], fileID: String = #fileID, line: Int = #line,
                     _ body: @escaping @Sendable (TaskContext) async throws -> JSONValue?) -> TaskRef {
        declaring(fileID, line)
        var options = TaskOptions(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule,
                                  pool: pool, poolSlots: poolSlots, maxActiveTisPerFlow: maxActiveTisPerFlow)
        options.notify = notify
        options.outlets = outlets
        return add(FlowTask(id: id, body: .closure(body), upstream: upstream.map(\.id), options: options, description: description))
            .needs(connections: connections, variables: variables)
    }

    /// A shell task running `script` with `/bin/sh -c`.
    @discardableResult
    public func shell(_ id: String, script: String, environment: [String: String] = [:], workingDirectory: String? = nil,
                      after upstream: [TaskRef] = [], description: String = "", retry: RetryPolicy? = nil,
                      timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil,
                      triggerRule: TriggerRule? = nil, pool: String? = nil, poolSlots: Int? = nil,
                      maxActiveTisPerFlow: Int? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        return add(FlowTask(id: id, body: .shell(.script(script, environment: environment, workingDirectory: workingDirectory)),
                     upstream: upstream.map(\.id),
                     options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule,
                                    pool: pool, poolSlots: poolSlots, maxActiveTisPerFlow: maxActiveTisPerFlow),
                     description: description))
    }

    /// A shell task running `argv` directly, with no shell in between.
    @discardableResult
    public func shell(_ id: String, argv: [String], environment: [String: String] = [:], workingDirectory: String? = nil,
                      after upstream: [TaskRef] = [], description: String = "", retry: RetryPolicy? = nil,
                      timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil,
                      triggerRule: TriggerRule? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        return add(FlowTask(id: id, body: .shell(ShellCommand(argv: argv, environment: environment, workingDirectory: workingDirectory)),
                     upstream: upstream.map(\.id),
                     options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule),
                     description: description))
    }

    /// A branch (Airflow's `@task.branch`): returns the ids of the direct downstream tasks to
    /// follow; the others are skipped, and the skip propagates. Join the branches with
    /// `triggerRule: .noneFailedMinOneSuccess`. Returning an id that is not a direct downstream
    /// task fails the try, naming the valid ones.
    @discardableResult
    public func branch(_ id: String, after upstream: [TaskRef] = [], description: String = "",
                       retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil,
                       priority: Int? = nil, triggerRule: TriggerRule? = nil, fileID: String = #fileID, line: Int = #line,
                       _ body: @escaping @Sendable (TaskContext) async throws -> [String]) -> TaskRef {
        declaring(fileID, line)
        return add(FlowTask(id: id, body: .branch(body), upstream: upstream.map(\.id),
                     options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule),
                     description: description))
    }

    /// A task that a Celery worker executes under `name` (for example a Python task), with the
    /// run's params as keyword arguments. With `context: true` it also gets `flowkit_context`:
    /// `{"run_id", "flow_id", "task_id", "try_number", "logical_date", "data_interval_start",
    /// "data_interval_end", "params", "upstream"}` (the direct upstream results).
    @discardableResult
    public func celery(_ id: String, name: String, context: Bool = false, after upstream: [TaskRef] = [], queue: String? = nil,
                       retry: RetryPolicy? = nil, timeout: Duration? = nil, triggerRule: TriggerRule? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        var t = FlowTask(id: id, body: .celery(name: name), upstream: upstream.map(\.id),
                         options: .init(retry: retry, timeout: timeout, queue: queue, triggerRule: triggerRule))
        t.celeryContext = context
        return add(t)
    }

    /// Where the task being declared is declared (`File.swift:line`), set by the public method
    /// the flow's code called; a method calling another keeps its caller's.
    var location: String?

    func declaring(_ file: String, _ line: Int) {
        if location == nil { location = "\(file):\(line)" }
    }

    func add(_ task: FlowTask) -> TaskRef {
        var task = task
        task.declaredAt = location
        location = nil
        tasks.append(task)
        return TaskRef(id: task.id, index: tasks.count - 1, builder: self)
    }

    func addEdge(from upstream: TaskRef, to downstream: TaskRef) {
        if !tasks[downstream.index].upstream.contains(upstream.id) {
            tasks[downstream.index].upstream.append(upstream.id)
        }
    }
}

/// `a --> b --> c` chains left to right, like Airflow's `>>` (Swift's `>>` cannot chain).
precedencegroup FlowDependencyPrecedence {
    associativity: left
    higherThan: AssignmentPrecedence
}
infix operator --> : FlowDependencyPrecedence

/// A task declared in a `FlowBuilder`; `a --> b` makes `b` run after `a`.
public struct TaskRef {
    public let id: String
    let index: Int
    let builder: FlowBuilder
}

@discardableResult
public func --> (lhs: TaskRef, rhs: TaskRef) -> TaskRef {
    lhs.builder.addEdge(from: lhs, to: rhs)
    return rhs
}

@discardableResult
public func --> (lhs: TaskRef, rhs: [TaskRef]) -> [TaskRef] {
    for r in rhs { lhs.builder.addEdge(from: lhs, to: r) }
    return rhs
}

@discardableResult
public func --> (lhs: [TaskRef], rhs: TaskRef) -> TaskRef {
    for l in lhs { l.builder.addEdge(from: l, to: rhs) }
    return rhs
}
