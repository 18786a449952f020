/// Calendar arithmetic for UTC instants without the C library: `gmtime_r` and `timegm` take
/// glibc's time-zone lock on every call, which serialised the API's threads on date columns.
/// Howard Hinnant's `days_from_civil` / `civil_from_days`, proleptic Gregorian.
public enum CivilTime {
    /// Days since 1970-01-01 to (year, month 1–12, day 1–31).
    public static func civil(fromDays z0: Int) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    /// (year, month 1–12, day 1–31) to days since 1970-01-01.
    public static func days(year y0: Int, month m: Int, day d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Appends `2026-11-22T06:00:00.123Z` (`separator` "T", `fractionDigits` 0, 3 or 6, `suffix` "Z")
    /// or PostgreSQL's `2026-11-22 06:00:00.123456+00` for the same instant.
    public static func write(secondsSince1970 t: Double, fractionDigits: Int, separator: UInt8 = 84, suffix: StaticString = "Z",
                             into out: inout [UInt8]) {
        var secs = Int(t.rounded(.down))
        let scale = fractionDigits == 6 ? 1_000_000 : fractionDigits == 3 ? 1000 : 1
        var frac = Int(((t - Double(secs)) * Double(scale)).rounded())
        if frac >= scale { secs += 1; frac -= scale }
        let (days, rem) = secs.quotientAndRemainder(dividingBy: 86_400)
        let (dayNumber, secOfDay) = rem < 0 ? (days - 1, rem + 86_400) : (days, rem)
        let (y, m, d) = civil(fromDays: dayNumber)
        digits(max(0, y), 4, &out); out.append(45); digits(m, 2, &out); out.append(45); digits(d, 2, &out)
        out.append(separator)
        digits(secOfDay / 3600, 2, &out); out.append(58); digits(secOfDay / 60 % 60, 2, &out); out.append(58); digits(secOfDay % 60, 2, &out)
        if scale > 1 { out.append(46); digits(frac, fractionDigits, &out) }
        out.append(contentsOf: UnsafeBufferPointer(start: suffix.utf8Start, count: suffix.utf8CodeUnitCount))
    }

    /// Parses `yyyy-mm-dd hh:mm:ss[.frac][Z|±hh[:mm]]` (separator ` `, `T` or `t`) into seconds since 1970;
    /// `requireZone` refuses a text without `Z` or an offset.
    public static func parse(_ s: String, requireZone: Bool) -> Double? {
        var s = s
        return s.withUTF8 { u -> Double? in
            guard u.count >= 19, u[4] == 45, u[7] == 45, u[10] == 84 || u[10] == 116 || u[10] == 32, u[13] == 58, u[16] == 58 else { return nil }
            func num(_ from: Int, _ len: Int) -> Int? {
                guard from + len <= u.count else { return nil }
                var v = 0
                for i in from..<(from + len) {
                    guard u[i] >= 48, u[i] <= 57 else { return nil }
                    v = v * 10 + Int(u[i] - 48)
                }
                return v
            }
            guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2), let se = num(17, 2),
                  (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61 else { return nil }
            var i = 19
            var frac = 0.0
            if i < u.count, u[i] == 46 {
                i += 1
                var scale = 0.1
                guard i < u.count, u[i] >= 48, u[i] <= 57 else { return nil }
                while i < u.count, u[i] >= 48, u[i] <= 57 { frac += Double(u[i] - 48) * scale; scale /= 10; i += 1 }
            }
            var offset = 0
            if i < u.count, u[i] == 90 || u[i] == 122 {
                i += 1
            } else if i < u.count, u[i] == 43 || u[i] == 45 {
                let sign = u[i] == 43 ? 1 : -1
                guard let oh = num(i + 1, 2) else { return nil }
                i += 3
                var om = 0
                if i < u.count, u[i] == 58 {
                    guard let m = num(i + 1, 2) else { return nil }
                    om = m
                    i += 3
                }
                offset = sign * (oh * 3600 + om * 60)
            } else if requireZone {
                return nil
            }
            guard i == u.count else { return nil }
            let secs = days(year: y, month: mo, day: d) * 86_400 + h * 3600 + mi * 60 + se - offset
            return Double(secs) + frac
        }
    }

    /// "00" … "99", so that two digits cost one lookup.
    private static let pairs: [UInt8] = {
        var p: [UInt8] = []
        for n in 0..<100 {
            let tens: Int = n / 10, ones: Int = n % 10
            p.append(UInt8(48 + tens))
            p.append(UInt8(48 + ones))
        }
        return p
    }()

    private static func digits(_ v: Int, _ width: Int, _ out: inout [UInt8]) {
        switch width {
        case 2 where v >= 0 && v < 100:
            out.append(pairs[2 * v]); out.append(pairs[2 * v + 1])
        case 4 where v >= 0 && v < 10_000:
            digits(v / 100, 2, &out); digits(v % 100, 2, &out)
        case 3 where v >= 0 && v < 1000:
            out.append(UInt8(48 + v / 100)); digits(v % 100, 2, &out)
        case 6 where v >= 0 && v < 1_000_000:
            digits(v / 10_000, 2, &out); digits(v / 100 % 100, 2, &out); digits(v % 100, 2, &out)
        default:
            var div = 1
            for _ in 1..<width { div *= 10 }
            if v >= div * 10 { out.append(contentsOf: String(v).utf8); return }
            var v = v
            while div > 0 { out.append(UInt8(truncatingIfNeeded: 48 + v / div)); v %= div; div /= 10 }
        }
    }
}
