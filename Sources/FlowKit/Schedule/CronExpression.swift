public import Foundation

/// A five-field cron expression with Vixie cron semantics.
///
/// Lists, ranges, steps, month and weekday names, `7` as Sunday, `?` as `*`, and the
/// presets `@hourly @daily @midnight @weekly @monthly @quarterly @yearly @annually`.
/// When both day-of-month and day-of-week are restricted, a day matching either fires.
///
/// ```swift
/// let cron = try CronExpression("0 */6 * * *")
/// let next = try cron.nextFire(after: .now, in: TimeZone(identifier: "Europe/Madrid")!)
/// ```
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    public let source: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    let daysOfWeek: Set<Int>  // 0 = Sunday
    let domRestricted: Bool
    let dowRestricted: Bool
    /// A job whose hour field is `*` or a step follows elapsed time across DST changes;
    /// any other is a fixed-time job (see `nextFire`).
    public let followsElapsedTime: Bool
    /// Fires in both occurrences of a fall-back overlap: its hour field, or its minute field,
    /// is `*` or a step (`*/15 2 * * *`) — Debian cron's rule for wildcard jobs, and croniter's.
    public let repeatsInFallBackOverlap: Bool

    public var description: String { source }

    public static let presets: [String: String] = [
        "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
        "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@quarterly": "0 0 1 */3 *",
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
    ]

    private static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    private static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    private static let daysInMonth = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

    public init(_ expression: String) throws {
        let trimmed = expression.trimmingCharacters(in: .whitespaces)
        source = trimmed
        var text = trimmed
        if trimmed.hasPrefix("@") {
            guard let expanded = Self.presets[trimmed.lowercased()] else { throw CronError.unknownPreset(expression: trimmed) }
            text = expanded
        }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard parts.count == 5 else { throw CronError.wrongFieldCount(expression: trimmed, count: parts.count) }
        func field(_ i: Int, _ name: String, _ lo: Int, _ hi: Int, _ names: [String]?, nameBase: Int) throws -> Set<Int> {
            try Self.parseField(parts[i], expression: trimmed, field: name, position: i + 1, lo: lo, hi: hi,
                                names: names, nameBase: nameBase)
        }
        minutes = try field(0, "minute", 0, 59, nil, nameBase: 0)
        hours = try field(1, "hour", 0, 23, nil, nameBase: 0)
        daysOfMonth = try field(2, "day-of-month", 1, 31, nil, nameBase: 1)
        months = try field(3, "month", 1, 12, Self.monthNames, nameBase: 1)
        var dow = try field(4, "day-of-week", 0, 7, Self.dayNames, nameBase: 0)
        if dow.remove(7) != nil { dow.insert(0) }
        daysOfWeek = dow
        // Vixie cron: a field starting with `*` (or `?`) is unrestricted for the OR rule.
        domRestricted = !(parts[2].hasPrefix("*") || parts[2].hasPrefix("?"))
        dowRestricted = !(parts[4].hasPrefix("*") || parts[4].hasPrefix("?"))
        func wildcardOrStep(_ f: String) -> Bool { f.hasPrefix("*") || f.hasPrefix("?") || f.contains("/") }
        followsElapsedTime = wildcardOrStep(parts[1])
        repeatsInFallBackOverlap = followsElapsedTime || wildcardOrStep(parts[0])
        try checkCanFire()
    }

    private static func parseField(_ text: String, expression: String, field: String, position: Int,
                                   lo: Int, hi: Int, names: [String]?, nameBase: Int) throws -> Set<Int> {
        func fail(_ value: String, _ why: String) -> CronError {
            .invalidField(expression: expression, field: field, position: position, value: value, reason: why)
        }
        func number(_ s: String, whole: String) throws -> Int {
            if let n = Int(s) {
                guard n >= lo && n <= hi else { throw fail(whole, "\(n) is out of range \(lo)-\(hi)") }
                return n
            }
            if let names, let idx = names.firstIndex(of: s.lowercased()) { return idx + nameBase }
            if s.isEmpty { throw fail(whole, "empty value") }
            let allowed = names.map { " or a name (\($0.joined(separator: ", ")))" } ?? ""
            throw fail(whole, "`\(s)` is not a number in \(lo)-\(hi)\(allowed)")
        }
        var result = Set<Int>()
        guard !text.isEmpty else { throw fail(text, "empty field") }
        for item in text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            guard !item.isEmpty else { throw fail(text, "empty list item") }
            var rangePart = item
            var step = 1
            if let slash = item.firstIndex(of: "/") {
                rangePart = String(item[..<slash])
                let stepText = String(item[item.index(after: slash)...])
                guard let s = Int(stepText) else { throw fail(item, "step `\(stepText)` is not a number") }
                guard s > 0 else { throw fail(item, "step must be at least 1") }
                guard s <= hi else { throw fail(item, "step \(s) is larger than the field's maximum \(hi)") }
                step = s
            }
            var start: Int, end: Int
            if rangePart == "*" || rangePart == "?" {
                start = lo; end = hi
                if field == "day-of-week" { end = 6 }
            } else if let dash = rangePart.firstIndex(of: "-") {
                start = try number(String(rangePart[..<dash]), whole: item)
                end = try number(String(rangePart[rangePart.index(after: dash)...]), whole: item)
                guard start <= end else { throw fail(item, "range start \(start) is after its end \(end)") }
            } else {
                start = try number(rangePart, whole: item)
                // Vixie: `5/15` means from 5 to the maximum in steps of 15.
                end = item.contains("/") ? hi : start
            }
            for v in stride(from: start, through: end, by: step) { result.insert(v) }
        }
        return result
    }

    private func checkCanFire() throws {
        // Day-of-week restricted with the OR rule always finds a day; otherwise some allowed
        // month must have one of the allowed days.
        if dowRestricted && domRestricted { return }
        if dowRestricted { return }
        let canFire = months.contains { m in daysOfMonth.contains { $0 <= Self.daysInMonth[m - 1] } }
        if !canFire {
            let days = daysOfMonth.sorted().map(String.init).joined(separator: ",")
            let names = months.sorted().map { Self.monthNames[$0 - 1].capitalized }.joined(separator: ",")
            throw CronError.neverFires(expression: source, reason: "day \(days) never occurs in \(names)")
        }
    }

    func matchesDay(year: Int, month: Int, day: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        let dom = daysOfMonth.contains(day)
        let dow = daysOfWeek.contains(weekday)
        if domRestricted && dowRestricted { return dom || dow }
        return dom && dow
    }

    /// The first fire instant strictly after `date`, with `timeZone`'s wall clock.
    ///
    /// Daylight saving time: a fixed-time job whose local time falls in a spring-forward gap
    /// fires once, at the first valid instant after the gap; one whose local time occurs twice
    /// in a fall-back overlap fires once, at the first occurrence. A job whose hour field is
    /// `*` or a step follows elapsed time: it fires in both occurrences of an overlap, and
    /// times inside a gap do not exist for it. A job whose minute field is `*` or a step
    /// (`*/15 2 * * *`) also fires in both occurrences of an overlap.
    public func nextFire(after date: Date, in timeZone: TimeZone) -> Date? {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        // Walk local calendar days starting a day before, to catch overlaps at the edges.
        let startOffset = timeZone.secondsFromGMT(for: date)
        let localStart = date.addingTimeInterval(TimeInterval(startOffset) - 86_400)
        var day = cal.dateComponents([.year, .month, .day], from: localStart)
        let sortedHours = hours.sorted(), sortedMinutes = minutes.sorted()
        // Wall-clock times more than two hours before `date` cannot fire after it (no zone
        // shifts its offset by more than two hours at once).
        let earliestWall = date.timeIntervalSince1970 + Double(startOffset) - 7200
        // Nine years cover the longest gap between two leap days (e.g. 2096 → 2104).
        for _ in 0..<(366 * 9) {
            guard let dayStart = cal.date(from: day) else { return nil }
            let wc = cal.dateComponents([.year, .month, .day, .weekday], from: dayStart)
            if matchesDay(year: wc.year!, month: wc.month!, day: wc.day!, weekday: wc.weekday! - 1) {
                var best: Date?
                hourLoop: for h in sortedHours {
                    for m in sortedMinutes {
                        let wall = dayStart.timeIntervalSince1970 + Double(h * 3600 + m * 60)
                        if wall < earliestWall { continue }
                        if let b = best, wall - Double(startOffset) > b.timeIntervalSince1970 + 7200 { break hourLoop }
                        for instant in instants(forWall: wall, in: timeZone) where instant > date {
                            if best == nil || instant < best! { best = instant }
                        }
                    }
                }
                if let best { return best }
            }
            guard let next = cal.date(byAdding: .day, value: 1, to: dayStart) else { return nil }
            day = cal.dateComponents([.year, .month, .day], from: next)
        }
        return nil
    }

    /// The next `count` fire instants strictly after `date`.
    public func nextFires(after date: Date, in timeZone: TimeZone, count: Int) -> [Date] {
        var out: [Date] = []
        var cursor = date
        while out.count < count, let n = nextFire(after: cursor, in: timeZone) {
            out.append(n)
            cursor = n
        }
        return out
    }

    /// The instants at which a wall-clock time (seconds since 1970 as if UTC) occurs in `tz`, after
    /// applying the DST rules above.
    func instants(forWall wall: TimeInterval, in tz: TimeZone) -> [Date] {
        let probe = Date(timeIntervalSince1970: wall)
        var offsets = Set<Int>()
        for shift in [-86_400.0, 0, 86_400] { offsets.insert(tz.secondsFromGMT(for: probe.addingTimeInterval(shift))) }
        var valid: [Date] = []
        for o in offsets {
            let i = Date(timeIntervalSince1970: wall - Double(o))
            if tz.secondsFromGMT(for: i) == o { valid.append(i) }
        }
        valid.sort()
        if valid.isEmpty {
            // In a spring-forward gap.
            if followsElapsedTime { return [] }
            let maxOffset = offsets.max() ?? 0
            guard let transition = tz.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: wall - Double(maxOffset))) else { return [] }
            return [transition]
        }
        if valid.count > 1 && !repeatsInFallBackOverlap { return [valid[0]] }
        return valid
    }
}

/// Resolves an IANA time zone name, or says which name was wrong.
public func resolveTimeZone(_ name: String) throws -> TimeZone {
    guard !name.isEmpty, let tz = TimeZone(identifier: name) else { throw CronError.unknownTimeZone(name) }
    return tz
}
