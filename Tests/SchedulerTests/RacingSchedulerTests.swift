import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

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
