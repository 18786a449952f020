import FlowKit
import Foundation
import Logging

/// Carries out the running backfills (`SchedulerStore.advanceBackfills`): each pass makes or
/// re-runs their next ticks while each has room under its `max_active_runs`, and completes the
/// ones with nothing left. Every scheduler runs it; a backfill is advanced by one at a time.
public struct BackfillRunner: SchedulerDuty {
    public struct Config: Sendable {
        /// How often it looks, when the last pass made nothing: a new backfill, or a backfill
        /// run that ended and freed room, waits at most this long.
        public var interval: Double = 1
        public init() {}
        public func validate() throws { try requirePositive("backfill runner", ["interval": interval]) }
    }

    public let name = "backfill runner"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config

    public func runOnce() async throws -> Double {
        let (made, work) = try await context.store.advanceBackfills(now: context.clock.now())
        try await context.broker.perform(work)
        if made > 0 { context.logger.info("backfills: \(made) runs made or re-run") }
        return made > 0 ? 0 : config.interval
    }
}
