import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

func hourly(_ id: String, catchup: Bool = false, maxActiveRuns: Int = 16) -> Flow {
    Flow(id, schedule: .cron("0 * * * *"), catchup: catchup, maxActiveRuns: maxActiveRuns) { f in _ = noop(f, "t") }
}

@Suite("Cron ticker", .serialized)
struct CronTickerTests {
    func scheduledDates(_ h: Harness) async throws -> [Date] {
        try await h.sql("SELECT logical_date FROM runs WHERE trigger_kind = 'scheduled' ORDER BY logical_date").compactMap { $0.date("logical_date") }
    }

    @Test("a due tick makes exactly one run, with the interval since the previous tick")
    func oneRunPerTick() async throws {
        let h = try await Harness.make([hourly("h")])  // registered at 06:00, next tick 07:00
        #expect(try await h.store.createDueScheduledRuns(now: h.clock.now()).isEmpty)
        h.clock.advance(by: 3600)
        let created = try await h.store.createDueScheduledRuns(now: h.clock.now())
        #expect(created.count == 1)
        #expect(created[0].logicalDate == Harness.start.addingTimeInterval(3600))
        #expect(created[0].dataIntervalStart == Harness.start)
        #expect(try await h.store.createDueScheduledRuns(now: h.clock.now()).isEmpty)
    }

    @Test("catchup off: after downtime only the latest missed tick runs")
    func catchupOff() async throws {
        let h = try await Harness.make([hourly("h")])
        h.clock.advance(by: 5 * 3600 + 60)
        _ = try await h.store.createDueScheduledRuns(now: h.clock.now())
        #expect(try await scheduledDates(h) == [Harness.start.addingTimeInterval(5 * 3600)])
    }

    @Test("catchup on: every missed tick runs, oldest first")
    func catchupOn() async throws {
        let h = try await Harness.make([hourly("h", catchup: true)])
        h.clock.advance(by: 3 * 3600)
        _ = try await h.store.createDueScheduledRuns(now: h.clock.now())
        #expect(try await scheduledDates(h) == (1...3).map { Harness.start.addingTimeInterval(Double($0) * 3600) })
        let ids = try await h.sql("SELECT id FROM runs ORDER BY logical_date").compactMap { $0.int("id") }
        #expect(ids == ids.sorted())
    }

    @Test("across a scheduler restart no tick is missed and none is doubled")
    func restart() async throws {
        let h = try await Harness.make([hourly("h", catchup: true)])
        h.clock.advance(by: 3600)
        _ = try await h.store.createDueScheduledRuns(now: h.clock.now())
        // A new scheduler process: new store, flows registered again, then two more hours pass.
        let restarted = SchedulerStore(db: PGPool(h.url, size: 1))
        try await restarted.registerFlows([hourly("h", catchup: true)], now: h.clock.now())
        h.clock.advance(by: 2 * 3600)
        _ = try await restarted.createDueScheduledRuns(now: h.clock.now())
        _ = try await h.store.createDueScheduledRuns(now: h.clock.now())
        #expect(try await scheduledDates(h) == (1...3).map { Harness.start.addingTimeInterval(Double($0) * 3600) })
    }

    @Test("two schedulers racing over the same due ticks make one run per tick")
    func race() async throws {
        let flows = (0..<20).map { hourly("f\($0)", catchup: true) }
        let h = try await Harness.make(flows)
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        h.clock.advance(by: 4 * 3600)
        let now = h.clock.now()
        async let a = h.store.createDueScheduledRuns(now: now)
        async let b = other.createDueScheduledRuns(now: now)
        let (ra, rb) = try await (a, b)
        #expect(ra.count + rb.count == 80)
        let dup = try await h.sql("SELECT flow_id, logical_date, count(*) AS n FROM runs GROUP BY 1, 2 HAVING count(*) > 1")
        #expect(dup.isEmpty)
        #expect(try await h.sql("SELECT count(*) AS n FROM runs").first?.int("n") == 80)
    }

