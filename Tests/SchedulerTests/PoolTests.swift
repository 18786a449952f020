import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

/// Five parallel tasks in pool `p`; `big` takes 2 slots.
let pooled = Flow("pooled") { f in
    for i in 1...4 { f.task("t\(i)", priority: i, pool: "p") { _ in nil } }
    f.task("big", priority: 0, pool: "p", poolSlots: 2) { _ in nil }
}

let capped = Flow("capped", maxActiveTasks: 3) { f in
    for i in 1...4 { _ = noop(f, "a\(i)") }
    f.task("solo", maxActiveTisPerFlow: 1) { _ in nil }
}

@Suite("Pools and concurrency limits", .serialized)
struct PoolTests {
    func make(_ flows: [Flow], pools: [String: Int]) async throws -> Harness {
        let url = try await TestServers.freshDatabase()
        let store = SchedulerStore(db: PGPool(url, size: 2))
        for (name, slots) in pools { _ = try await store.setPool(name: name, slots: slots, description: nil) }
        return try await Harness.make(flows, url: url)
    }

    func admit(_ h: Harness, _ store: SchedulerStore? = nil) async throws {
        try await h.broker.perform(try await (store ?? h.store).admitWaiting(now: h.clock.now()))
    }

    /// Task instances that hold a slot of `pool`: queued with a message, or running.
    func busy(_ h: Harness, pool: String = "p") async throws -> Int {
        try await h.sql("""
            SELECT COALESCE(sum(pool_slots), 0)::int AS n FROM task_instances
            WHERE pool = $1 AND state IN ('queued', 'running') AND message_id IS NOT NULL
            """, [pool]).first!.int("n")
    }

    @Test("a pool never has more slots taken than it has; a freed slot goes to the highest-priority waiting task; the others say why")
    func poolLimit() async throws {
        let h = try await make([pooled], pools: ["p": 2])
        let run = try await h.trigger("pooled")
        #expect(try await h.queued().isEmpty)  // parked: the admitter hands out slots
        try await admit(h)
        let first = try await h.take()
        #expect(try first.map { try h.invocation($0).taskId } == ["t4", "t3"])
        let waiting = try await h.store.taskInstances(runId: run).filter { $0.state == "queued" && $0.tries.isEmpty }
        #expect(waiting.map(\.taskId).sorted() == ["big", "t1", "t2"])
        #expect(waiting.allSatisfy { $0.waitReason == "waiting for pool `p`: 2/2 slots used" && $0.pool == "p" })
        try await h.report(first[0], .succeeded)
        try await admit(h)
        let next = try await h.take()
        #expect(try next.map { try h.invocation($0).taskId } == ["t2"])
        #expect(try await busy(h) == 2)
        // `big` needs both slots: it starts only when the pool is empty.
        try await h.report(first[1], .succeeded)
        try await admit(h)
        let t1 = try await h.take()
        #expect(try t1.map { try h.invocation($0).taskId } == ["t1"])
        try await h.report(next[0], .succeeded)
        try await admit(h)
        #expect(try await h.queued().isEmpty)
        let bigWaits = try #require(try await h.store.taskInstances(runId: run).first { $0.taskId == "big" })
        #expect(bigWaits.waitReason == "waiting for pool `p`: 1/2 slots used")
        try await h.report(t1[0], .succeeded)
        try await admit(h)
        let big = try await h.take()
        #expect(try big.map { try h.invocation($0).taskId } == ["big"])
        #expect(try await busy(h) == 2)
        try await h.report(big[0], .succeeded)
        #expect(try await h.runState(run) == "success")
    }

