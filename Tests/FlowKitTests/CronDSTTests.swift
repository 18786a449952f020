import Foundation
import Testing
@testable import FlowKit

@Suite("Cron and daylight saving time")
struct CronDSTTests {
    // Europe/Madrid 2026: clocks go 02:00 → 03:00 on 29 March (01:00 UTC) and 03:00 → 02:00 on
    // 25 October (01:00 UTC).

    @Test("a fixed-time job in a spring-forward gap fires once, at the first instant after the gap")
    func springGapFixed() throws {
        #expect(try fires("30 2 * * *", madrid, after: "2026-03-28T12:00:00Z", count: 2)
            == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"])
        // Two fixed times inside the gap still fire once.
        #expect(try fires("15,45 2 * * *", madrid, after: "2026-03-28T12:00:00Z", count: 2)
            == ["2026-03-29T01:00:00Z", "2026-03-30T00:15:00Z"])
    }

    @Test("a fixed-time job in a fall-back overlap fires once, at the first occurrence")
    func fallOverlapFixed() throws {
        #expect(try fires("30 2 * * *", madrid, after: "2026-10-24T12:00:00Z", count: 2)
            == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"])
    }

    @Test("a job whose minute field is a wildcard or a step fires in both occurrences of the repeated hour (Debian cron, croniter)")
    func fallOverlapMinuteWildcard() throws {
        // croniter 7.0.0 gives these eight, then the next day's 02:00 CET.
        #expect(try fires("*/15 2 * * *", madrid, after: "2026-10-24T12:00:00Z", count: 9)
            == ["2026-10-25T00:00:00Z", "2026-10-25T00:15:00Z", "2026-10-25T00:30:00Z", "2026-10-25T00:45:00Z",
                "2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z", "2026-10-25T01:45:00Z",
                "2026-10-26T01:00:00Z"])
        #expect(try fires("* 2 * * *", madrid, after: "2026-10-25T00:58:30Z", count: 3)
            == ["2026-10-25T00:59:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:01:00Z"])
        // In a spring-forward gap it stays a fixed-hour job: once, at the end of the gap (croniter too).
        #expect(try fires("*/15 2 * * *", madrid, after: "2026-03-28T12:00:00Z", count: 2)
            == ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"])
    }

    @Test("an hourly job follows elapsed time: both occurrences of the repeated hour fire")
    func fallOverlapElapsed() throws {
        #expect(try fires("30 * * * *", madrid, after: "2026-10-24T23:00:00Z", count: 4)
            == ["2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"])
        #expect(try fires("0 */1 * * *", madrid, after: "2026-10-24T23:30:00Z", count: 3)
            == ["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"])
    }

    @Test("an hourly job skips the wall-clock times a spring-forward gap removes")
    func springGapElapsed() throws {
        #expect(try fires("30 * * * *", madrid, after: "2026-03-29T00:00:00Z", count: 2)
            == ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"])
    }

    @Test("catalunya_data_pipeline's schedule across the spring change")
    func sixHourly() throws {
        // 00:00, (02:00 is not in */6), 06:00 CEST = 04:00 UTC.
        #expect(try fires("0 */6 * * *", madrid, after: "2026-03-28T22:00:00Z", count: 2)
            == ["2026-03-28T23:00:00Z", "2026-03-29T04:00:00Z"])
    }
}
