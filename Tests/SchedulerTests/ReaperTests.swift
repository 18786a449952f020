import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler
import RedisClient

@Suite("Reaper, cancel and clear", .serialized)
struct ReaperTests {
    static let retrying = Flow("z", defaults: TaskOptions(retry: RetryPolicy(retries: 1, delay: .seconds(10)))) { f in _ = noop(f, "t") }

    @Test("a running task whose worker stopped heart-beating is failed as a zombie and retried")
    func zombie() async throws {
        let h = try await Harness.make([Self.retrying])
        let run = try await h.trigger("z")
        let m = try await h.take()[0]
        try await h.report(m, .started, worker: "dead-worker")
        h.clock.advance(by: 29)
        #expect(try await h.store.reapZombies(now: h.clock.now(), heartbeatTimeout: 30).forget.isEmpty)
        h.clock.advance(by: 2)
        let work = try await h.store.reapZombies(now: h.clock.now(), heartbeatTimeout: 30)
        #expect(work.forget == [m.id])
        let ti = try await h.store.taskInstances(runId: run)[0]
        #expect(ti.state == "up_for_retry")
        #expect(ti.error?.contains("worker `dead-worker` stopped heart-beating") == true)
        // The dead worker's late success cannot overwrite the newer state.
        try await h.report(m, .succeeded, worker: "dead-worker")
        #expect(try await h.states(run)["t"] == "up_for_retry")
        h.clock.advance(by: 10)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        let retry = try await h.take()[0]
        try await h.report(retry, .succeeded)
        #expect(try await h.runState(run) == "success")
    }

    @Test("a worker Redis still sees alive is not reaped, even when its heartbeats have not reached the database")
    func aliveWorkerSpared() async throws {
        let h = try await Harness.make([Self.retrying])
        let run = try await h.trigger("z")
        let m = try await h.take()[0]
        try await h.report(m, .started, worker: "busy-worker")
        h.clock.advance(by: 60)
        #expect(try await h.store.staleTries(now: h.clock.now(), heartbeatTimeout: 30) == [StaleTry(worker: "busy-worker", messageId: m.id, queue: "default")])
        _ = try await h.redis.command("SET", FlowKitKeys.workerAlive("busy-worker"), "1", "EX", "10")
        let alive = try await h.broker.aliveWorkers(["busy-worker", "gone-worker"])
        #expect(alive == ["busy-worker"])
        #expect(try await h.store.reapZombies(now: h.clock.now(), heartbeatTimeout: 30, aliveWorkers: alive).forget.isEmpty)
        #expect(try await h.states(run)["t"] == "running")
    }

    @Test("a lost worker's try whose message is back in its queue is queued again, not failed: the same try runs on the next worker")
    func zombieTakenOver() async throws {
        let once = Flow("once") { f in _ = noop(f, "t") }  // no retries: failing the zombie would fail the run
        let h = try await Harness.make([once])
        let run = try await h.trigger("once")
        let raw = try await h.redis.run { s in try s.command(["LRANGE", "default", "0", "-1"]).array?.compactMap(\.string) ?? [] }
        let m = try await h.take()[0]
        try await h.report(m, .started, worker: "cut-off-worker")
        h.clock.advance(by: 31)
        // Still claimed (nowhere in a queue): the reaper fails it as before — shown on a second run below.
        #expect(try await h.broker.waitingInQueue([(m.id, "default")]).isEmpty)
        // The unacked restorer gives the lost worker's claim back: the message waits in its queue.
        _ = try await h.redis.run { s in try s.command(["RPUSH", "default"] + raw) }
        #expect(try await h.broker.waitingInQueue([(m.id, "default")]) == [m.id])
        #expect(try await h.daemon.reaper.runOnce() > 0)
        let ti = try await h.store.taskInstances(runId: run)[0]
        #expect(ti.state == "queued")
        #expect(ti.tryNumber == 1)
        #expect(ti.worker == nil)
        #expect(ti.tries.map(\.state) == ["queued"])
        let history = try await h.sql("""
            SELECT h.to_state, h.detail FROM task_history h JOIN runs r ON r.id = h.run_pk WHERE r.run_id = $1 AND h.source = 'reaper'
            """, [run])
        #expect(try history.map { try $0.string("to_state") } == ["queued"])
        #expect(try history.first?.stringOrNull("detail")?.contains("its message is back in the queue") == true)
        // The next worker takes the same message and the try ends as its body did.
        let again = try await h.take()
        #expect(again.map(\.id) == [m.id])
        try await h.report(again[0], .started, worker: "w2")
        #expect(try await h.store.taskInstances(runId: run)[0].tries.map(\.worker) == ["w2"])
        try await h.report(again[0], .succeeded, worker: "w2")
        #expect(try await h.runState(run) == "success")

        // The same loss without the restore (the claim still in `unacked`): a zombie, failed.
        let run2 = try await h.trigger("once")
        let m2 = try await h.take()[0]
        try await h.report(m2, .started, worker: "cut-off-worker")
        h.clock.advance(by: 31)
        _ = try await h.daemon.reaper.runOnce()
        #expect(try await h.states(run2)["t"] == "failed")
        #expect(try await h.runState(run2) == "failed")
    }

    @Test("heartbeats keep a long task alive")
    func heartbeatsKeepAlive() async throws {
        let h = try await Harness.make([Self.retrying])
        let run = try await h.trigger("z")
        let m = try await h.take()[0]
        try await h.report(m, .started)
        for _ in 0..<5 {
            h.clock.advance(by: 20)
            let hb = WorkerEvent(kind: .heartbeat, worker: "w1", at: h.clock.now(), running: [m.id])
            _ = try await h.store.applyEvents([hb], now: h.clock.now())
            #expect(try await h.store.reapZombies(now: h.clock.now(), heartbeatTimeout: 30).forget.isEmpty)
        }
        #expect(try await h.states(run)["t"] == "running")
    }

