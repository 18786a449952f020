import FlowKit
import Foundation

/// Queues the tries whose retry delay has passed, then waits until the next one is due (at most
/// `maxWait`).
public struct RetryTimer: SchedulerDuty {
    public struct Config: Sendable {
        public var maxWait: Double = 1
        public init() {}
        public func validate() throws { try requirePositive("retry timer", ["maxWait": maxWait]) }
    }

    public let name = "retry timer"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config


    public func runOnce() async throws -> Double {
        let work = try await context.store.queueDueRetries(now: context.clock.now())
        try await context.broker.perform(work)
        guard work.enqueue.isEmpty else { return 0 }
        return pause(until: try await context.store.nextRetryTime(), now: context.clock.now(), maxWait: config.maxWait)
    }
}
