import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Scheduler liveness under concurrent writers", .serialized)
struct SchedulerLivenessTests {
    /// Holds `LOCK TABLE … IN SHARE MODE` on a connection of its own until released, so that
    /// a transaction that inserts into the table waits in the middle, holding what it locked before.
    final class TableLock: @unchecked Sendable {
        let conn: PGConnection
        let release = DispatchSemaphore(value: 0)
        let held = DispatchSemaphore(value: 0)
        init(url: String) { conn = PGConnection(url, label: "blocker") }
        func hold(_ table: String) {
            Task {
                try await conn.run { [release, held] s in
                    try s.transaction {
                        _ = try s.query("LOCK TABLE \(table) IN SHARE MODE")
                        held.signal()
                        release.wait()
                    }
                }
            }
            held.wait()
        }
    }

    @Test("a manual trigger does not wait for a run starter's transaction on the same flow")
    func triggerDoesNotWaitForRunStarter() async throws {
        let h = try await Harness.make([diamond])
        _ = try await h.store.createRun(flowId: "diamond", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now())
        // The run starter locks the queued run and the flow's row, then stalls on INSERT INTO task_instances.
        let blocker = TableLock(url: h.url)
        blocker.hold("task_instances")
        let starter = Task { try await h.store.startQueuedRuns(now: h.clock.now()) }
        try await eventually("the run starter waiting on its INSERT") {
            try await h.sql("""
                SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO task_instances%'
                """)[0].int("n") == 1
        }
        // A user's trigger inserts a run of the same flow: its foreign key check must not wait for
        // the run starter's lock on the flow row (FOR UPDATE would make it wait until the end).
        let store = h.store, clock = h.clock
        let run = try await within(10, "createRun while a run starter holds the flow") {
            try await store.createRun(flowId: "diamond", kind: "manual", conf: [:], logicalDate: nil, now: clock.now())
        }
        #expect(run.state == "queued")
        blocker.release.signal()
        let work = try await starter.value
        #expect(work.enqueue.count == 1)
    }

    @Test("write transactions wake the run starters only after they commit, never with a NOTIFY inside them")
    func noNotifyInsideWriteTransactions() async throws {
        let h = try await Harness.make([diamond])
        let traced = SchedulerStore(db: PGPool(h.url, size: 1), random: { 0.5 })
        traced.db.traceStatements(true)
        let run = try await traced.createRun(flowId: "diamond", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now())
        try await h.broker.perform(try await traced.startQueuedRuns(now: h.clock.now()))
        for _ in 0..<5 {
            for m in try await h.take() {
                let inv = try h.invocation(m)
                let e = WorkerEvent(kind: .succeeded, worker: "w", at: h.clock.now(), messageId: m.id, runId: inv.runId, taskId: inv.taskId,
                                    tryNumber: inv.tryNumber, result: nil, error: nil)
                try await h.broker.perform(try await traced.applyEvents([e], now: h.clock.now()))
            }
        }
        _ = try await traced.cancelRun(runId: (try await traced.createRun(flowId: "diamond", kind: "manual", conf: [:], logicalDate: nil,
                                                                         now: h.clock.now())).runId, now: h.clock.now())
        #expect(try await h.runState(run.runId) == "success")
        let trace = traced.db.traceStatements(false)
        // Walk the statements: a pg_notify may only appear in a transaction that does nothing else.
        var inTransaction = false, sinceBegin: [String] = []
        var notifies = 0
        for st in trace {
            if st == "BEGIN" { inTransaction = true; sinceBegin = []; continue }
            if st == "COMMIT" || st == "ROLLBACK" { inTransaction = false; continue }
            if st.contains("pg_notify") {
                notifies += 1
                #expect(inTransaction && sinceBegin == ["SET LOCAL synchronous_commit = off"], "NOTIFY inside a write transaction after \(sinceBegin)")
            }
            sinceBegin.append(st)
        }
        // Two triggers, the run's end and the cancel wake run starters; besides, every transaction
        // that changed task instances announces it to dashboards (flowkit_changes), in one
        // notifying statement that travels with its commit. The run's end is known only from the
        // commit's own results, so its wake-up follows in a notifying transaction of its own.
        #expect(notifies == 10)
    }

    @Test("a flow at its max_active_runs does not hide another flow's queued runs from the run starter")
    func noStarvationBehindAFullFlow() async throws {
        let busy = Flow("busy", maxActiveRuns: 1) { f in _ = noop(f, "only") }
        let other = Flow("other") { f in _ = noop(f, "only") }
        let h = try await Harness.make([busy, other])
        for _ in 0..<60 { _ = try await h.store.createRun(flowId: "busy", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now()) }
        let late = try await h.store.createRun(flowId: "other", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now())
        try await h.broker.perform(try await h.store.startQueuedRuns(now: h.clock.now(), limit: 50))
        #expect(try await h.runState(late.runId) == "running")
        let running = try await h.sql("SELECT count(*) AS n FROM runs WHERE flow_id = 'busy' AND state = 'running'")[0].intOrNull("n")
        #expect(running == 1)
    }

    @Test("twenty clients triggering at once with two schedulers racing: every run starts, none twice")
    func concurrentTriggersAndStarters() async throws {
        let flow = Flow("burst", maxActiveRuns: 4) { f in _ = noop(f, "only") }
        let h = try await Harness.make([flow])
        let second = SchedulerStore(db: PGPool(h.url, size: 2))
        let store = h.store, clock = h.clock, broker = h.broker
        try await within(60, "20 triggers racing two run starters") {
            try await withThrowingTaskGroup(of: Void.self) { g in
                for _ in 0..<20 {
                    g.addTask { _ = try await store.createRun(flowId: "burst", kind: "manual", conf: [:], logicalDate: nil, now: clock.now()) }
                }
                for s in [store, second] {
                    g.addTask {
                        // Each starter finishes what it started, as the event consumer would, until nothing is queued.
                        while true {
                            let work = try await s.startQueuedRuns(now: clock.now())
                            try await broker.perform(work)
                            for m in work.enqueue {
                                let inv = try FlowTaskInvocation(json: m.kwargs[FlowTaskInvocation.kwarg]!)
                                let e = WorkerEvent(kind: .succeeded, worker: "w", at: clock.now(), messageId: m.id, runId: inv.runId,
                                                    taskId: inv.taskId, tryNumber: inv.tryNumber, result: nil, error: nil)
                                _ = try await s.applyEvents([e], now: clock.now())
                            }
                            let left = try await s.db.run { q in try q.query("SELECT count(*) AS n FROM runs WHERE state <> 'success'").single().int("n") }
                            if left == 0 && work.enqueue.isEmpty { break }
                            if work.enqueue.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
                        }
                    }
                }
                try await g.waitForAll()
            }
        }
        let rows = try await h.sql("SELECT count(*) AS runs, count(DISTINCT run_id) AS ids FROM runs WHERE state = 'success'")[0]
        #expect(try rows.intOrNull("runs") == 20 && rows.intOrNull("ids") == 20)
        let doubled = try await h.sql("SELECT count(*) AS n FROM (SELECT run_pk FROM task_tries GROUP BY run_pk HAVING count(*) > 1) d")[0]
        #expect(try doubled.intOrNull("n") == 0)
    }
}
