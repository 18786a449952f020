import Foundation

/// A value that can be sent as a statement parameter, in PostgreSQL's text format.
public protocol PGEncodable: Sendable {
    var pgText: String? { get }
}

extension String: PGEncodable { public var pgText: String? { self } }
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
        "{" + map { e -> String in
            guard let t = e.pgText else { return "NULL" }
            return "\"" + t.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }.joined(separator: ",") + "}"
    }
}

/// SQL NULL as a parameter.
public struct PGNull: PGEncodable {
    public init() {}
    public var pgText: String? { nil }
}

/// Timestamps in the text form a session with `TimeZone=UTC` and `DateStyle=ISO` uses.
public enum PGTime {
    public static func format(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var secs = Int(t.rounded(.down))
        var micros = Int(((t - Double(secs)) * 1_000_000).rounded())
        if micros >= 1_000_000 { secs += 1; micros -= 1_000_000 }
        var tmv = tm()
        var tt = time_t(secs)
        gmtime_r(&tt, &tmv)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1,
                      Int(tmv.tm_mday), Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec), micros)
    }

    /// Parses `2026-11-22 06:00:00.123456+00` (also without fraction, or with another offset).
    public static func parse(_ s: String) -> Date? {
        let u = Array(s.utf8)
        guard u.count >= 19 else { return nil }
        func num(_ from: Int, _ len: Int) -> Int? {
            var v = 0
            for i in from..<(from + len) {
                guard i < u.count, u[i] >= 48, u[i] <= 57 else { return nil }
                v = v * 10 + Int(u[i] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2),
              let se = num(17, 2) else { return nil }
        var i = 19
        var frac = 0.0
        if i < u.count, u[i] == 46 {  // "."
            i += 1
            var scale = 0.1
            while i < u.count, u[i] >= 48, u[i] <= 57 { frac += Double(u[i] - 48) * scale; scale /= 10; i += 1 }
        }
        var offset = 0
        if i < u.count, u[i] == 43 || u[i] == 45 {  // + or -
            let sign = u[i] == 43 ? 1 : -1
            let oh = num(i + 1, 2) ?? 0
            var om = 0
            if i + 3 < u.count, u[i + 3] == 58 { om = num(i + 4, 2) ?? 0 }
            offset = sign * (oh * 3600 + om * 60)
        }
        var tmv = tm()
        tmv.tm_year = Int32(y - 1900); tmv.tm_mon = Int32(mo - 1); tmv.tm_mday = Int32(d)
        tmv.tm_hour = Int32(h); tmv.tm_min = Int32(mi); tmv.tm_sec = Int32(se)
        let epoch = timegm(&tmv)
        return Date(timeIntervalSince1970: Double(epoch) - Double(offset) + frac)
    }
}
