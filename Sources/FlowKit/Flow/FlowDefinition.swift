import Foundation

/// The stable JSON form of a flow: what the database stores, the API returns, and the
/// scheduler runs from. Keys are sorted, so the same flow always hashes the same.
public struct FlowDefinition: Sendable, Hashable, Codable {
    /// The connections and variables the flow's tasks need, each with the tasks that need it.
    public var needs: (connections: [String: [String]], variables: [String: [String]]) {
        var c: [String: [String]] = [:], v: [String: [String]] = [:]
        for t in tasks {
            for n in t.neededConnections { c[n, default: []].append(t.id) }
            for n in t.neededVariables { v[n, default: []].append(t.id) }
        }
        return (c.mapValues { $0.sorted() }, v.mapValues { $0.sorted() })
    }

    public struct TaskDefinition: Sendable, Hashable, Codable {
        public var id: String
        public var kind: String
        public var description: String
        public var upstream: [String]
        public var retry: RetryPolicy
        public var timeoutSeconds: Double?
        public var queue: String
        public var priority: Int
        public var triggerRule: TriggerRule
        public var command: ShellCommand?
        public var celeryName: String?
        /// True when the Celery task gets `flowkit_context` (absent otherwise, so hashes stay).
        public var celeryContext: Bool?
        /// A mapped task's source and cap (absent on other tasks, so their hashes stay).
        public var mapOver: MapSource?
        public var maxMapLength: Int?
        /// Concurrency limits (absent when unset, so other tasks' hashes stay).
        public var pool: String?
        public var poolSlots: Int?
        public var maxActiveTisPerFlow: Int?
        /// A sensor's poke interval, timeout and soft-fail (absent on other tasks).
        public var sensor: SensorSpec?
        /// Notifiers of its task events, the flow's filled in (absent when none).
        public var notify: Notifications?
        /// Assets its success updates (absent when none).
        public var outlets: [String]?
        /// The run a trigger-flow task starts (absent on other tasks).
        public var triggerFlow: TriggerFlowSpec?
        /// What an approval task asks (absent on other tasks).
        public var approval: ApprovalSpec?
        /// A SQL task's connection, statements and load (absent on other tasks).
        public var sql: SQLTaskSpec?
        /// A Python task's file, source, function and interpreter (absent on other tasks).
        public var python: PythonTaskSpec?
        /// A dbt task's project, command and selection (absent on other tasks).
        public var dbt: DbtTaskSpec?
        /// An S3 task's connection, bucket and operation.
        public var s3: S3TaskSpec?
        /// Connections and variables the task declares (absent when none, so hashes stay); the
        /// connection of a SQL or S3 task is in its spec (`neededConnections` has both).
        public var connections: [String]?
        public var variables: [String]?

        /// The connections the scheduler sends this task from the store.
        public var neededConnections: [String] { TaskNeeds.merge(connections, sql?.connection ?? s3?.connection) }
        /// The variables the scheduler sends this task from the store.
        public var neededVariables: [String] { variables ?? [] }
        /// True when the task's message carries something from the store.
        public var needsStore: Bool { connections != nil || variables != nil || sql != nil || s3 != nil }

        /// True for the tasks the scheduler runs itself (trigger-flow, approval): no worker message.
        public var runsOnScheduler: Bool { triggerFlow != nil || approval != nil }

        /// True when a limit decides when this task may start: it waits `queued` for a slot.
        public var isLimited: Bool { pool != nil || maxActiveTisPerFlow != nil }
    }

    public var id: String
    public var description: String
    public var owner: String
    public var tags: [String]
    /// The flow's declared code version (absent when none, so other flows' hashes stay).
    public var version: String?
    public var schedule: Schedule?
    public var catchup: Bool
    public var maxActiveRuns: Int
    public var maxActiveTasks: Int?
    /// Seconds a run may take (absent: no limit; absent keys keep older flows' hashes).
    public var runTimeoutSeconds: Double?
    public var params: [Param]
    /// Notifiers of run events (absent when none).
    public var notify: Notifications?
    /// The run deadline (absent when none).
    public var deadline: RunDeadline?
    /// Assets that start runs (absent when none).
    public var assets: [String]?
    /// The webhook that starts runs (absent when none).
    public var webhook: WebhookTrigger?
    /// Upstream flows whose successful runs start runs of this one (absent when none).
    public var after: [FlowTrigger]?
    public var tasks: [TaskDefinition]
    /// `[upstream, downstream]` pairs, sorted.
    public var edges: [[String]]

