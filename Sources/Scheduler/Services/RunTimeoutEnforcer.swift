import FlowKit
import Foundation
import Logging

/// Fails runs still unfinished past their flow's `runTimeout`: their unfinished tasks are
/// cancelled (running ones are told to stop on their workers) and the history says why. Also
/// decides run deadlines as they pass (`onDeadlineMiss`, once per run). Leader only.
public struct RunTimeoutEnforcer: SchedulerDuty {
    public struct Config: Sendable {
        /// How often it looks; a run ends at most this long after its timeout.
        public var interval: Double = 1
        public init() {}
        public func validate() throws { try requirePositive("run timeout enforcer", ["interval": interval]) }
    }

    public let name = "run timeout enforcer"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config

    public func runOnce() async throws -> Double {
        let (runs, work) = try await context.store.failTimedOutRuns(now: context.clock.now())
        try await context.broker.perform(work)
        for r in runs { context.logger.warning("run \(r) failed: past its flow's run timeout") }
        // Deadlines (SLAs) are the same kind of clock: decided here, notified through the outbox.
        let missed = try await context.store.decideDeadlines(now: context.clock.now())
        for r in missed { context.logger.warning("run \(r) missed its deadline") }
        return runs.isEmpty && missed.isEmpty ? config.interval : 0
    }
}
