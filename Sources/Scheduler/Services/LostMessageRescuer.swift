import FlowKit
import Foundation
import Logging

/// Tries queued for longer than `after` whose message is in no queue and no claim, and has not
/// run (no Celery result), lost their message (Redis flushed or restarted without its data):
/// their messages are built again from PostgreSQL and sent. Leader only.
public struct LostMessageRescuer: SchedulerDuty {
    public struct Config: Sendable {
        public var after: Double = 30
        public var interval: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("lost-message rescuer", ["after": after, "interval": interval]) }
    }

    public let name = "lost-message rescuer"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config


    /// Seconds after a Redis failover before the tries queued before it are looked at: time for
    /// the dispatchers' and the workers' retries to land on the new master.
    static let failoverSettle: Double = 5

    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        // After a Redis failover, a message the old master took and the new one lacks is lost,
        // not in transit: once the retries have settled, every try queued before the failover is
        // looked at at once, instead of `after` seconds later (a 30 s stall after a SIGKILLed master).
        var olderThan = config.after
        if let since = context.broker.secondsSinceMasterChange, since >= Self.failoverSettle, since < olderThan { olderThan = since }
        let stale = try await context.store.staleQueued(now: now, olderThan: olderThan)
        let missing = try await context.broker.missingMessages(stale)
        guard !missing.isEmpty else { return config.interval }
        var work = BrokerWork()
        work.enqueue = try await context.store.rebuildQueuedMessages(missing, now: now)
        try await context.broker.perform(work)
        context.logger.warning("enqueued again \(work.enqueue.count) messages the broker had lost")
        return config.interval
    }
}
