public import FlowKit
import Foundation
public import Logging
public import ServiceLifecycle
import CoreMetrics

/// One duty of the scheduler. `runOnce()` does one bounded batch and says how long to wait
/// before the next; `DutyService` runs it in a loop. Tests call `runOnce()` directly, with a
/// `ManualClock`.
public protocol SchedulerDuty: Sendable {
    /// For logs: "run starter", "reaper", …
    var name: String { get }
    /// Run only by the scheduler that holds the leader lock.
    var leaderOnly: Bool { get }
    /// One bounded batch. Returns the seconds to wait before the next (0: at once; a duty that
    /// waits inside, e.g. for a NOTIFY or a blocking read, returns 0).
    func runOnce() async throws -> Double
}

/// Throws, naming the duty and the setting, unless every value is positive.
func requirePositive(_ duty: String, _ values: KeyValuePairs<String, Double>) throws {
    for (key, v) in values where !(v > 0) { throw SchedulerConfigError("\(duty): \(key) must be positive, not \(v)") }
}

/// How long to wait for something due at `next` (at most `maxWait`; `maxWait` when nothing is due).
func pause(until next: Date?, now: Date, maxWait: Double) -> Double {
    next.map { max(0.01, min(maxWait, $0.timeIntervalSince(now))) } ?? maxWait
}

/// What every duty of one scheduler shares.
public struct SchedulerContext: Sendable {
    public let name: String
    public let store: SchedulerStore
    public let broker: SchedulerBroker
    public let clock: any SchedulerClock
    public let logger: Logger
    let heap: HeapTrimmer
    let metrics: SchedulerMetrics
}

/// Runs a duty until its task is cancelled or the service group shuts down. A failure (a
/// database or Redis restart) is logged and retried with backoff, never fatal. Leader-only
/// duties wait their turn while another scheduler leads.
public struct DutyService: Service {
    public let duty: any SchedulerDuty
    let leader: LeaderElector
    let context: SchedulerContext
    /// How long a follower waits before asking for the leader lock again.
    let followerPause: Double

    public func run() async throws {
        try await cancelWhenGracefulShutdown { await loop() }
    }

    func loop() async {
        let logger = context.logger, clock = context.clock, name = duty.name
        var failures = 0
        while !Task.isCancelled {
            do {
                var pause: Double
                if duty.leaderOnly, try await !leader.isLeader() {
                    pause = followerPause
                } else {
                    let t0 = Date()
                    pause = try await duty.runOnce()
                    if duty.leaderOnly { context.metrics.maintenance.recordSeconds(Date().timeIntervalSince(t0)) }
                }
                if failures > 0 { logger.info("\(name) recovered") }
                failures = 0
                if pause > 0 { try await clock.sleep(seconds: pause) }
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                if failures == 1 || failures % 20 == 0 { logger.warning("\(name): \(error)") }
                try? await clock.sleep(seconds: min(2, 0.05 * Double(1 << min(failures, 6))))
            }
        }
    }
}
