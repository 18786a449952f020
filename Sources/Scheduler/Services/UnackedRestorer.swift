import FlowKit
import Foundation
import Logging

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


    public func runOnce() async throws -> Double {
        let n = try await context.broker.restoreUnacked(olderThan: context.clock.now().addingTimeInterval(-config.visibilityTimeout))
        if n > 0 { context.logger.warning("restored \(n) messages claimed more than \(Int(config.visibilityTimeout))s ago and never acknowledged") }
        return config.interval
    }
}
