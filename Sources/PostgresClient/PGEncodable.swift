import CivilTime
public import Foundation

/// A value that can be sent as a statement parameter, in PostgreSQL's text format.
public protocol PGEncodable: Sendable {
    var pgText: String? { get }
}

/// PostgreSQL's text cannot hold NUL, and libpq's C strings would cut a value at one (breaking
/// an array literal mid-way: `22P02 malformed array literal`): a NUL is sent as U+FFFD, the
/// replacement character, so one bad byte in a task's log line cannot fail a whole batch.
extension String: PGEncodable {
    public var pgText: String? { utf8.contains(0) ? replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : self }
}
extension Int: PGEncodable { public var pgText: String? { String(self) } }
extension Int64: PGEncodable { public var pgText: String? { String(self) } }
extension Int32: PGEncodable { public var pgText: String? { String(self) } }
extension Double: PGEncodable { public var pgText: String? { String(self) } }
extension Bool: PGEncodable { public var pgText: String? { self ? "t" : "f" } }
extension Date: PGEncodable { public var pgText: String? { PGTime.format(self) } }
extension Optional: PGEncodable where Wrapped: PGEncodable {
    public var pgText: String? { self?.pgText }
}
extension Array: PGEncodable where Element: PGEncodable {
    /// A PostgreSQL array literal, each element quoted.
    public var pgText: String? {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(2 + count * 16)
        for (i, e) in enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            guard let t = e.pgText else { out.append(contentsOf: [78, 85, 76, 76]); continue }  // NULL
            out.append(UInt8(ascii: "\""))
            for b in t.utf8 {
                if b == UInt8(ascii: "\\") || b == UInt8(ascii: "\"") { out.append(UInt8(ascii: "\\")) }
                out.append(b)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}

/// SQL NULL as a parameter.
public struct PGNull: PGEncodable {
    public init() {}
    public var pgText: String? { nil }
}

/// Timestamps in the text form a session with `TimeZone=UTC` and `DateStyle=ISO` uses.
public enum PGTime {
    /// `2026-11-22 06:00:00.123456+00`.
    public static func format(_ date: Date) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(29)
        CivilTime.write(secondsSince1970: date.timeIntervalSince1970, fractionDigits: 6, separator: 32, suffix: "+00", into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses `2026-11-22 06:00:00.123456+00` (also without fraction, or with another offset).
    public static func parse(_ s: String) -> Date? {
        CivilTime.parse(s, requireZone: false).map { Date(timeIntervalSince1970: $0) }
    }
}
