import Foundation
import Testing
@testable import FlowKit

func instant(_ s: String) -> Date { ISO8601DateFormatter().date(from: s)! }
func iso(_ d: Date) -> String { ISO8601DateFormatter().string(from: d) }
let utc = TimeZone(identifier: "UTC")!
let madrid = TimeZone(identifier: "Europe/Madrid")!

func fires(_ expr: String, _ tz: TimeZone = utc, after: String, count: Int) throws -> [String] {
    try CronExpression(expr).nextFires(after: instant(after), in: tz, count: count).map(iso)
}

@Suite("Cron expressions")
struct CronTests {
    @Test("lists, ranges and steps")
    func fields() throws {
        #expect(try fires("0,30 9-10 * * *", after: "2026-11-22T00:00:00Z", count: 4)
            == ["2026-11-22T09:00:00Z", "2026-11-22T09:30:00Z", "2026-11-22T10:00:00Z", "2026-11-22T10:30:00Z"])
        #expect(try fires("*/20 * * * *", after: "2026-11-22T00:05:00Z", count: 3)
            == ["2026-11-22T00:20:00Z", "2026-11-22T00:40:00Z", "2026-11-22T01:00:00Z"])
        #expect(try fires("5/20 0 * * *", after: "2026-11-22T00:00:00Z", count: 3)
            == ["2026-11-22T00:05:00Z", "2026-11-22T00:25:00Z", "2026-11-22T00:45:00Z"])
        #expect(try fires("0 10-16/3 * * *", after: "2026-11-22T00:00:00Z", count: 3)
            == ["2026-11-22T10:00:00Z", "2026-11-22T13:00:00Z", "2026-11-22T16:00:00Z"])
    }

    @Test("month and weekday names, and 7 as Sunday")
    func names() throws {
        // 2026-11-22 is a Sunday.
        #expect(try fires("0 9 * * mon-fri", after: "2026-11-21T00:00:00Z", count: 2) == ["2026-11-23T09:00:00Z", "2026-11-24T09:00:00Z"])
        #expect(try fires("0 0 * * 7", after: "2026-11-20T00:00:00Z", count: 1) == ["2026-11-22T00:00:00Z"])
        #expect(try fires("0 0 * * SUN", after: "2026-11-20T00:00:00Z", count: 1) == ["2026-11-22T00:00:00Z"])
        #expect(try fires("0 0 1 jan,jul *", after: "2026-11-22T00:00:00Z", count: 2) == ["2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"])
    }

    @Test("day-of-month and day-of-week both restricted: either matches")
    func orRule() throws {
        // The 13th, or any Friday.
        #expect(try fires("0 0 13 * fri", after: "2026-11-09T00:00:00Z", count: 3)
            == ["2026-11-13T00:00:00Z", "2026-11-20T00:00:00Z", "2026-11-27T00:00:00Z"])
        #expect(try fires("0 0 12 * fri", after: "2026-11-09T00:00:00Z", count: 3)
            == ["2026-11-12T00:00:00Z", "2026-11-13T00:00:00Z", "2026-11-20T00:00:00Z"])
        // Only one restricted: both must match (every day is a 1st when the weekday is *).
        #expect(try fires("0 0 1 * *", after: "2026-11-09T00:00:00Z", count: 1) == ["2026-12-01T00:00:00Z"])
    }

    @Test("a stepped star (*/n) in a day field counts as unrestricted, as in Vixie cron")
    func steppedStarIsUnrestricted() throws {
        // Odd days that are also Mondays (croniter would OR them instead).
        #expect(try fires("0 0 */2 * mon", after: "2026-11-01T00:00:00Z", count: 3)
            == ["2026-11-09T00:00:00Z", "2026-11-23T00:00:00Z", "2026-12-07T00:00:00Z"])
    }

    @Test("? reads as *")
    func question() throws {
        #expect(try fires("0 12 ? * *", after: "2026-11-22T00:00:00Z", count: 1) == ["2026-11-22T12:00:00Z"])
    }

    @Test("presets", arguments: [
        ("@hourly", "2026-11-22T01:00:00Z"), ("@daily", "2026-11-23T00:00:00Z"), ("@midnight", "2026-11-23T00:00:00Z"),
        ("@weekly", "2026-11-29T00:00:00Z"), ("@monthly", "2026-12-01T00:00:00Z"), ("@quarterly", "2027-01-01T00:00:00Z"),
        ("@yearly", "2027-01-01T00:00:00Z"), ("@annually", "2027-01-01T00:00:00Z"),
    ])
    func presets(_ preset: String, _ expected: String) throws {
        #expect(try fires(preset, after: "2026-11-22T00:30:00Z", count: 1) == [expected])
    }

    @Test("time zones: the expression is read on the zone's wall clock")
    func zones() throws {
        // 06:00 in Madrid is 05:00 UTC in winter.
        #expect(try fires("0 6 * * *", madrid, after: "2026-11-22T00:00:00Z", count: 1) == ["2026-11-22T05:00:00Z"])
        #expect(try fires("0 */6 * * *", madrid, after: "2026-11-22T00:00:00Z", count: 2) == ["2026-11-22T05:00:00Z", "2026-11-22T11:00:00Z"])
        #expect(try fires("30 9 * * *", TimeZone(identifier: "Asia/Kolkata")!, after: "2026-11-22T00:00:00Z", count: 1) == ["2026-11-22T04:00:00Z"])
    }

    @Test("29 February fires in leap years only")
    func leapDay() throws {
        #expect(try fires("0 0 29 2 *", after: "2026-01-01T00:00:00Z", count: 2) == ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"])
    }

    @Test("invalid expressions name the field, the value and the reason", arguments: [
        ("0 24 * * *", "field 2 (hour) value `24`: 24 is out of range 0-23"),
        ("61 * * * *", "field 1 (minute) value `61`: 61 is out of range 0-59"),
        ("0 0 * foo *", "field 4 (month) value `foo`: `foo` is not a number in 1-12 or a name"),
        ("0 0 * * 8", "field 5 (day-of-week) value `8`: 8 is out of range 0-7"),
        ("*/0 * * * *", "field 1 (minute) value `*/0`: step must be at least 1"),
        ("0 5-2 * * *", "field 2 (hour) value `5-2`: range start 5 is after its end 2"),
        ("0 0 * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 4"),
        ("@fortnightly", "unknown preset"),
        ("1,,2 * * * *", "empty list item"),
    ])
    func invalid(_ expr: String, _ message: String) {
        do {
            _ = try CronExpression(expr)
            Issue.record("`\(expr)` should be refused")
        } catch let e as CronError {
            #expect(e.description.contains(message), "\(e.description)")
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test("expressions that can never fire are refused with the reason")
    func neverFires() {
        #expect(throws: CronError.neverFires(expression: "0 0 31 2 *", reason: "day 31 never occurs in Feb")) { try CronExpression("0 0 31 2 *") }
        #expect(throws: CronError.self) { try CronExpression("0 0 30,31 2 *") }
        // With a weekday too, the OR rule makes it fire.
        #expect(throws: Never.self) { try CronExpression("0 0 31 2 mon") }
    }

    @Test("an unknown zone is refused by name")
    func unknownZone() {
        #expect(throws: CronError.unknownTimeZone("Mars/Olympus")) { try resolveTimeZone("Mars/Olympus") }
    }
}
