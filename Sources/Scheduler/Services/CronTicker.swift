import FlowKit
import Foundation
import Logging

/// Creates the runs of cron ticks that are due (one per tick, whichever scheduler gets there
/// first), then waits until the next tick (at most `maxWait`).
public struct CronTicker: SchedulerDuty {
    public struct Config: Sendable {
        public var maxWait: Double = 1
        public init() {}
        public func validate() throws { try requirePositive("cron ticker", ["maxWait": maxWait]) }
    }

    public let name = "cron ticker"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config


    public func runOnce() async throws -> Double {
        let created = try await context.store.createDueScheduledRuns(now: context.clock.now())
        for r in created { context.logger.info("created scheduled run \(r.runId) of \(r.flowId)") }
        guard created.isEmpty else { return 0 }
        return pause(until: try await context.store.nextTickTime(), now: context.clock.now(), maxWait: config.maxWait)
    }
}
