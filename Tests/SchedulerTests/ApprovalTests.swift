import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

/// Approval tasks (#27): the scheduler asks, a person decides, the task ends as decided.
@Suite("Approvals", .serialized)
struct ApprovalTests {
    static func release(timeout: Duration? = nil, onTimeout: ApprovalSpec.TimeoutAction = .reject, onReject: ApprovalSpec.RejectAction = .fail,
                        form: [Param] = []) -> Flow {
        Flow("release", params: [Param("wait", .number, default: 120)]) { f in
            let prep = noop(f, "prepare")
            let ok = f.approval("approve", prompt: "Ship it?", onReject: onReject, form: form, timeout: timeout,
                                timeoutParam: timeout == nil ? "wait" : nil, onTimeout: onTimeout, after: [prep])
            _ = noop(f, "publish", after: [ok])
        }
    }

    static let branchy = Flow("branchy") { f in
        let pick = f.approval("pick", prompt: "Which way?", branchTo: ["left", "right"], reject: "neither")
        _ = noop(f, "left", after: [pick]); _ = noop(f, "right", after: [pick])
    }

    /// Runs the scheduler's approval pass and applies its events, as the flow-trigger service does.
    @discardableResult
    func pass(_ h: Harness, store: SchedulerStore? = nil) async throws -> [WorkerEvent] {
        let events = try await (store ?? h.store).approvalEvents(now: h.clock.now())
        if !events.isEmpty { try await h.broker.perform(try await h.store.applyEvents(events, now: h.clock.now())) }
        return events
    }

    /// A run of `flow` whose `prepare` succeeded: its approval is queued, waiting for the pass.
    func waiting(_ h: Harness, _ flow: String = "release") async throws -> String {
        let run = try await h.trigger(flow)
        try await h.succeedAll()
        try await pass(h)
        return run
    }

    func decide(_ h: Harness, _ run: String, _ decision: String, task: String = "approve", by actor: String = "token:alice",
                comment: String? = nil, values: [String: JSONValue] = [:]) async throws -> ApprovalRecord {
        try await WriteActor.$current.withValue(actor) {
            try await h.store.decide(runId: run, taskId: task, decision: decision, comment: comment, values: values, now: h.clock.now())
        }
    }

