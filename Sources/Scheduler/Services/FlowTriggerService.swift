import FlowKit
import Foundation
import Logging
import CeleryProtocol
import PostgresClient

/// Creates the runs owed to flows declared `after:` another flow's success, and runs the tasks
/// the scheduler runs itself: trigger-flow tasks and approvals (`SchedulerStore.startFlowTriggeredRuns`,
/// `triggerTaskEvents`, `approvalEvents`); then waits for the next `NOTIFY flowkit_flow_triggers`
/// (a run with subscribers ended, such a task was queued, a child run of one ended, a decision
/// was made), at most `maxWait` (an approval's timeout is seen within it). Every scheduler runs it: rows are claimed with SKIP LOCKED and runs are keyed.
public struct FlowTriggerService: SchedulerDuty {
    public struct Config: Sendable {
        /// The longest wait for a notification; it also looks this often without one.
        public var maxWait: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("flow-trigger service", ["maxWait": maxWait]) }
    }

    public let name = "flow-trigger service"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config
    /// Its own session, so that it hears only its channels.
    let listen: PGConnection

    public func runOnce() async throws -> Double {
        _ = try await listen.run { s in try s.listen(SchedulerStore.flowTriggersChannel) }
        _ = try await listen.run { s in try s.waitForNotifications(timeout: 0) }
        let now = context.clock.now()
        let started = try await context.store.startFlowTriggeredRuns(now: now)
        for why in started.refused { context.logger.warning("flow trigger: \(why)") }
        // One probe of a partial index first: most passes find no such task and skip both.
        var events: [WorkerEvent] = []
        if try await context.store.hasSchedulerRunTasks() {
            events = try await context.store.triggerTaskEvents(now: now) + (try await context.store.approvalEvents(now: now))
        }
        if !events.isEmpty {
            let work = try await context.store.applyEvents(events, now: now)
            try await context.broker.perform(work)
        }
        if !started.runs.isEmpty || !events.isEmpty { return 0 }
        try await listen.awaitNotification(upTo: config.maxWait)
        return 0
    }
}
