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
        try await h.sql("SELECT logical_date FROM runs WHERE trigger_kind = 'scheduled' ORDER BY logical_date").compactMap { try $0.dateOrNull("logical_date") }
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
        let ids = try await h.sql("SELECT id FROM runs ORDER BY logical_date").compactMap { try $0.intOrNull("id") }
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
        #expect(try await h.sql("SELECT count(*) AS n FROM runs").first?.intOrNull("n") == 80)
    }

    @Test("a paused flow makes no runs; max_active_runs keeps extra runs queued")
    func pausedAndMaxActive() async throws {
        let h = try await Harness.make([hourly("p"), hourly("m", catchup: true, maxActiveRuns: 1)])
        _ = try await h.store.setPaused(flowId: "p", paused: true)
        h.clock.advance(by: 2 * 3600)
        _ = try await h.store.createDueScheduledRuns(now: h.clock.now())
        #expect(try await h.sql("SELECT count(*) AS n FROM runs WHERE flow_id = 'p'").first?.intOrNull("n") == 0)
        try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
        let states = try await h.sql("SELECT state FROM runs WHERE flow_id = 'm' ORDER BY logical_date").compactMap { try $0.stringOrNull("state") }
        #expect(states == ["running", "queued"])
        try await h.succeedAll()
        try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now()))
        let after = try await h.sql("SELECT state FROM runs WHERE flow_id = 'm' ORDER BY logical_date").compactMap { try $0.stringOrNull("state") }
        #expect(after == ["success", "running"])
    }
}
