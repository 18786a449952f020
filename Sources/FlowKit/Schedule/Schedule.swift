public import Foundation

/// When a flow runs on its own: a cron expression read in an IANA time zone.
///
/// ```swift
/// let every6h = Schedule.cron("0 */6 * * *", timeZone: "Europe/Madrid")
/// ```
public struct Schedule: Sendable, Hashable, Codable {
    public var cron: String
    public var timeZone: String

    public init(cron: String, timeZone: String = "UTC") {
        self.cron = cron
        self.timeZone = timeZone
    }

    public static func cron(_ expression: String, timeZone: String = "UTC") -> Schedule {
        Schedule(cron: expression, timeZone: timeZone)
    }
    public static func hourly(timeZone: String = "UTC") -> Schedule { .init(cron: "@hourly", timeZone: timeZone) }
    public static func daily(timeZone: String = "UTC") -> Schedule { .init(cron: "@daily", timeZone: timeZone) }

    /// Parses and checks the expression and the zone.
    public func compiled() throws -> CompiledSchedule {
        CompiledSchedule(expression: try CronExpression(cron), timeZone: try resolveTimeZone(timeZone))
    }
}

/// A schedule whose expression and zone are known to be valid.
public struct CompiledSchedule: Sendable {
    public let expression: CronExpression
    public let timeZone: TimeZone

    public func nextFire(after date: Date) -> Date? { expression.nextFire(after: date, in: timeZone) }

    /// The last fire instant at or before `date`, looking back at most about nine years.
    public func latestFire(atOrBefore date: Date) -> Date? {
        var window: TimeInterval = 3600
        while window < 10 * 366 * 86_400 {
            var cursor = date.addingTimeInterval(-window)
            var last: Date?
            while let n = nextFire(after: cursor), n <= date { last = n; cursor = n }
            if let last { return last }
            window *= 4
        }
        return nil
    }
}