    public init(_ flow: Flow) {
        id = flow.id
        description = flow.description
        owner = flow.owner
        tags = flow.tags
        version = flow.version
        schedule = flow.schedule
        catchup = flow.catchup
        maxActiveRuns = flow.maxActiveRuns
        maxActiveTasks = flow.maxActiveTasks
        runTimeoutSeconds = flow.runTimeout.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        params = flow.params
        notify = flow.notify.isEmpty ? nil : flow.notify
        deadline = flow.deadline
        assets = flow.assets.isEmpty ? nil : flow.assets
        webhook = flow.webhook
        after = flow.after.isEmpty ? nil : flow.after
        tasks = flow.tasks.map { t in
            let o = flow.effectiveOptions(t)
            var command: ShellCommand?
            var celeryName: String?
            var sensor: SensorSpec?
            var trigger: TriggerFlowSpec?
            var sql: SQLTaskSpec?
            var python: PythonTaskSpec?
            var dbt: DbtTaskSpec?
            switch t.body {
            case .shell(let c): command = c
            case .celery(let n): celeryName = n
            case .sensor(let spec, _): sensor = spec
            case .triggerFlow(let spec): trigger = spec
            case .sql(let spec): sql = spec
            case .python(let spec): python = spec
            case .dbt(let spec): dbt = spec
            case .closure, .branch, .s3, .approval: break
            }
            var d = TaskDefinition(id: t.id, kind: t.body.kind, description: t.description, upstream: t.upstream,
                                  retry: o.retry!, timeoutSeconds: o.timeoutSeconds, queue: o.queue!,
                                  priority: o.priority!, triggerRule: o.triggerRule!, command: command,
                                  celeryName: celeryName, mapOver: t.mapOver, maxMapLength: t.mapOver == nil ? nil : t.maxMapLength,
                                  pool: o.pool, poolSlots: o.pool == nil ? nil : (o.poolSlots ?? 1), maxActiveTisPerFlow: o.maxActiveTisPerFlow,
                                  sensor: sensor, notify: {
                                      let n = (o.notify ?? .init()).merged(over: flow.notify)
                                      let taskOnly = Notifications(onFailure: n.onFailure, onRetry: n.onRetry, onSuccess: n.onSuccess)
                                      return taskOnly.isEmpty ? nil : taskOnly
                                  }(), outlets: (o.outlets ?? []).isEmpty ? nil : o.outlets, triggerFlow: trigger, sql: sql, python: python, dbt: dbt)
            d.celeryContext = t.celeryContext ? true : nil
            if case .s3(let spec) = t.body { d.s3 = spec }
            if case .approval(let spec) = t.body { d.approval = spec }
            let declaredConnections = TaskNeeds.merge(o.connections, nil), declaredVariables = TaskNeeds.merge(o.variables, nil)
            d.connections = declaredConnections.isEmpty ? nil : declaredConnections
            d.variables = declaredVariables.isEmpty ? nil : declaredVariables
            return d
        }
        edges = flow.tasks.flatMap { t in t.upstream.map { [$0, t.id] } }.sorted { ($0[0], $0[1]) < ($1[0], $1[1]) }
    }

    /// Compact JSON with sorted keys.
    public func json() throws -> String { try StableJSON.string(self) }

    /// SHA-256 of `json()`, in hex: a new flow version exists exactly when this changes.
    public func contentHash() throws -> String { SHA256.hex(try StableJSON.encode(self)) }

    public static func decode(_ json: String) throws -> FlowDefinition {
        try JSONDecoder().decode(FlowDefinition.self, from: Data(json.utf8))
    }

    public func task(_ id: String) -> TaskDefinition? { tasks.first { $0.id == id } }
}

/// A flow definition indexed for the scheduler: downstream lists, roots and leaves.
public struct FlowGraph: Sendable {
    public let definition: FlowDefinition
    public let tasks: TaskTable
    public let downstream: [String: [String]]
    public let roots: [String]
    public let leaves: Set<String>
    /// Which registered version this is, and its content hash (set by whoever read it from the
    /// store): every task message carries them, so that only a worker with that version runs it.
    public var version: Int?
    public var hash: String?

    public init(_ definition: FlowDefinition) {
        self.definition = definition
        tasks = TaskTable(byId: Dictionary(uniqueKeysWithValues: definition.tasks.map { ($0.id, $0) }))
        var down: [String: [String]] = [:]
        for t in definition.tasks { for u in t.upstream { down[u, default: []].append(t.id) } }
        downstream = down
        roots = definition.tasks.filter { $0.upstream.isEmpty }.map(\.id)
        leaves = Set(definition.tasks.filter { down[$0.id] == nil }.map(\.id))
    }

    /// Every task that depends, directly or not, on one of `ids`.
    public func descendants(of ids: [String]) -> Set<String> {
        var out = Set<String>()
        var work = ids
        while let n = work.popLast() {
            for d in downstream[n] ?? [] where out.insert(d).inserted { work.append(d) }
        }
        return out
    }
}

/// A flow's tasks by id. A mapped instance's id (`double[3]`) finds its task (`double`): an
/// instance runs with its task's definition.
public struct TaskTable: Sendable {
    let byId: [String: FlowDefinition.TaskDefinition]

    public subscript(_ id: String) -> FlowDefinition.TaskDefinition? {
        if let t = byId[id] { return t }
        if let m = MappedInstance.parse(id) { return byId[m.task] }
        return nil
    }

    /// True for a task declared with `FlowBuilder.map` (not for its instances).
    public func isMapped(_ id: String) -> Bool { byId[id]?.mapOver != nil }
}

extension FlowGraph {
    /// True when a concurrency limit decides when this task (or instance) may start: a pool,
    /// `maxActiveTisPerFlow`, or the flow's `maxActiveTasks`.
    public func isLimited(_ id: String) -> Bool {
        definition.maxActiveTasks != nil || (tasks[id]?.isLimited ?? false)
    }
}
