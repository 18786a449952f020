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

    /// How old a queued try must be to be looked at, and when to look next, `since` seconds after
    /// the broker's master changed (nil: never). After a Redis failover, a message the old master
    /// took and the new one lacks is lost, not in transit: once the retries have settled, every
    /// try queued before the failover is looked at at once, instead of `after` seconds later (a
    /// 30 s stall after a SIGKILLed master). Within the settle window the next pass is due when
    /// the window ends, not up to one `interval` later.
    static func plan(sinceMasterChange since: Double?, after: Double, interval: Double) -> (olderThan: Double, next: Double) {
        guard let since, since < after else { return (after, interval) }
        if since >= failoverSettle { return (since, interval) }
        return (after, min(interval, failoverSettle - since + 0.01))
    }

    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        let plan = Self.plan(sinceMasterChange: context.broker.secondsSinceMasterChange, after: config.after, interval: config.interval)
        let stale = try await context.store.staleQueued(now: now, olderThan: plan.olderThan)
        let missing = try await context.broker.missingMessages(stale)
        guard !missing.isEmpty else { return plan.next }
        var work = BrokerWork()
        work.enqueue = try await context.store.rebuildQueuedMessages(missing, now: now)
        try await context.broker.perform(work)
        context.logger.warning("enqueued again \(work.enqueue.count) messages the broker had lost")
        return plan.next
    }
}
