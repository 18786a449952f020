import FlowKit
import Foundation
import PostgresClient

/// Gives waiting limited tasks their messages as pools, `maxActiveTasks` and
/// `maxActiveTisPerFlow` allow (`SchedulerStore.admitWaiting`), then waits for the next
/// `NOTIFY flowkit_slots` — a limited task parked or ended, a run ended, a pool grown — at most
/// `maxWait`. The notification drives it; the timeout is only a backstop.
public struct PoolAdmitter: SchedulerDuty {
    public struct Config: Sendable {
        /// The longest wait for a notification; the admitter also looks this often without one.
        public var maxWait: Double = 5
        public init() {}
        public func validate() throws { try requirePositive("pool admitter", ["maxWait": maxWait]) }
    }

    public let name = "pool admitter"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config
    /// Its own session: notifications of other channels must not wake it, nor it take theirs.
    let listen: PGConnection

    public func runOnce() async throws -> Double {
        _ = try await listen.run { s in try s.listen(SchedulerStore.slotsChannel) }
        // Drain what is already there, so a burst of notifications costs one pass.
        _ = try await listen.run { s in try s.waitForNotifications(timeout: 0) }
        let work = try await context.store.admitWaiting(now: context.clock.now())
        try await context.broker.perform(work)
        context.heap.noteBatch(size: work.enqueue.count)
        if !work.enqueue.isEmpty { return 0 }  // more may fit: a task that took a slot can free it at once
        try await listen.awaitNotification(upTo: config.maxWait)
        return 0
    }
}

extension PGConnection {
    /// Waits for a notification on this session's channels, at most `maxWait` seconds, in slices
    /// of at most a second, so that a shutdown is not held up by the backstop.
    func awaitNotification(upTo maxWait: Double) async throws {
        let deadline = Date().addingTimeInterval(maxWait)
        while !Task.isCancelled {
            let slice = min(1, deadline.timeIntervalSinceNow)
            if slice <= 0 { return }
            if try await !run({ s in try s.waitForNotifications(timeout: slice) }).isEmpty { return }
        }
    }
}
