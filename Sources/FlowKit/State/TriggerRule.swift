/// When a task may start, given its upstream tasks' states — Airflow's trigger rules.
public enum TriggerRule: String, Sendable, Codable, CaseIterable {
    case allSuccess = "all_success"
    case allDone = "all_done"
    case allFailed = "all_failed"
    case oneSuccess = "one_success"
    case oneFailed = "one_failed"
    case noneFailed = "none_failed"

    /// What the rule decides for a task whose upstream tasks are in `upstream`.
    public enum Decision: Sendable, Equatable {
        case wait, run, skip, upstreamFailed
    }

    public func evaluate(_ upstream: [TaskState]) -> Decision {
        if upstream.isEmpty { return .run }
        let success = upstream.filter { $0 == .success }.count
        let failed = upstream.filter { $0 == .failed || $0 == .upstreamFailed || $0 == .cancelled }.count
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
        case .noneFailed:
            if failed > 0 { return .upstreamFailed }
            return allDone ? .run : .wait
        }
    }
}
