import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import Testing
@testable import Scheduler
import PostgresClient

let diamond = Flow("diamond") { f in
    let a = noop(f, "a"), b = noop(f, "b"), c = noop(f, "c"), d = noop(f, "d")
    a --> [b, c] --> d
    d --> noop(f, "e")
}

@Suite("Dispatch and run state", .serialized)
struct DispatchTests {
    @Test("a run queues its roots, then each task as its upstream tasks finish, then succeeds")
    func diamondRun() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        #expect(try await h.runState(run) == "running")
        #expect(try await h.succeedAll() == ["a"])
        #expect(Set(try await h.succeedAll()) == ["b", "c"])
        #expect(try await h.succeedAll() == ["d"])
        #expect(try await h.succeedAll() == ["e"])
        #expect(try await h.succeedAll() == [])
        #expect(try await h.runState(run) == "success")
        #expect(Set(try await h.states(run).values) == ["success"])
    }

    @Test("once a run's graph is known, an outcome's downstream states are read with the run's lock, not in a round trip of their own; a join still waits for all its upstream tasks")
    func downstreamStatesReadEarly() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        #expect(try await h.succeedAll() == ["a"])  // the run's flow and version are known from here on
        _ = h.store.db.traceStatements(true)
        let bc = try await h.take()
        let byTask = Dictionary(uniqueKeysWithValues: try bc.map { (try h.invocation($0).taskId, $0) })
        try await h.report(try #require(byTask["b"]), .succeeded)
        #expect(try await h.queued().isEmpty, "d must wait for c")
        try await h.report(try #require(byTask["c"]), .succeeded)
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["d"])
        let trace = h.store.db.traceStatements(false)
        #expect(trace.contains { $0.hasPrefix("SELECT r.run_id, t.task_id, t.state") })
        #expect(!trace.contains { $0.hasPrefix("SELECT task_id, state FROM task_instances") }, "\(trace)")
        #expect(try await h.succeedAll() == ["d"])
        #expect(try await h.succeedAll() == ["e"])
        #expect(try await h.runState(run) == "success")
        // A failure read early propagates as before: a fresh run whose b fails leaves d upstream_failed.
        let second = try await h.trigger("diamond")
        #expect(try await h.succeedAll() == ["a"])
        for m in try await h.take() { try await h.report(m, try h.invocation(m).taskId == "b" ? .failed : .succeeded) }
        #expect(try await h.states(second)["d"] == "upstream_failed")
        #expect(try await h.states(second)["e"] == "upstream_failed")
        #expect(try await h.runState(second) == "failed")
    }

    @Test("tasks that become ready together are enqueued highest priority first")
    func priorityOrder() async throws {
        let flow = Flow("prio") { f in
            let root = noop(f, "root")
            root --> [f.task("low", priority: 1) { _ in nil }, f.task("high", priority: 9) { _ in nil }, f.task("mid", priority: 5) { _ in nil }]
        }
        let h = try await Harness.make([flow])
        _ = try await h.trigger("prio")
        try await h.succeedAll()
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["high", "mid", "low"])
    }

    @Test("an `always` task starts with its run; none_failed_min_one_success joins past a skipped branch")
    func alwaysAndMinOneSuccess() async throws {
        let flow = Flow("rules2") { f in
            let a = noop(f, "a"), b = noop(f, "b")
            noop(f, "watch", after: [a], rule: .always)
            noop(f, "join", after: [a, b], rule: .noneFailedMinOneSuccess)
        }
        let h = try await Harness.make([flow])
        let run = try await h.trigger("rules2")
        let first = try await h.take()
        #expect(Set(try first.map { try h.invocation($0).taskId }) == ["a", "b", "watch"])
        for m in first {
            let id = try h.invocation(m).taskId
            try await h.report(m, id == "b" ? .skipped : .succeeded)
        }
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["join"])
        try await h.succeedAll()
        #expect(try await h.runState(run) == "success")
        #expect(try await h.states(run)["b"] == "skipped")
    }

    @Test("a branch follows the tasks it chose; the others are skipped, the skip propagates, the join runs")
    func branch() async throws {
        let flow = Flow("br") { f in
            let choose = f.branch("choose") { _ in ["left"] }
            let left = noop(f, "left"), right = noop(f, "right")
            noop(f, "after_right", after: [right])
            noop(f, "join", after: [left, right], rule: .noneFailedMinOneSuccess)
            choose --> [left, right]
        }
        let h = try await Harness.make([flow])
        let run = try await h.trigger("br")
        try await h.report(try await h.take()[0], .succeeded, result: ["left"])
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["left"])
        let states = try await h.states(run)
        #expect(states["right"] == "skipped" && states["after_right"] == "skipped" && states["join"] == "pending")
        #expect(try await h.succeedAll() == ["left"])
        #expect(try await h.succeedAll() == ["join"])
        #expect(try await h.runState(run) == "success")
    }

    @Test("the join waits for both branches: one branch finishing does not queue it")
    func joinWaits() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        try await h.succeedAll()
        let branches = try await h.take()
        try await h.report(branches[0], .succeeded)
        #expect(try await h.queued().isEmpty)
        #expect(try await h.states(run)["d"] == "pending")
        try await h.report(branches[1], .succeeded)
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["d"])
    }

    @Test("messages carry the run's params and the upstream results, in Celery's format")
    func messageContents() async throws {
        let flow = Flow("carry", params: [Param("n", .int, default: 1)]) { f in
            let a = noop(f, "a")
            a --> f.task("b", queue: "etl", priority: 7) { _ in nil }
        }
        let h = try await Harness.make([flow])
        _ = try await h.trigger("carry", conf: ["n": 5])
        let a = try #require(try await h.take().first)
        #expect(a.task == "flowkit.carry.a")
        #expect(try h.invocation(a).params == ["n": 5])
        try await h.report(a, .succeeded, result: ["rows": 42])
        let waiting = try await h.queued("etl")
        let b = try #require(waiting.first)
        let inv = try h.invocation(b)
        #expect(inv.upstream == ["a": ["rows": 42]])
        #expect(b.queue == "etl")
    }

    @Test("a failure with no retries fails the task, marks its downstream upstream_failed and fails the run")
    func failurePropagates() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try await h.take()
        try await h.report(a[0], .started)
        try await h.report(a[0], .failed, error: "boom")
        let s = try await h.states(run)
        #expect(s["a"] == "failed")
        #expect(s["b"] == "upstream_failed" && s["c"] == "upstream_failed" && s["d"] == "upstream_failed" && s["e"] == "upstream_failed")
        #expect(try await h.runState(run) == "failed")
        let ti = try await h.store.taskInstances(runId: run).first { $0.taskId == "a" }!
        #expect(ti.error == "boom")
        #expect(ti.tries.count == 1 && ti.tries[0].state == "failed")
    }

    @Test("trigger rules end to end: all_done and one_failed run after a failure, all_success is upstream_failed")
    func triggerRules() async throws {
        let flow = Flow("rules") { f in
            let ok = noop(f, "ok"), bad = noop(f, "bad")
            [ok, bad] --> noop(f, "cleanup", rule: .allDone)
            [ok, bad] --> noop(f, "alert", rule: .oneFailed)
            [ok, bad] --> noop(f, "report", rule: .allSuccess)
            [ok, bad] --> noop(f, "any", rule: .oneSuccess)
            [ok, bad] --> noop(f, "nofail", rule: .noneFailed)
            [ok, bad] --> noop(f, "allfail", rule: .allFailed)
        }
        let h = try await Harness.make([flow])
        let run = try await h.trigger("rules")
        for m in try await h.take() {
            let id = try h.invocation(m).taskId
            try await h.report(m, id == "ok" ? .succeeded : .failed, error: id == "ok" ? nil : "x")
        }
        let queued = Set(try await h.queued().map { try h.invocation($0).taskId })
        #expect(queued == ["cleanup", "alert", "any"])
        let s = try await h.states(run)
        #expect(s["report"] == "upstream_failed")
        #expect(s["nofail"] == "upstream_failed")
        #expect(s["allfail"] == "skipped")
        try await h.succeedAll()
        // Leaves: cleanup, alert, any succeeded; report and nofail upstream_failed → the run fails.
        #expect(try await h.runState(run) == "failed")
    }

    @Test("a skipped task skips its all_success downstream; the run still succeeds")
    func skipsPropagate() async throws {
        let flow = Flow("skips") { f in
            let a = noop(f, "a")
            a --> noop(f, "b") --> noop(f, "c")
        }
        let h = try await Harness.make([flow])
        let run = try await h.trigger("skips")
        try await h.report(try await h.take()[0], .skipped, error: "nothing to do")
        let s = try await h.states(run)
        #expect(s == ["a": "skipped", "b": "skipped", "c": "skipped"])
        #expect(try await h.runState(run) == "success")
    }

    @Test("conf that does not fit the params is refused; an unknown flow suggests the nearest")
    func badTriggers() async throws {
        let h = try await Harness.make([exampleFlowWithParam])
        await #expect(throws: ConfError.self) { _ = try await h.trigger("with_param", conf: ["n": "x"]) }
        do {
            _ = try await h.trigger("with_parm")
            Issue.record("expected not found")
        } catch let e as NotFound {
            #expect(e.message.contains("did you mean `with_param`?"))
        }
        #expect(try await h.sql("SELECT count(*) AS n FROM runs").first?.intOrNull("n") == 0)
    }
}

let exampleFlowWithParam = Flow("with_param", params: [Param("n", .int, default: 1)]) { f in _ = noop(f, "a") }