    @Test("a task past its execution timeout is failed")
    func timeout() async throws {
        let flow = Flow("slow") { f in f.task("t", timeout: .seconds(60)) { _ in nil } }
        let h = try await Harness.make([flow])
        let run = try await h.trigger("slow")
        let m = try await h.take()[0]
        try await h.report(m, .started)
        h.clock.advance(by: 20)
        _ = try await h.store.applyEvents([WorkerEvent(kind: .heartbeat, worker: "w1", at: h.clock.now(), running: [m.id])], now: h.clock.now())
        h.clock.advance(by: 20)
        _ = try await h.store.applyEvents([WorkerEvent(kind: .heartbeat, worker: "w1", at: h.clock.now(), running: [m.id])], now: h.clock.now())
        h.clock.advance(by: 25)
        _ = try await h.store.applyEvents([WorkerEvent(kind: .heartbeat, worker: "w1", at: h.clock.now(), running: [m.id])], now: h.clock.now())
        // Heart-beating, but 65 s > 60 s timeout (+30 s grace for the worker to report it itself).
        #expect(try await h.store.reapZombies(now: h.clock.now(), heartbeatTimeout: 30).forget.isEmpty)
        h.clock.advance(by: 26)
        _ = try await h.store.applyEvents([WorkerEvent(kind: .heartbeat, worker: "w1", at: h.clock.now(), running: [m.id])], now: h.clock.now())
        #expect(try await h.store.reapZombies(now: h.clock.now(), heartbeatTimeout: 30).forget == [m.id])
        #expect(try await h.store.taskInstances(runId: run)[0].error == "exceeded its execution timeout of 60.0s")
        #expect(try await h.runState(run) == "failed")
    }

    @Test("a queued task whose message the broker lost is enqueued again, same try, same id")
    func lostMessage() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let original = try await h.take()[0]  // the message vanishes (a Redis flush)
        h.clock.advance(by: 31)
        let stale = try await h.store.staleQueued(now: h.clock.now(), olderThan: 30)
        #expect(stale.map(\.messageId) == [original.id])
        let missing = try await h.broker.missingMessages(stale)
        #expect(missing == [original.id])
        var work = BrokerWork()
        work.enqueue = try await h.store.rebuildQueuedMessages(missing, now: h.clock.now())
        try await h.broker.perform(work)
        let again = try await h.take()
        #expect(again.map(\.id) == [original.id])
        #expect(try h.invocation(again[0]).tryNumber == 1)
        // A message still in its queue is not reported missing.
        try await h.broker.perform(work)
        #expect(try await h.broker.missingMessages(stale).isEmpty)
        _ = run
    }

    @Test("a queued task whose try already finished on a worker (its outcome still in the events stream) is not sent again")
    func finishedTryNotResent() async throws {
        let h = try await Harness.make([diamond])
        _ = try await h.trigger("diamond")
        let m = try await h.take()[0]  // a worker claimed it, ran it and acknowledged it...
        // ...writing its result in the same MULTI as its outcome event, which the database has not seen yet.
        try await h.redis.run { s in
            for c in CeleryResult.commands(taskId: m.id, meta: CeleryResult.success(taskId: m.id, result: nil)) { try s.command(c).orThrow() }
        }
        h.clock.advance(by: 31)
        let stale = try await h.store.staleQueued(now: h.clock.now(), olderThan: 30)
        #expect(stale.map(\.messageId) == [m.id])
        #expect(try await h.broker.missingMessages(stale).isEmpty)
    }

    @Test("cancelling a run cancels its unfinished tasks and flags the running ones for their workers")
    func cancel() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try await h.take()[0]
        try await h.report(a, .started)
        let work = try await h.store.cancelRun(runId: run, now: h.clock.now())
        try await h.broker.perform(work)
        #expect(work.cancel == [a.id])
        #expect(try await h.redis.command("EXISTS", FlowKitKeys.cancel(a.id)).int == 1)
        #expect(Set(try await h.states(run).values) == ["cancelled"])
        #expect(try await h.runState(run) == "cancelled")
        // The worker's report after the cancel changes nothing.
        try await h.report(a, .succeeded)
        #expect(try await h.states(run)["a"] == "cancelled")
        await #expect(throws: StateConflict.self) { _ = try await h.store.cancelRun(runId: run, now: h.clock.now()) }
        await #expect(throws: NotFound.self) { _ = try await h.store.cancelRun(runId: "nope", now: h.clock.now()) }
    }

    @Test("clearing a failed task re-runs it and what depends on it")
    func clear() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        try await h.succeedAll()
        for m in try await h.take() {
            let id = try h.invocation(m).taskId
            try await h.report(m, id == "b" ? .failed : .succeeded, error: id == "b" ? "bad" : nil)
        }
        #expect(try await h.runState(run) == "failed")
        try await h.broker.perform(try await h.store.clearTasks(runId: run, taskIds: nil, now: h.clock.now()))
        #expect(try await h.runState(run) == "running")
        let s = try await h.states(run)
        #expect(s["b"] == "queued" && s["d"] == "pending" && s["e"] == "pending" && s["c"] == "success")
        #expect(try await h.succeedAll() == ["b"])
        #expect(try await h.succeedAll() == ["d"])
        #expect(try await h.succeedAll() == ["e"])
        #expect(try await h.runState(run) == "success")
        let b = try await h.store.taskInstances(runId: run).first { $0.taskId == "b" }!
        #expect(b.tries.map(\.state) == ["failed", "success"])
    }
}
