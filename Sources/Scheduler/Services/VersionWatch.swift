import FlowKit
import Foundation
import Logging

/// Keeps flow versions and workers in step. Leader only, every few seconds:
/// - re-elects each flow's current version, the newest one a live scheduler carries (a flow
///   goes back once every scheduler of a newer version has stopped; one no live scheduler
///   carries becomes inactive);
/// - flags runs that cannot go on because no live worker carries their flow version (or
///   consumes a queue they wait on), and clears the flag when one comes.
public struct VersionWatch: SchedulerDuty {
    public struct Config: Sendable {
        public var interval: Double = 5
        /// How long a task waits queued before its run may be flagged.
        public var stalledAfter: Double = 10
        /// How old a worker's last heartbeat may be for it to count as live.
        public var workerWindow: Double = 30
        public init() {}
        public func validate() throws {
            try requirePositive("version watch", ["interval": interval, "stalledAfter": stalledAfter, "workerWindow": workerWindow])
        }
    }

    public let name = "version watch"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config

    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        for change in try await context.store.electFlowVersions(now: now, scheduler: context.name) {
            context.logger.warning("\(change)")
        }
        for (run, reason) in try await context.store.flagStalledRuns(now: now, after: config.stalledAfter, workerWindow: config.workerWindow) {
            if let reason { context.logger.warning("run \(run) is stalled: \(reason)") } else { context.logger.info("run \(run) can go on again") }
        }
        return config.interval
    }
}
