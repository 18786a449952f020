/// When a task may start, given its upstream tasks' states — Airflow's trigger rules.
public enum TriggerRule: String, Sendable, Codable, CaseIterable {
    case allSuccess = "all_success"
    case allDone = "all_done"
    case allFailed = "all_failed"
    case oneSuccess = "one_success"
    case oneFailed = "one_failed"
    case noneFailed = "none_failed"
    case noneFailedMinOneSuccess = "none_failed_min_one_success"
    case noneSkipped = "none_skipped"
    case oneDone = "one_done"
    case allSkipped = "all_skipped"
    /// No dependency at all: the task runs when its run starts, whatever its upstream tasks do.
    case always

    /// What the rule decides for a task whose upstream tasks are in `upstream`.
    public enum Decision: Sendable, Equatable {
        case wait, run, skip, upstreamFailed
    }

    /// Airflow's table (`TriggerRuleDep`): a rule that can no longer be met decides `skip` or
    /// `upstreamFailed` as soon as that is certain; otherwise the task waits until it is met.
    /// A cancelled upstream task counts as failed.
    public func evaluate(_ upstream: [TaskState]) -> Decision {
        if upstream.isEmpty || self == .always { return .run }
        let success = upstream.filter { $0 == .success }.count
        let failedOnly = upstream.filter { $0 == .failed || $0 == .cancelled }.count
        let failed = failedOnly + upstream.filter { $0 == .upstreamFailed }.count
        let skipped = upstream.filter { $0 == .skipped }.count
        let done = upstream.filter(\.isTerminal).count
        let allDone = done == upstream.count
        switch self {
        case .allSuccess:
            if failed > 0 { return .upstreamFailed }
            if skipped > 0 { return .skip }
            return allDone ? .run : .wait
        case .allDone:
            return allDone ? .run : .wait
        case .allFailed:
            if success > 0 || skipped > 0 { return .skip }
            return allDone ? .run : .wait
        case .oneSuccess:
            if success > 0 { return .run }
            guard allDone else { return .wait }
            return skipped == upstream.count ? .skip : .upstreamFailed
        case .oneFailed:
            if failed > 0 { return .run }
            return allDone ? .skip : .wait
        case .oneDone:
            // Succeeded or failed (as in Airflow, upstream_failed and skipped do not count).
            if success + failedOnly > 0 { return .run }
            return allDone ? .skip : .wait
        case .noneFailed:
            if failed > 0 { return .upstreamFailed }
            return allDone ? .run : .wait
        case .noneFailedMinOneSuccess:
            if failed > 0 { return .upstreamFailed }
            guard allDone else { return .wait }
            return success > 0 ? .run : .skip
        case .noneSkipped:
            if skipped > 0 { return .skip }
            return allDone ? .run : .wait
        case .allSkipped:
            if success > 0 || failed > 0 { return .skip }
            return allDone ? .run : .wait
        case .always:
            return .run
        }
    }
}