    @Test("growing a pool starts waiting tasks; a pool of 0 pauses them; a missing pool is a registration error naming the task")
    func resizeAndUnknown() async throws {
        let h = try await make([pooled], pools: ["p": 0])
        let run = try await h.trigger("pooled")
        try await admit(h)
        #expect(try await h.queued().isEmpty)
        _ = try await h.store.setPool(name: "p", slots: 5, description: "grown")
        try await admit(h)
        #expect(try await h.take().count == 4)  // t1–t4, then `big` needs 2 of the 1 left
        let pools = try await h.store.pools()
        #expect(pools.first { $0.name == "p" }.map { ($0.slots, $0.usedSlots, $0.waiting) }! == (5, 4, 1))
        #expect(try await h.states(run)["big"] == "queued")
        await #expect(throws: StateConflict.self) { try await h.store.deletePool(name: "p") }
        await #expect(throws: BadRequest.self) { _ = try await h.store.setPool(name: "bad name", slots: 1, description: nil) }

        let other = try await TestServers.freshDatabase()
        let store = SchedulerStore(db: PGPool(other, size: 1))
        let typo = Flow("typo") { f in f.task("load", pool: "warehuose") { _ in nil } }
        _ = try await store.setPool(name: "warehouse", slots: 4, description: nil)
        do {
            try await store.registerFlows([typo], now: Date())
            Issue.record("an unknown pool was accepted")
        } catch let e as PoolError {
            #expect(e.description == "task `typo`.`load` uses pool `warehuose`, which does not exist (did you mean `warehouse`?): create it with `flowctl pools set warehuose --slots N`")
        }
    }

    @Test("maxActiveTasks caps a flow's tasks across its runs; maxActiveTisPerFlow caps one task across runs")
    func flowAndTaskCaps() async throws {
        let h = try await make([capped], pools: [:])
        let r1 = try await h.trigger("capped"), r2 = try await h.trigger("capped")
        try await admit(h)
        let first = try await h.take()
        #expect(first.count == 3)
        let waiting = try await h.store.taskInstances(runId: r2).filter { $0.state == "queued" && $0.tries.isEmpty }
        #expect(waiting.contains { $0.waitReason == "waiting for flow `capped`'s maxActiveTasks: 3/3 queued or running" })
        var ran: [String] = []
        var pending = first
        while !pending.isEmpty {
            // `solo` never has two instances queued or running.
            let solos = try await h.sql("""
                SELECT count(*)::int AS n FROM task_instances WHERE task_id = 'solo' AND state IN ('queued', 'running') AND message_id IS NOT NULL
                """).first!.int("n")
            #expect(solos <= 1)
            #expect(try await h.sql("SELECT count(*)::int AS n FROM task_instances WHERE state IN ('queued', 'running') AND message_id IS NOT NULL").first!.int("n") <= 3)
            let m = pending.removeFirst()
            ran.append(try h.invocation(m).taskId)
            try await h.report(m, .succeeded)
            try await admit(h)
            pending += try await h.take()
        }
        #expect(ran.count == 10)
        #expect(try await h.runState(r1) == "success")
        #expect(try await h.runState(r2) == "success")
    }

    @Test("two schedulers admitting and completing at once never exceed a pool, and every task runs once")
    func twoSchedulers() async throws {
        let wide = Flow("wide") { f in for i in 0..<30 { f.task("t\(i)", pool: "p") { _ in nil } } }
        let h = try await make([wide], pools: ["p": 3])
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        var runs: [String] = []
        for _ in 0..<4 { runs.append(try await h.trigger("wide")) }
        var done = 0, maxBusy = 0
        while done < 120 {
            try await withThrowingTaskGroup(of: Void.self) { g in
                g.addTask { try await self.admit(h) }
                g.addTask { try await self.admit(h, other) }
                try await g.waitForAll()
            }
            maxBusy = max(maxBusy, try await busy(h))
            let msgs = try await h.take()
            #expect(!msgs.isEmpty, "no task was admitted although slots are free")
            if msgs.isEmpty { break }
            // Half by one scheduler's store, half by the other's, concurrently.
            try await withThrowingTaskGroup(of: Void.self) { g in
                for (i, m) in msgs.enumerated() {
                    g.addTask {
                        let inv = try h.invocation(m)
                        let e = WorkerEvent(kind: .succeeded, worker: "w", at: h.clock.now(), messageId: m.id, runId: inv.runId,
                                            taskId: inv.taskId, tryNumber: inv.tryNumber)
                        try await h.broker.perform(try await (i % 2 == 0 ? h.store : other).applyEvents([e], now: h.clock.now()))
                    }
                }
                try await g.waitForAll()
            }
            done += msgs.count
        }
        #expect(maxBusy <= 3 && maxBusy >= 1)
        for r in runs { #expect(try await h.runState(r) == "success") }
        let tries = try await h.sql("SELECT count(*)::int AS n, count(DISTINCT (run_pk, task_id))::int AS d FROM task_tries").first!
        #expect(try tries.intOrNull("n") == 120 && tries.intOrNull("d") == 120)
    }
}
