import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Backfill", .serialized)
struct BackfillTests {
    @Test("a backfill makes one run per tick in the range, oldest first, and never doubles a tick")
    func backfill() async throws {
        let h = try await Harness.make([hourly("h"), diamond])
        let from = Harness.start.addingTimeInterval(-3 * 3600), to = Harness.start
        let runs = try await h.store.createBackfillRuns(flowId: "h", from: from, to: to, conf: [:])
        #expect(runs.map(\.logicalDate) == (0...3).map { from.addingTimeInterval(Double($0) * 3600) })
        #expect(runs.allSatisfy { $0.triggerKind == "backfill" && $0.state == "queued" })
        #expect(runs[1].dataIntervalStart == runs[0].logicalDate)
        #expect(try await h.store.createBackfillRuns(flowId: "h", from: from, to: to, conf: [:]).isEmpty)
        await #expect(throws: StateConflict.self) { _ = try await h.store.createBackfillRuns(flowId: "h", from: to, to: from, conf: [:]) }
        await #expect(throws: StateConflict.self) { _ = try await h.store.createBackfillRuns(flowId: "diamond", from: from, to: to, conf: [:]) }
        await #expect(throws: NotFound.self) { _ = try await h.store.createBackfillRuns(flowId: "nope", from: from, to: to, conf: [:]) }
    }
}

/// Backfills as objects (#27): planned once, carried out by the schedulers within `maxActiveRuns`.
@Suite("Backfill objects", .serialized)
struct BackfillObjectTests {
    static let hour = 3600.0
    static let first = Harness.start.addingTimeInterval(-7 * hour)

    /// Eight hourly ticks; the first five have runs: two succeeded, two failed, one still running.
    func seeded() async throws -> (h: Harness, runs: [RunRecord]) {
        let h = try await Harness.make([hourly("h")])
        let runs = try await h.store.createBackfillRuns(flowId: "h", from: Self.first, to: Self.first.addingTimeInterval(4 * Self.hour), conf: [:])
        #expect(runs.count == 5)
        try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
        for m in try await h.take() {
            let i = try #require(runs.firstIndex { $0.runId == (try? h.invocation(m).runId) })
            try await h.report(m, .started)
            if i < 2 { try await h.report(m, .succeeded) } else if i < 4 { try await h.report(m, .failed, error: "boom") }
        }
        var states: [String] = []
        for r in runs { states.append(try await h.runState(r.runId)) }
        #expect(states == ["success", "success", "failed", "failed", "running"])
        return (h, runs)
    }

    func request(_ reprocess: Reprocess, max: Int = 2) -> BackfillRequest {
        var r = BackfillRequest(flowId: "h", from: Self.first, to: Harness.start)
        r.reprocess = reprocess
        r.maxActiveRuns = max
        return r
    }

    func activeBackfillRuns(_ h: Harness, _ id: Int) async throws -> Int {
        try await h.sql("SELECT count(*) AS n FROM runs WHERE backfill_id = $1 AND state IN ('queued', 'running')", [id])[0].int("n")
    }

