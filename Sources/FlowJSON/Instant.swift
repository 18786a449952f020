import CivilTime
public import Foundation

/// ISO-8601 instants in UTC, formatted without Foundation's formatters (which cost tens of
/// microseconds to create on Linux, and sit on hot paths: every result, every API date).
public enum Instant {
    /// `2026-11-22T06:00:00Z`, or with `fractionDigits` 3 or 6: `2026-11-22T06:00:00.123Z`.
    public static func format(_ date: Date, fractionDigits: Int = 0) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(27)
        write(date, fractionDigits: fractionDigits, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the instant's ISO-8601 form to `out`.
    public static func write(_ date: Date, fractionDigits: Int, into out: inout [UInt8]) {
        CivilTime.write(secondsSince1970: date.timeIntervalSince1970, fractionDigits: fractionDigits, into: &out)
    }

    /// Parses `2026-11-22T06:00:00Z`, with optional fraction and `+hh:mm` offset.
    public static func parse(_ s: String) -> Date? {
        CivilTime.parse(s, requireZone: true).map { Date(timeIntervalSince1970: $0) }
    }
}
