import FlowKit
import Foundation
import Logging

/// The retention policy (`FLOWKIT_RETENTION`, e.g. `90d`): once an hour, the leader deletes
/// finished runs older than that with everything under them (`SchedulerStore.cleanHistory`, the
/// same cleanup as `flowctl db clean`). Off unless configured. Always: the tokens Airflow
/// clients' logins made (`POST /auth/token`) a day after they expired.
public struct RetentionCleaner: SchedulerDuty {
    public struct Config: Sendable {
        /// Keep finished runs this many seconds; nil keeps everything.
        public var keep: Double?
        /// How often it cleans.
        public var interval: Double = 3600
        public init() {}
        public func validate() throws {
            try requirePositive("retention cleaner", ["interval": interval])
            if let keep { try requirePositive("retention cleaner", ["keep": keep]) }
        }
    }

    public let name = "retention cleaner"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config

    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        let logins = try await context.store.deleteExpiredLoginTokens(before: now.addingTimeInterval(-86_400))
        if logins > 0 { context.logger.info("deleted \(logins) login tokens of Airflow clients that expired over a day ago") }
        guard let keep = config.keep else { return config.interval }
        let cutoff = now.addingTimeInterval(-keep)
        let r = try await context.store.cleanHistory(before: cutoff)
        if r.runs > 0 {
            context.logger.info("retention: deleted \(r.runs) runs (\(r.taskInstances) task instances, \(r.logLines) log lines) that ended before \(cutoff)")
        }
        return config.interval
    }
}
