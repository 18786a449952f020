import Foundation

/// ISO-8601 instants in UTC, formatted without Foundation's formatters (which cost tens of
/// microseconds to create on Linux, and sit on hot paths: every result, every API date).
public enum Instant {
    /// `2026-11-22T06:00:00Z`, or with `fractionDigits` 3 or 6: `2026-11-22T06:00:00.123Z`.
    public static func format(_ date: Date, fractionDigits: Int = 0) -> String {
        let t = date.timeIntervalSince1970
        var secs = Int(t.rounded(.down))
        let scale = fractionDigits == 6 ? 1_000_000 : fractionDigits == 3 ? 1000 : 1
        var frac = Int(((t - Double(secs)) * Double(scale)).rounded())
        if frac >= scale { secs += 1; frac -= scale }
        var tmv = tm()
        var tt = time_t(secs)
        gmtime_r(&tt, &tmv)
        var out = ""
        out.reserveCapacity(27)
        func pad(_ v: Int, _ width: Int) {
            let s = String(v)
            if s.count < width { out += String(repeating: "0", count: width - s.count) }
            out += s
        }
        pad(Int(tmv.tm_year) + 1900, 4); out += "-"; pad(Int(tmv.tm_mon) + 1, 2); out += "-"; pad(Int(tmv.tm_mday), 2)
        out += "T"; pad(Int(tmv.tm_hour), 2); out += ":"; pad(Int(tmv.tm_min), 2); out += ":"; pad(Int(tmv.tm_sec), 2)
        if scale > 1 { out += "."; pad(frac, fractionDigits) }
        out += "Z"
        return out
    }

    /// Parses `2026-11-22T06:00:00Z`, with optional fraction and `+hh:mm` offset.
    public static func parse(_ s: String) -> Date? {
        let u = Array(s.utf8)
        guard u.count >= 20, u[4] == 45, u[7] == 45, u[10] == 84 || u[10] == 116 || u[10] == 32, u[13] == 58, u[16] == 58 else { return nil }
        func num(_ from: Int, _ len: Int) -> Int? {
            var v = 0
            for i in from..<(from + len) {
                guard i < u.count, u[i] >= 48, u[i] <= 57 else { return nil }
                v = v * 10 + Int(u[i] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2), let se = num(17, 2),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61 else { return nil }
        var i = 19
        var frac = 0.0
        if u[i] == 46 {
            i += 1
            var scale = 0.1
            guard i < u.count, u[i] >= 48, u[i] <= 57 else { return nil }
            while i < u.count, u[i] >= 48, u[i] <= 57 { frac += Double(u[i] - 48) * scale; scale /= 10; i += 1 }
        }
        guard i < u.count else { return nil }
        var offset = 0
        if u[i] == 90 || u[i] == 122 {
            i += 1
        } else if u[i] == 43 || u[i] == 45 {
            let sign = u[i] == 43 ? 1 : -1
            guard let oh = num(i + 1, 2), i + 3 < u.count, u[i + 3] == 58, let om = num(i + 4, 2) else { return nil }
            offset = sign * (oh * 3600 + om * 60)
            i += 6
        } else { return nil }
        guard i == u.count else { return nil }
        var tmv = tm()
        tmv.tm_year = Int32(y - 1900); tmv.tm_mon = Int32(mo - 1); tmv.tm_mday = Int32(d)
        tmv.tm_hour = Int32(h); tmv.tm_min = Int32(mi); tmv.tm_sec = Int32(se)
        return Date(timeIntervalSince1970: Double(timegm(&tmv)) - Double(offset) + frac)
    }
}
