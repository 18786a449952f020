/// Per-task options; any left `nil` take the flow's defaults.
public struct TaskOptions: Sendable, Hashable, Codable {
    public var retry: RetryPolicy?
    /// Seconds a try may run before it is failed.
    public var timeoutSeconds: Double?
    public var queue: String?
    /// Higher is enqueued first among tasks that become ready together (it does not jump the queue).
    public var priority: Int?
    public var triggerRule: TriggerRule?
    /// A named pool (created with `flowctl pools set`) whose slots limit how many tasks run at
    /// once, across flows; this task takes `poolSlots` of them (default 1) while queued or running.
    public var pool: String?
    public var poolSlots: Int?
    /// At most this many instances of this task (mapped instances included) queued or running
    /// at once, across the flow's runs (Airflow's `max_active_tis_per_dag`).
    public var maxActiveTisPerFlow: Int?
    /// The task's own notifiers for its task events; nil events take the flow's.
    public var notify: Notifications?
    /// Assets (URIs such as `warehouse://marts.daily`) this task updates: its success records
    /// an asset event for each, which starts the flows scheduled on them.
    public var outlets: [String]?
    /// Connections and variables the task uses (`ctx.connection`, `ctx.variable`), beyond the
    /// connection a SQL, S3 or sensor task names already: the scheduler sends them from the
    /// store (`flowctl connections set`, `flowctl variables set`) in the task's message, sealed.
    public var connections: [String]?
    public var variables: [String]?

    public init(retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil,
                triggerRule: TriggerRule? = nil, pool: String? = nil, poolSlots: Int? = nil, maxActiveTisPerFlow: Int? = nil) {
        self.retry = retry
        self.timeoutSeconds = timeout?.seconds
        self.queue = queue
        self.priority = priority
        self.triggerRule = triggerRule
        self.pool = pool
        self.poolSlots = poolSlots
        self.maxActiveTisPerFlow = maxActiveTisPerFlow
    }

    /// These options with the gaps filled from `defaults`.
    public func merged(over defaults: TaskOptions) -> TaskOptions {
        var o = self
        o.retry = retry ?? defaults.retry
        o.timeoutSeconds = timeoutSeconds ?? defaults.timeoutSeconds
        o.queue = queue ?? defaults.queue
        o.priority = priority ?? defaults.priority
        o.triggerRule = triggerRule ?? defaults.triggerRule
        o.pool = pool ?? defaults.pool
        o.poolSlots = poolSlots ?? defaults.poolSlots
        o.maxActiveTisPerFlow = maxActiveTisPerFlow ?? defaults.maxActiveTisPerFlow
        o.notify = notify.map { $0.merged(over: defaults.notify ?? .init()) } ?? defaults.notify
        o.outlets = outlets
        o.connections = connections
        o.variables = variables
        return o
    }
}

/// The queue tasks go to when neither the task nor the flow names one.
public let defaultQueue = "default"
