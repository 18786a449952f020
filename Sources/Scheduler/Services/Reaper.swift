import FlowKit
import Foundation
import Logging

/// Fails (or retries, per policy) running tries whose worker stopped heart-beating for longer
/// than `zombieThreshold`, and tries past their execution timeout. A worker whose heartbeat key
/// still lives in Redis is not a zombie, whatever the database says; a zombie whose message the
/// unacked restorer already put back in its queue is queued again instead (the same try runs on
/// the next free worker: the take-over that began first wins). Leader only.
public struct Reaper: SchedulerDuty {
    public struct Config: Sendable {
        /// A running task with no heartbeat for this long is a zombie.
        public var zombieThreshold: Double = 30
        public var interval: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("reaper", ["zombieThreshold": zombieThreshold, "interval": interval]) }
    }

    public let name = "reaper"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config


    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        let stale = try await context.store.staleTries(now: now, heartbeatTimeout: config.zombieThreshold)
        let alive = try await context.broker.aliveWorkers(Array(Set(stale.compactMap(\.worker))).sorted())
        let waiting = try await context.broker.waitingInQueue(stale.filter { !alive.contains($0.worker ?? "") }.map { ($0.messageId, $0.queue) })
        let reaped = try await context.store.reapZombies(now: now, heartbeatTimeout: config.zombieThreshold, aliveWorkers: alive, waiting: waiting)
        try await context.broker.perform(reaped)
        if !reaped.forget.isEmpty { context.logger.warning("reaped \(reaped.forget.count) tries (zombies or timeouts)") }
        if !waiting.isEmpty { context.logger.warning("\(waiting.count) stale tries' messages wait in their queues again: queued again unless past their timeout") }
        return config.interval
    }
}
