import FlowKit
import Foundation
import Logging
import Synchronization

/// kombu's `restore_visible`: messages claimed longer than `visibilityTimeout` ago and never
/// acknowledged go back to their queue (a live worker refreshes its claims at every heartbeat,
/// so these are a dead worker's). Leader only.
public struct UnackedRestorer: SchedulerDuty {
    public struct Config: Sendable {
        public var visibilityTimeout: Double = 300
        public var interval: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("unacked restorer", ["visibilityTimeout": visibilityTimeout, "interval": interval]) }
    }

    public let name = "unacked restorer"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config
    /// Whether this failover's pause was logged already.
    let noted = NotedFlag()

    public func runOnce() async throws -> Double {
        // After a Redis failover every claim looks stale: the workers could not refresh them
        // while they looked for the new master. Restoring them then would run their tries a
        // second time beside the workers still running them; give the workers one visibility
        // timeout on the new master to refresh what they hold.
        if let since = context.broker.secondsSinceMasterChange, since < config.visibilityTimeout {
            if !noted.value.withLock({ n in defer { n = true }; return n }) {
                context.logger.warning("the Redis master moved \(String(format: "%.1f", since))s ago: no claim is restored for \(Int(config.visibilityTimeout))s, while the workers refresh theirs")
            }
            return config.interval
        }
        noted.value.withLock { $0 = false }
        let n = try await context.broker.restoreUnacked(olderThan: context.clock.now().addingTimeInterval(-config.visibilityTimeout))
        if n > 0 { context.logger.warning("restored \(n) messages claimed more than \(Int(config.visibilityTimeout))s ago and never acknowledged") }
        return config.interval
    }
}

/// A flag shared by the copies of a duty.
final class NotedFlag: Sendable {
    let value = Mutex(false)
}