    @Test("an approval waits without a worker message; approving makes it succeed with who decided, and the flow goes on; the decision is audited")
    func approve() async throws {
        let h = try await Harness.make([Self.release()])
        let run = try await waiting(h)
        #expect(try await h.states(run)["approve"] == "running")
        #expect(try await h.queued().isEmpty, "an approval has no message: it holds no worker slot")
        let asked = try #require(try await h.store.approvals().first)
        #expect(asked.runId == run && asked.prompt == "Ship it?" && asked.options == ["approve", "reject"] && asked.state == "waiting")
        #expect(asked.timeoutAt == h.clock.now().addingTimeInterval(120), "the run param `wait` sets the timeout")
        #expect(try await pass(h).isEmpty, "nothing to do until a decision")

        let decided = try await decide(h, run, "approve", comment: "looks good")
        #expect(decided.state == "decided" && decided.decidedBy == "token:alice")
        try await pass(h)
        #expect(try await h.store.taskInstances(runId: run).first { $0.taskId == "approve" }?.result
                == ["decision": "approve", "approved_by": "token:alice", "comment": "looks good"])
        #expect(try await h.succeedAll() == ["publish"])
        #expect(try await h.runState(run) == "success")
        #expect(try await h.store.approvals().isEmpty)
        #expect(try await h.store.approvals(waitingOnly: false).first?.decision == "approve")
        let audit = try await h.sql("SELECT actor, target, detail::text AS d FROM audit_log WHERE action = 'decide'")
        #expect(audit.count == 1)
        #expect(try audit[0].string("target") == "\(run)/approve")
        #expect(try audit[0].string("actor") == "token:alice")
    }

    @Test("rejecting fails the task and the run (or skips, with onReject: .skip); wrong decisions name the problem")
    func rejectAndErrors() async throws {
        let h = try await Harness.make([Self.release()])
        let early = try await h.trigger("release")
        await #expect(throws: StateConflict.self) { _ = try await decide(h, early, "approve") }  // prepare has not run yet
        try await h.succeedAll()
        try await pass(h)
        await #expect(throws: BadRequest.self) { _ = try await decide(h, early, "maybe") }
        await #expect(throws: BadRequest.self) { _ = try await decide(h, early, "approve", task: "prepare") }
        await #expect(throws: NotFound.self) { _ = try await decide(h, early, "approve", task: "aprove") }
        await #expect(throws: NotFound.self) { _ = try await decide(h, "nope", "approve") }
        await #expect(throws: BadRequest.self) { _ = try await decide(h, early, "approve", values: ["x": 1]) }
        _ = try await decide(h, early, "reject", by: "token:bob", comment: "not today")
        await #expect(throws: StateConflict.self) { _ = try await decide(h, early, "approve") }
        try await pass(h)
        let states = try await h.states(early)
        #expect(states["approve"] == "failed" && states["publish"] == "upstream_failed")
        #expect(try await h.runState(early) == "failed")
        #expect(try await h.store.taskInstances(runId: early).first { $0.taskId == "approve" }?.error == "rejected (`reject`) by token:bob: not today")

        let s = try await Harness.make([Self.release(onReject: .skip)])
        let skipped = try await waiting(s)
        _ = try await decide(s, skipped, "reject")
        try await pass(s)
        let after = try await s.states(skipped)
        #expect(after["approve"] == "skipped" && after["publish"] == "skipped")
    }

    @Test("without a decision in time it does what onTimeout says: reject, approve, or fail")
    func timeouts() async throws {
        for (action, state, result) in [(ApprovalSpec.TimeoutAction.reject, "failed", nil as JSONValue?), (.approve, "success",
                                         ["decision": "approve", "approved_by": "timeout", "comment": "no decision within 60s"]), (.fail, "failed", nil)] {
            let h = try await Harness.make([Self.release(timeout: .seconds(60), onTimeout: action)])
            let run = try await waiting(h)
            h.clock.advance(by: 59)
            #expect(try await pass(h).isEmpty)
            h.clock.advance(by: 2)
            try await pass(h)
            let t = try #require(try await h.store.taskInstances(runId: run).first { $0.taskId == "approve" })
            #expect(t.state == state, "\(action)")
            if let result { #expect(t.result == result) } else { #expect(t.error?.contains("no decision within 60s") == true, "\(t.error ?? "")") }
            #expect(try await h.store.approvals(waitingOnly: false).first?.state == "timed_out")
            await #expect(throws: StateConflict.self) { _ = try await decide(h, run, "approve") }
        }
    }

    @Test("a form's values are checked and reach the result; a branch approval follows the option chosen")
    func formAndBranch() async throws {
        let h = try await Harness.make([Self.release(form: [Param("version", .string), Param("canary", .int, default: 5)]), Self.branchy])
        let run = try await waiting(h)
        await #expect(throws: BadRequest.self) { _ = try await decide(h, run, "approve") }  // `version` is required
        await #expect(throws: BadRequest.self) { _ = try await decide(h, run, "approve", values: ["version": 2]) }
        await #expect(throws: BadRequest.self) { _ = try await decide(h, run, "approve", values: ["version": "2.0", "extra": true]) }
        _ = try await decide(h, run, "approve", values: ["version": "2.0"])
        try await pass(h)
        #expect(try await h.store.taskInstances(runId: run).first { $0.taskId == "approve" }?.result?["values"] == ["version": "2.0", "canary": 5])

        let b = try await h.trigger("branchy")
        try await pass(h)
        #expect(try await h.store.approvals(runId: b).first?.branch == true)
        _ = try await decide(h, b, "right", task: "pick")
        try await pass(h)
        let states = try await h.states(b)
        #expect(states["pick"] == "success" && states["left"] == "skipped" && states["right"] == "queued")
    }

    @Test("two schedulers' passes over the same approvals end each once")
    func twoSchedulers() async throws {
        let h = try await Harness.make([Self.release()])
        var runs: [String] = []
        for _ in 0..<10 { runs.append(try await h.trigger("release")) }
        try await h.succeedAll()
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        async let a = h.store.approvalEvents(now: h.clock.now())
        async let b = other.approvalEvents(now: h.clock.now())
        let (x, y) = try await (a, b)
        #expect(x.filter { $0.kind == .started }.count + y.filter { $0.kind == .started }.count == 10)
        try await h.broker.perform(try await h.store.applyEvents(x + y, now: h.clock.now()))
        for r in runs { _ = try await decide(h, r, "approve") }
        async let c = h.store.approvalEvents(now: h.clock.now())
        async let d = other.approvalEvents(now: h.clock.now())
        let (u, v) = try await (c, d)
        #expect((u + v).filter { $0.kind == .succeeded }.count == 10)
        try await h.broker.perform(try await h.store.applyEvents(u + v, now: h.clock.now()))
        #expect(try await h.succeedAll().count == 10)
        for r in runs { #expect(try await h.runState(r) == "success") }
    }
}
