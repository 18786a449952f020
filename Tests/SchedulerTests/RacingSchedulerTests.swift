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
        let tries = try await h.sql("SELECT count(*) AS n FROM task_tries").first?.intOrNull("n")
        #expect(tries == 210)
    }
}

@Suite("Racing schedulers: flow-to-flow triggers", .serialized)
struct RacingFlowTriggerTests {
    @Test("two schedulers running trigger tasks and after-triggers at once make one child and one follow-up per parent run")
    func oneChildEach() async throws {
        let child = Flow("race_child", maxActiveRuns: 50) { f in noop(f, "work") }
        let parent = Flow("race_parent", maxActiveRuns: 50) { f in
            let a = noop(f, "a")
            f.triggerFlow("start", flow: "race_child", after: [a])
        }
        let follow = Flow("race_follow", after: [.success(of: "race_child")]) { f in noop(f, "x") }
        let h = try await Harness.make([child, parent, follow])
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        var parents: [String] = []
        for _ in 0..<20 { parents.append(try await h.trigger("race_parent")) }
        _ = try await h.succeedAll()  // every `a`: the trigger tasks are queued, with no message
        #expect(try await h.queued().isEmpty)
        // Both schedulers take trigger tasks at once, twice over (the second pass finds nothing new).
        for _ in 0..<2 {
            async let x = h.store.triggerTaskEvents(now: h.clock.now())
            async let y = other.triggerTaskEvents(now: h.clock.now())
            let (ex, ey) = try await (x, y)
            async let ax = h.store.applyEvents(ex, now: h.clock.now())
            async let ay = other.applyEvents(ey, now: h.clock.now())
            _ = try await (ax, ay)
        }
        let children = try await h.sql("SELECT triggered_by FROM runs WHERE flow_id = 'race_child'").map { try $0.string("triggered_by") }
        #expect(children.count == 20 && Set(children) == Set(parents))
        for p in parents { #expect(try await h.runState(p) == "success") }
        // The children run and succeed; both schedulers create follow-ups at once.
        async let sa = h.store.startQueuedRuns(now: h.clock.now())
        async let sb = other.startQueuedRuns(now: h.clock.now())
        let (wa, wb) = try await (sa, sb)
        try await h.broker.perform(wa)
        try await h.broker.perform(wb)
        // A starter takes at most 10 runs a transaction and goes on while it finds work, as the service does.
        while true {
            let more = try await h.store.startQueuedRuns(now: h.clock.now())
            if more.enqueue.isEmpty { break }
            try await h.broker.perform(more)
        }
        #expect(try await h.succeedAll().count == 20)
        let pending = try await h.sql("SELECT count(*) AS n FROM runs WHERE triggers_pending").first!.int("n")
        #expect(pending == 20)
        for _ in 0..<2 {
            async let x = h.store.startFlowTriggeredRuns(now: h.clock.now(), limit: 7)
            async let y = other.startFlowTriggeredRuns(now: h.clock.now(), limit: 7)
            _ = try await (x, y)
        }
        while try await !h.store.startFlowTriggeredRuns(now: h.clock.now()).runs.isEmpty {}
        let follows = try await h.sql("SELECT triggered_by FROM runs WHERE flow_id = 'race_follow'").map { try $0.string("triggered_by") }
        let childIds = try await h.sql("SELECT run_id FROM runs WHERE flow_id = 'race_child'").map { try $0.string("run_id") }
        #expect(follows.count == 20 && Set(follows) == Set(childIds))
        #expect(try await h.sql("SELECT count(*) AS n FROM runs WHERE triggers_pending").first!.int("n") == 0)
    }
}
