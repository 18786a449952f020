import FlowKit
import Foundation
import PostgresClient

/// Starts queued runs as their flows have room (`max_active_runs`), then waits for the next
/// `NOTIFY flowkit_runs` — a trigger, or a run's end freeing a slot — at most `maxWait`.
public struct RunStarter: SchedulerDuty {
    public struct Config: Sendable {
        /// The longest wait for a notification; the starter also looks this often without one.
        public var maxWait: Double = 1
        public init() {}
        public func validate() throws { try requirePositive("run starter", ["maxWait": maxWait]) }
    }

    public let name = "run starter"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config
    let listen: PGConnection


    public func runOnce() async throws -> Double {
        _ = try await listen.run { s in try s.listen("flowkit_runs") }
        while true {
            let work = try await context.store.startQueuedRuns(now: context.clock.now())
            try await context.broker.perform(work)
            context.heap.noteBatch(size: work.enqueue.count)
            if work.enqueue.isEmpty { break }
        }
        let wait = config.maxWait
        _ = try await listen.run { s in try s.waitForNotifications(timeout: wait) }
        return 0
    }
}
