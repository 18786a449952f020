/// Per-task options; any left `nil` take the flow's defaults.
public struct TaskOptions: Sendable, Hashable, Codable {
    public var retry: RetryPolicy?
    /// Seconds a try may run before it is failed.
    public var timeoutSeconds: Double?
    public var queue: String?
    /// Higher is enqueued first among tasks that become ready together (it does not jump the queue).
    public var priority: Int?
    public var triggerRule: TriggerRule?

    public init(retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil,
                triggerRule: TriggerRule? = nil) {
        self.retry = retry
        self.timeoutSeconds = timeout?.seconds
        self.queue = queue
        self.priority = priority
        self.triggerRule = triggerRule
    }

    /// These options with the gaps filled from `defaults`.
    public func merged(over defaults: TaskOptions) -> TaskOptions {
        var o = self
        o.retry = retry ?? defaults.retry
        o.timeoutSeconds = timeoutSeconds ?? defaults.timeoutSeconds
        o.queue = queue ?? defaults.queue
        o.priority = priority ?? defaults.priority
        o.triggerRule = triggerRule ?? defaults.triggerRule
        return o
    }
}

/// The queue tasks go to when neither the task nor the flow names one.
public let defaultQueue = "default"
