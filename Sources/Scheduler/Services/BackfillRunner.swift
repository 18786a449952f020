import FlowKit
import Foundation
import Logging
import PostgresClient

/// Carries out the running backfills (`SchedulerStore.advanceBackfills`): each pass makes or
/// re-runs their next ticks while each has room under its `max_active_runs`, and completes the
/// ones with nothing left. Every scheduler runs it; a backfill is advanced by one at a time.
public struct BackfillRunner: SchedulerDuty {
    public struct Config: Sendable {
        /// How often it looks while a backfill runs and the last pass made nothing: a backfill
        /// run that ended and freed room waits at most this long.
        public var interval: Double = 1
        /// While no backfill runs, it waits for `NOTIFY flowkit_backfills` (a backfill created or
        /// resumed) and looks at least this often without one.
        public var idleWait: Double = 30
        public init() {}
        public func validate() throws { try requirePositive("backfill runner", ["interval": interval, "idleWait": idleWait]) }
    }

    public let name = "backfill runner"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config
    /// Its own session, so that it hears only its channel.
    let listen: PGConnection

    public func runOnce() async throws -> Double {
        _ = try await listen.run { s in try s.listen(SchedulerStore.backfillsChannel) }
        _ = try await listen.run { s in try s.waitForNotifications(timeout: 0) }
        let (made, running, work) = try await context.store.advanceBackfills(now: context.clock.now())
        try await context.broker.perform(work)
        if made > 0 { context.logger.info("backfills: \(made) runs made or re-run"); return 0 }
        if running > 0 { return config.interval }
        try await listen.awaitNotification(upTo: config.idleWait)
        return 0
    }
}
