import FlowKit
import FlowKitTesting
import MyFlows
import Testing

/// A flow tested like any Swift code: `swift test` runs it in-process (no PostgreSQL, Redis or
/// scheduler) and checks what each task did. `myflowctl flows test daily_report` does the same
/// from the command line.
@Suite("daily_report")
struct DailyReportTests {
    @Test("fetch feeds both summaries, and publish gets them both")
    func publishesBothSummaries() async throws {
        let run = try await FlowTestRun.run(dailyReport, .init(conf: ["region": "valencia"], noDelay: true))
        #expect(run.succeeded)
        #expect(run.result(of: "fetch") == ["rows": 1200])
        #expect(run.result(of: "summary_by_day") == ["days": 12])
        #expect(run.result(of: "summary_by_city") == ["cities": 12])
        #expect(run["summary_by_city"]?.log.contains("region=valencia") == true)
        #expect(run.result(of: "publish") == ["published": [["days": 12], ["cities": 12]]])
    }
}
