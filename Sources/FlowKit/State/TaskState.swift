/// The state of one task instance in one run, with Airflow's names.
public enum TaskState: String, Sendable, Codable, CaseIterable {
    /// Waiting for its upstream tasks (Airflow's "none"/"scheduled").
    case pending
    case queued
    case running
    case success
    case failed
    case upForRetry = "up_for_retry"
    /// A sensor that answered "not yet": its slot is free until its next poke (Airflow's name).
    case upForReschedule = "up_for_reschedule"
    case upstreamFailed = "upstream_failed"
    case skipped
    /// Its run was cancelled before it finished.
    case cancelled

    public var isTerminal: Bool {
        switch self {
        case .success, .failed, .upstreamFailed, .skipped, .cancelled: return true
        case .pending, .queued, .running, .upForRetry, .upForReschedule: return false
        }
    }
}

/// The state of a flow run.
public enum RunState: String, Sendable, Codable, CaseIterable {
    case queued, running, success, failed, cancelled
    public var isTerminal: Bool { self == .success || self == .failed || self == .cancelled }
}

/// The run's state once every task instance has ended, by Airflow's rule: success when every
/// leaf succeeded or was skipped, failed when a leaf failed, was upstream_failed or cancelled.
public func finalRunState(leafStates: [TaskState]) -> RunState {
    leafStates.contains { failingLeafStates.contains($0) } ? .failed : .success
}

/// Leaf states that fail a run (the scheduler applies the same rule in SQL with this list).
public let failingLeafStates: [TaskState] = [.failed, .upstreamFailed, .cancelled]