    @Test("a paused flow makes no runs; max_active_runs keeps extra runs queued")
    func pausedAndMaxActive() async throws {
        let h = try await Harness.make([hourly("p"), hourly("m", catchup: true, maxActiveRuns: 1)])
        _ = try await h.store.setPaused(flowId: "p", paused: true)
        h.clock.advance(by: 2 * 3600)
        _ = try await h.store.createDueScheduledRuns(now: h.clock.now())
        #expect(try await h.sql("SELECT count(*) AS n FROM runs WHERE flow_id = 'p'").first?.int("n") == 0)
        try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
        let states = try await h.sql("SELECT state FROM runs WHERE flow_id = 'm' ORDER BY logical_date").compactMap { $0.string("state") }
        #expect(states == ["running", "queued"])
        try await h.succeedAll()
        try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
        let after = try await h.sql("SELECT state FROM runs WHERE flow_id = 'm' ORDER BY logical_date").compactMap { $0.string("state") }
        #expect(after == ["success", "running"])
    }
}

@Suite("Registration", .serialized)
struct RegistrationTests {
    @Test("a changed flow gets a new version; runs keep the version they started with; a removed flow becomes inactive")
    func versions() async throws {
        let v1 = Flow("evolving") { f in _ = noop(f, "a") }
        let v2 = Flow("evolving") { f in
            let a = noop(f, "a")
            a --> noop(f, "b")
        }
        let h = try await Harness.make([v1, hourly("other")])
        let run = try await h.trigger("evolving")
        #expect(try await h.store.registerFlows([v1, hourly("other")], now: h.clock.now()).isEmpty)
        #expect(try await h.store.registerFlows([v2], now: h.clock.now()) == ["evolving"])
        let flow = try await h.store.flow("evolving")
        #expect(flow.version == 2)
        #expect(flow.definition?.tasks.map(\.id) == ["a", "b"])
        #expect(try await h.store.run(run).flowVersion == 1)
        #expect(try await h.store.flow("other").isActive == false)
        // The old run finishes under version 1: one task.
        try await h.succeedAll()
        #expect(try await h.runState(run) == "success")
    }
}

@Suite("Racing schedulers", .serialized)
struct RacingSchedulerTests {
    @Test("two schedulers starting the same queued runs and applying the same events enqueue each try once")
    func readyTasks() async throws {
        let wide = Flow("wide") { f in
            let root = noop(f, "root")
            root --> (0..<20).map { noop(f, "p\($0)") }
        }
        let h = try await Harness.make([wide])
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        var runs: [String] = []
        for _ in 0..<10 {
            runs.append(try await h.store.createRun(flowId: "wide", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now()).runId)
        }
        async let a = h.store.startQueuedRuns(now: h.clock.now())
        async let b = other.startQueuedRuns(now: h.clock.now())
        let (wa, wb) = try await (a, b)
        #expect(wa.enqueue.count + wb.enqueue.count == 10)
        try await h.broker.perform(wa)
        try await h.broker.perform(wb)
        // Both schedulers receive every root's success (a redelivered event) at the same time.
        let roots = try await h.take()
        let events = try roots.map { m -> WorkerEvent in
            let inv = try h.invocation(m)
            return WorkerEvent(kind: .succeeded, worker: "w", at: h.clock.now(), messageId: m.id, runId: inv.runId, taskId: inv.taskId, tryNumber: 1)
        }
        async let c = h.store.applyEvents(events, now: h.clock.now())
        async let d = other.applyEvents(events.reversed(), now: h.clock.now())
        let (wc, wd) = try await (c, d)
        #expect(wc.enqueue.count + wd.enqueue.count == 200)
        let ids = (wc.enqueue + wd.enqueue).map(\.id)
        #expect(Set(ids).count == 200)
        let tries = try await h.sql("SELECT count(*) AS n FROM task_tries").first?.int("n")
        #expect(tries == 210)
    }
}

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
