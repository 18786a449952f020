import FlowKit
import Foundation

/// Records that this scheduler is alive (`/health` reads it), and gives the heap back to the
/// system once a burst of work is over (`HeapTrimmer`).
public struct SchedulerHeartbeat: SchedulerDuty {
    public struct Config: Sendable {
        public var interval: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("scheduler heartbeat", ["interval": interval]) }
    }

    public let name = "scheduler heartbeat"
    public let leaderOnly = false
    let context: SchedulerContext
    let config: Config
    let startedAt: Date


    public func runOnce() async throws -> Double {
        try await context.store.schedulerHeartbeat(name: context.name, host: ProcessInfo.processInfo.hostName,
                                                   startedAt: startedAt, now: context.clock.now())
        context.heap.trimIfQuiet()
        return config.interval
    }
}
