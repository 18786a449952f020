import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import RedisClient
import Testing
@testable import Scheduler

@Suite("Mark success / mark failed, and clear only failed", .serialized)
struct MarkTaskTests {
    @Test("marking a failed task success reopens its run: the upstream_failed tasks downstream run as if it had succeeded")
    func markSuccess() async throws {
        let h = try await Harness.make([diamond])  // a → [b, c] → d → e, no retries
        let run = try await h.trigger("diamond")
        try await h.report(try await h.take()[0], .failed, error: "boom")
        #expect(try await h.runState(run) == "failed")
        #expect(try await h.states(run)["e"] == "upstream_failed")
        try await h.broker.perform(try await h.store.markTask(runId: run, taskId: "a", as: .success, now: h.clock.now()))
        #expect(try await h.runState(run) == "running")
        #expect(Set(try await h.queued().map { try h.invocation($0).taskId }) == ["b", "c"])
        #expect(try await h.states(run)["e"] == "pending")
        try await h.succeedAll(); try await h.succeedAll(); try await h.succeedAll()
        #expect(try await h.runState(run) == "success")
        let notes = try await h.sql("SELECT task_id, detail FROM task_history WHERE source = 'api' ORDER BY id").map { "\(try $0.string("task_id")): \(try $0.string("detail"))" }
        #expect(notes.first == "a: marked success by hand")
        #expect(notes.contains("e: reset: upstream task `a` marked success by hand"))
    }

    @Test("marking tasks of a run that ended an hour ago keeps the run's and the task's end when nothing runs again")
    func markAfterTheEnd() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        try await h.report(try await h.take()[0], .failed, error: "boom")
        let ended = try #require(try await h.store.run(run).endedAt)
        h.clock.advance(by: 3600)
        // e, the leaf, never ran (upstream_failed): marking it success makes the run a success at
        // once (the leaves decide), with its old end.
        try await h.broker.perform(try await h.store.markTask(runId: run, taskId: "e", as: .success, now: h.clock.now()))
        var r = try await h.store.run(run)
        #expect(r.state == "success" && r.endedAt == ended, "\(r.state) \(String(describing: r.endedAt)) vs \(ended)")
        // a failed at `ended`; marked success it keeps that end; b and c run again, so the run is
        // running, and ends when they do — then later than before, truthfully.
        try await h.broker.perform(try await h.store.markTask(runId: run, taskId: "a", as: .success, now: h.clock.now()))
        #expect(try await h.store.taskInstances(runId: run).first { $0.taskId == "a" }?.endedAt == ended)
        r = try await h.store.run(run)
        #expect(r.state == "running" && r.endedAt == nil)
        try await h.succeedAll(); try await h.succeedAll()
        r = try await h.store.run(run)
        #expect(r.state == "success" && r.endedAt == h.clock.now())
    }

    @Test("marking a running task failed stops it on its worker; the failure propagates; its late report changes nothing")
    func markFailed() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try await h.take()[0]
        try await h.report(a, .started)
        try await h.broker.perform(try await h.store.markTask(runId: run, taskId: "a", as: .failed, now: h.clock.now()))
        #expect(try await h.redis.command("EXISTS", FlowKitKeys.cancel(a.id)).int == 1)
        #expect(try await h.runState(run) == "failed")
        #expect(try await h.states(run)["b"] == "upstream_failed")
        try await h.report(a, .succeeded)  // the worker finished anyway
        #expect(try await h.states(run)["a"] == "failed")
        #expect(try await h.store.taskInstances(runId: run).first { $0.taskId == "a" }?.error == "marked failed by hand")
    }

    @Test("marking is refused with a reason: the same state, an unknown task or run, a state other than success or failed")
    func refusals() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        try await h.succeedAll()
        await #expect(throws: StateConflict.self) { try await h.store.markTask(runId: run, taskId: "a", as: .success, now: h.clock.now()) }
        await #expect(throws: NotFound.self) { try await h.store.markTask(runId: run, taskId: "zz", as: .success, now: h.clock.now()) }
        await #expect(throws: NotFound.self) { try await h.store.markTask(runId: "nope", taskId: "a", as: .success, now: h.clock.now()) }
        await #expect(throws: StateConflict.self) { try await h.store.markTask(runId: run, taskId: "b", as: .skipped, now: h.clock.now()) }
        // A mistyped task id gets the nearest one, in mark and in clear alike.
        let markTypo = await #expect(throws: NotFound.self) { try await h.store.markTask(runId: run, taskId: "bb", as: .failed, now: h.clock.now()) }
        #expect(markTypo?.message == "run `\(run)` has no task `bb`; did you mean `b`?")
        let clearTypo = await #expect(throws: NotFound.self) { try await h.store.clearTasks(runId: run, taskIds: ["dd"], now: h.clock.now()) }
        #expect(clearTypo?.message == "run `\(run)` has no task `dd`; did you mean `d`?")
    }

    @Test("clear with onlyFailed re-runs only the failed tasks among those chosen and their descendants")
    func clearOnlyFailed() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        try await h.succeedAll()                                   // a
        let bc = try await h.take()
        for m in bc { try await h.report(m, try h.invocation(m).taskId == "b" ? .failed : .succeeded) }
        #expect(try await h.runState(run) == "failed")
        try await h.broker.perform(try await h.store.clearTasks(runId: run, taskIds: ["a"], onlyFailed: true, now: h.clock.now()))
        let states = try await h.states(run)
        #expect(states["a"] == "success" && states["c"] == "success")  // not cleared
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["b"])
        #expect(states["d"] == "pending" && states["e"] == "pending")
    }
}
