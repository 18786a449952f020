import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Overview", .serialized)
struct OverviewTests {
    @Test("runs by state over 24 hours and 7 days, and the last failures with the first failed task's error; the runs list filters by kind")
    func overview() async throws {
        let h = try await Harness.make([diamond, hourly("h")])
        let good = try await h.trigger("diamond")
        while !(try await h.succeedAll().isEmpty) {}
        let bad = try await h.trigger("diamond")
        for m in try await h.take() {
            try await h.report(m, .started)
            try await h.report(m, .failed, error: "boom: cannot open valid.csv")
        }
        _ = try await h.store.createBackfillRuns(flowId: "h", from: Harness.start.addingTimeInterval(-3600), to: Harness.start, conf: [:])
        // A run from ten days ago counts in neither window.
        try await h.sql("UPDATE runs SET created_at = $2 WHERE run_id = $1", [good, Harness.start.addingTimeInterval(-10 * 86_400)])
        let o = try await h.store.overview(now: h.clock.now())
        #expect(o.runsLast24h == ["failed": 1, "queued": 2] && o.runsLast7d == ["failed": 1, "queued": 2], "\(o)")
        let f = try #require(o.recentFailures.first)
        #expect(o.recentFailures.count == 1 && f.runId == bad && f.taskId == "a" && f.error == "boom: cannot open valid.csv")
        var kinds = RunFilter(); kinds.kind = "backfill"
        #expect(try await h.store.runs(kinds).map(\.triggerKind) == ["backfill", "backfill"])
        kinds.kind = "manual"
        #expect(Set(try await h.store.runs(kinds).map(\.runId)) == [good, bad])
    }
}
