import ArgumentParser
import FlowKit
import Foundation

struct CronCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cron", abstract: "Cron tools (offline).",
                                                    subcommands: [Preview.self])

    struct Preview: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the next fire instants of a cron expression, one ISO-8601 UTC instant a line.")

        @Argument(help: "A five-field cron expression or a preset such as @daily.") var expression: String
        @Option(help: "IANA time zone the expression is read in.") var tz: String = "UTC"
        @Option(help: "List instants strictly after this ISO-8601 instant (default: now).") var after: String?
        @Option(help: "How many instants.") var count: Int = 5

        func run() async throws {
            do {
                let zone = try resolveTimeZone(tz)
                let cron = try CronExpression(expression)
                var start = Date()
                if let after {
                    guard let d = parseISO8601(after) else {
                        fail("--after `\(after)` is not an ISO-8601 instant (e.g. 2026-11-22T06:00:00Z)", code: 2)
                    }
                    start = d
                }
                guard count > 0 else { fail("--count must be at least 1", code: 2) }
                for d in cron.nextFires(after: start, in: zone, count: count) { print(formatISO8601(d)) }
            } catch let e as CronError {
                fail(e.description)
            }
        }
    }
}

func parseISO8601(_ s: String) -> Date? {
    let f = ISO8601DateFormatter()
    if let d = f.date(from: s) { return d }
    f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let d = f.date(from: s) { return d }
    // A bare date or a local date-time is read as UTC.
    f.formatOptions = [.withFullDate]
    if s.count == 10, let d = f.date(from: s) { return d }
    f.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withDashSeparatorInDate]
    f.timeZone = TimeZone(identifier: "UTC")
    return f.date(from: s)
}

func formatISO8601(_ d: Date) -> String { Instant.format(d) }
