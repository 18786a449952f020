import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

let sensed = Flow("sensed", params: [Param("timeout", .number)]) { f in
    f.sensor("wait", pokeInterval: .seconds(3), timeout: .seconds(10), timeoutParam: "timeout") { _ in .notYet("x") } --> noop(f, "after")
}

@Suite("Sensors", .serialized)
struct SensorTests {
    func poke(_ h: Harness, _ m: CeleryMessage, ready: Bool = false) async throws {
        try await h.report(m, .started)
        try await h.report(m, ready ? .succeeded : .rescheduled, result: ready ? ["ok": true] : nil, error: ready ? nil : "not there")
    }

    @Test("a not-yet poke waits up_for_reschedule in the same try; a new scheduler process queues the next poke on time; the deadline fails it")
    func pokesAndDeadline() async throws {
        let h = try await Harness.make([sensed])
        let run = try await h.trigger("sensed")
        var m = try #require(try await h.take().first)
        try await poke(h, m)
        var ti = try #require(try await h.store.taskInstances(runId: run).first { $0.taskId == "wait" })
        #expect(ti.state == "up_for_reschedule" && ti.nextAttemptAt == Harness.start.addingTimeInterval(3) && ti.error == "not there")
        // Another store (a restarted scheduler) finds the poke due from the database alone.
        let restarted = SchedulerStore(db: PGPool(h.url, size: 1))
        #expect(try await restarted.nextRetryTime() == Harness.start.addingTimeInterval(3))
        h.clock.advance(by: 2.9)
        try await h.broker.perform(try await restarted.queueDueRetries(now: h.clock.now()))
        #expect(try await h.queued().isEmpty)
        for elapsed in [3.0, 6, 9] {
            h.clock.set(Harness.start.addingTimeInterval(elapsed))
            try await h.broker.perform(try await restarted.queueDueRetries(now: h.clock.now()))
            m = try #require(try await h.take().first, "no poke at \(elapsed)s")
            #expect(try h.invocation(m).tryNumber == 1)
            try await poke(h, m)
        }
        // The last poke is due at the deadline itself (10 s), not at 12 s.
        ti = try #require(try await h.store.taskInstances(runId: run).first { $0.taskId == "wait" })
        #expect(ti.nextAttemptAt == Harness.start.addingTimeInterval(10))
        h.clock.set(Harness.start.addingTimeInterval(10))
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        try await poke(h, try #require(try await h.take().first))
        ti = try #require(try await h.store.taskInstances(runId: run).first { $0.taskId == "wait" })
        #expect(ti.state == "failed" && ti.error == "sensor timed out after 10s: not there" && ti.tries.count == 1)
        // Its duration is the whole wait, from the first poke to the last (not the last poke's 0 s).
        #expect(ti.startedAt == Harness.start && ti.endedAt == Harness.start.addingTimeInterval(10), "\(String(describing: ti.startedAt)) → \(String(describing: ti.endedAt))")
        #expect(try await h.states(run)["after"] == "upstream_failed")
        let history = try await h.sql("SELECT count(*)::int AS n FROM task_history WHERE task_id = 'wait' AND detail = 'next poke'")
        #expect(try history.first?.intOrNull("n") == 4)
    }

    @Test("a run's timeout param overrides the sensor's; a ready poke succeeds and its downstream runs")
    func timeoutParamAndReady() async throws {
        let h = try await Harness.make([sensed])
        let run = try await h.trigger("sensed", conf: ["timeout": 100])
        try await poke(h, try #require(try await h.take().first))
        h.clock.advance(by: 50)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        try await poke(h, try #require(try await h.take().first))
        #expect(try await h.states(run)["wait"] == "up_for_reschedule")  // 50 s in: within 100 s
        h.clock.advance(by: 3)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        try await poke(h, try #require(try await h.take().first), ready: true)
        #expect(try await h.states(run)["wait"] == "success")
        #expect(try h.invocation(try #require(try await h.take().first)).taskId == "after")
    }
}
