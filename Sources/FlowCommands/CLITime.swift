import FlowKit
import Foundation

/// Dates and times as people type and read them.
///
/// In: an ISO-8601 instant (`2026-11-01T05:00:00Z`, `…+01:00`) as is; `2026-11-01` as that day's
/// midnight and `2026-11-01T06:00[:SS]` (or with a space) as that wall-clock time, both in the
/// flow's time zone, and said so. Out: every time with its zone.
enum CLITime {
    /// The instant `value` names; `note` says how a date or local time was read.
    static func parse(_ value: String, flag: String, zone: String) throws -> (date: Date, note: String?) {
        if let d = Instant.parse(value) { return (d, nil) }
        let usage = "\(flag) `\(value)` is not a date or time: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (read in the flow's zone, \(zone)), "
            + "or an instant such as 2026-11-01T00:00:00Z"
        guard let tz = TimeZone(identifier: zone) else { throw CLIError(usage, code: 2) }
        let text = value.replacingOccurrences(of: " ", with: "T")
        let parts = text.split(separator: "T", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { throw CLIError(usage, code: 2) }
        let day = parts[0].split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        guard day.count == 3, parts[0].count == 10, let y = day[0], let m = day[1], let d = day[2] else { throw CLIError(usage, code: 2) }
        var clock: [Int] = [0, 0, 0]
        if parts.count == 2 {
            let c = parts[1].split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
            guard (2...3).contains(c.count), c.allSatisfy({ $0 != nil }) else { throw CLIError(usage, code: 2) }
            for (i, v) in c.enumerated() { clock[i] = v! }
        }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = tz
        let comps = DateComponents(year: y, month: m, day: d, hour: clock[0], minute: clock[1], second: clock[2])
        guard (1...12).contains(m), (1...31).contains(d), (0...23).contains(clock[0]), (0...59).contains(clock[1]), (0...59).contains(clock[2]),
              let date = cal.date(from: comps), cal.component(.day, from: date) == d || parts.count == 2 else {
            throw CLIError(usage, code: 2)
        }
        let what = parts.count == 1 ? "midnight" : "that time"
        return (date, "\(flag) \(value): read as \(format(date, zone: zone, iso: true)) (\(what) in \(zone), the flow's zone)")
    }

    /// `2026-11-01 06:00:00 +01:00`, or `… UTC` in UTC; `iso` writes `2026-11-01T06:00:00+01:00`.
    static func format(_ date: Date, zone: String, iso: Bool = false) -> String {
        let tz = TimeZone(identifier: zone) ?? TimeZone(identifier: "UTC")!
        if tz.identifier == "UTC" || tz.identifier == "GMT" {
            return iso ? Instant.format(date) : Instant.format(date).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC")
        }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = tz
        f.dateFormat = iso ? "yyyy-MM-dd'T'HH:mm:ssxxx" : "yyyy-MM-dd HH:mm:ss xxx"
        return f.string(from: date)
    }

    /// `17:25:03 UTC`: the time of day of an instant soon to come, with its zone.
    static func clock(_ date: Date) -> String {
        String(format(date, zone: "UTC").split(separator: " ").dropFirst().joined(separator: " "))
    }

    /// `4m 58s`, `2h 5m`, `12s`: a span of time as people say it.
    static func span(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m \(s % 60)s" }
        return "\(s / 3600)h \(s % 3600 / 60)m"
    }

    /// The zone of `flow`, from the API (its error, with a suggestion, for an unknown flow).
    static func zone(of flow: String, client: APIClient) async throws -> String {
        try await client.get("/api/v1/flows/\(APIClient.segment(flow))")["timezone"]?.stringValue ?? "UTC"
    }
}