    @Test("the dry run says, tick by tick, what each reprocess choice does; the backfill keeps exactly that plan and carries it out at most maxActiveRuns at a time")
    func planAndCarryOut() async throws {
        let (h, runs) = try await seeded()
        let none = try await h.store.planBackfill(request(.none))
        #expect(none.counts.create == 3 && none.counts.rerun == 0 && none.counts.skip == 5)
        #expect(none.reprocessCounts == ["none": 0, "failed": 2, "all": 4])
        #expect(try await h.store.planBackfill(request(.all)).counts.rerun == 4)
        let plan = try await h.store.planBackfill(request(.failed))
        #expect(plan.ticks.map(\.action) == ["skip", "skip", "rerun", "rerun", "skip", "create", "create", "create"])
        #expect(plan.ticks.map(\.logicalDate) == (0..<8).map { Self.first.addingTimeInterval(Double($0) * Self.hour) })
        #expect(plan.ticks[0].reason == "its run succeeded (reprocess: all re-runs it)" && plan.ticks[4].reason == "its run is running")
        #expect(plan.ticks[2].runId == runs[2].runId && plan.ticks[5].runId == nil)
        // Newest first is the same plan, reversed.
        var newest = request(.failed); newest.newestFirst = true
        #expect(try await h.store.planBackfill(newest).ticks.map(\.logicalDate) == plan.ticks.map(\.logicalDate).reversed())

        let made = try await h.store.createBackfill(request(.failed), now: h.clock.now())
        #expect(made.ticks == plan.ticks, "the backfill's plan is its dry run's")
        #expect(made.backfill.state == "running" && made.backfill.counts == plan.counts && made.backfill.ticksDone == 3, "the skips are done at once")
        let id = made.backfill.id
        var passes = 0
        while try await h.store.backfill(id: id).backfill.state == "running" {
            passes += 1
            #expect(passes < 20, "the backfill never completes")
            if passes >= 20 { break }
            let step = try await h.store.advanceBackfills(now: h.clock.now())
            try await h.broker.perform(step.work)
            #expect(try await activeBackfillRuns(h, id) <= 2, "never more than maxActiveRuns at once")
            try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
            try await h.succeedAll()
        }
        let done = try await h.store.backfill(id: id)
        #expect(done.backfill.state == "completed" && done.backfill.completedAt != nil && done.backfill.ticksDone == 8)
        #expect(done.ticks.map(\.action) == plan.ticks.map(\.action), "it did exactly what its dry run said")
        #expect(done.ticks.allSatisfy { $0.done })
        // The two failed runs ran again and succeeded; the successes and the queued run were not touched by it.
        for i in [2, 3] { #expect(try await h.runState(runs[i].runId) == "success") }
        let mine = try await h.sql("SELECT run_id, trigger_kind, logical_date FROM runs WHERE backfill_id = $1 ORDER BY logical_date", [id])
        #expect(try mine.map { try $0.string("run_id") }.filter { $0 == runs[2].runId || $0 == runs[3].runId }.count == 2)
        #expect(try mine.filter { try $0.date("logical_date") > runs[4].logicalDate }.count == 3)
        #expect(try await h.sql("SELECT count(*) AS n FROM runs WHERE flow_id = 'h'")[0].int("n") == 8, "one run per tick, none twice")
        #expect(done.backfill.runs == ["success": 5])
        let history = try await h.sql("SELECT count(*) AS n FROM task_history h JOIN runs r ON r.id = h.run_pk WHERE r.run_id = $1 AND h.detail = 'cleared'",
                                      [runs[0].runId])
        #expect(try history[0].int("n") == 0)
    }

    @Test("two schedulers advancing the same backfill at once make each tick's run once and keep within maxActiveRuns")
    func racingSchedulers() async throws {
        let h = try await Harness.make([hourly("h")])
        var r = BackfillRequest(flowId: "h", from: Harness.start.addingTimeInterval(-39 * Self.hour), to: Harness.start)
        r.maxActiveRuns = 5
        let id = try await h.store.createBackfill(r, now: h.clock.now()).backfill.id
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        for _ in 0..<30 {
            async let a = h.store.advanceBackfills(now: h.clock.now())
            async let b = other.advanceBackfills(now: h.clock.now())
            let (x, y) = try await (a, b)
            try await h.broker.perform(x.work); try await h.broker.perform(y.work)
            #expect(try await activeBackfillRuns(h, id) <= 5)
            try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
            try await h.succeedAll()
            if try await h.store.backfill(id: id).backfill.state == "completed" { break }
        }
        let d = try await h.store.backfill(id: id)
        #expect(d.backfill.state == "completed" && d.backfill.runs == ["success": 40])
        #expect(try await h.sql("SELECT count(DISTINCT logical_date) AS d, count(*) AS n FROM runs WHERE flow_id = 'h'").map { [try $0.int("d"), try $0.int("n")] } == [[40, 40]])
    }

    @Test("pausing stops new runs, resuming goes on, cancelling cancels the queued runs; a second backfill over a running one's range is refused; bad requests name the problem")
    func pauseResumeCancel() async throws {
        let h = try await Harness.make([hourly("h"), diamond])
        var r = BackfillRequest(flowId: "h", from: Harness.start.addingTimeInterval(-5 * Self.hour), to: Harness.start)
        r.maxActiveRuns = 2
        let id = try await h.store.createBackfill(r, now: h.clock.now()).backfill.id
        await #expect(throws: StateConflict.self) { _ = try await h.store.createBackfill(r, now: h.clock.now()) }
        await #expect(throws: StateConflict.self) { _ = try await h.store.planBackfill(r) }
        #expect(try await h.store.advanceBackfills(now: h.clock.now()).made == 2)
        #expect(try await h.store.setBackfillState(id: id, to: "paused", now: h.clock.now()).detail.backfill.state == "paused")
        try await h.sql("UPDATE runs SET state = 'success' WHERE backfill_id = $1", [id])  // room again, but paused
        #expect(try await h.store.advanceBackfills(now: h.clock.now()).made == 0)
        await #expect(throws: StateConflict.self) { _ = try await h.store.setBackfillState(id: id, to: "paused", now: h.clock.now()) }
        _ = try await h.store.setBackfillState(id: id, to: "running", now: h.clock.now())
        #expect(try await h.store.advanceBackfills(now: h.clock.now()).made == 2)
        let cancelled = try await h.store.setBackfillState(id: id, to: "cancelled", now: h.clock.now()).detail
        #expect(cancelled.backfill.state == "cancelled" && cancelled.backfill.runs == ["success": 2, "cancelled": 2])
        #expect(cancelled.ticks.filter { !$0.done }.count == 2, "the ticks it never reached stay undone")
        #expect(try await h.store.advanceBackfills(now: h.clock.now()).made == 0)
        await #expect(throws: StateConflict.self) { _ = try await h.store.setBackfillState(id: id, to: "running", now: h.clock.now()) }
        // Cancelled: the range is free again, and the new plan skips what the old one made.
        let again = try await h.store.planBackfill(r)
        #expect(again.counts.skip == 4 && again.counts.create == 2)
        #expect(again.ticks.contains { $0.reason == "its run is cancelled; a cancelled run is not re-run" })

        var bad = r; bad.from = r.to; bad.to = r.from
        await #expect(throws: BadRequest.self) { _ = try await h.store.planBackfill(bad) }
        var unscheduled = r; unscheduled.flowId = "diamond"
        await #expect(throws: StateConflict.self) { _ = try await h.store.planBackfill(unscheduled) }
        var unknown = r; unknown.flowId = "nope"
        await #expect(throws: NotFound.self) { _ = try await h.store.planBackfill(unknown) }
        var zero = r; zero.maxActiveRuns = 0
        await #expect(throws: BadRequest.self) { _ = try await h.store.planBackfill(zero) }
        await #expect(throws: NotFound.self) { _ = try await h.store.backfill(id: 999_999) }
    }
    @Test("a backfill whose conf no longer fits the flow (changed since the plan) skips its ticks saying why, and does not hold up another backfill")
    func confNoLongerFits() async throws {
        let withParam = Flow("p", schedule: .cron("0 * * * *"), params: [Param("size", .int, default: 1)]) { f in _ = noop(f, "t") }
        let h = try await Harness.make([withParam, hourly("h")])
        var r = BackfillRequest(flowId: "p", from: Harness.start.addingTimeInterval(-Self.hour), to: Harness.start)
        r.conf = ["size": 3]
        let bad = try await h.store.createBackfill(r, now: h.clock.now()).backfill.id
        let good = try await h.store.createBackfill(BackfillRequest(flowId: "h", from: Harness.start, to: Harness.start), now: h.clock.now()).backfill.id
        // The flow's new version drops the param.
        try await h.store.registerFlows([Flow("p", schedule: .cron("0 * * * *")) { f in _ = noop(f, "t") }, hourly("h")], now: h.clock.now())
        #expect(try await h.store.advanceBackfills(now: h.clock.now()).made == 1, "the other backfill goes on")
        let d = try await h.store.backfill(id: bad)
        #expect(d.ticks.allSatisfy { $0.done && $0.action == "skip" && $0.reason?.contains("no longer fits the flow") == true }, "\(d.ticks)")
        _ = try await h.store.advanceBackfills(now: h.clock.now())
        #expect(try await h.store.backfill(id: bad).backfill.state == "completed")
        #expect(try await h.store.backfill(id: good).backfill.runs == ["queued": 1])
    }
}
