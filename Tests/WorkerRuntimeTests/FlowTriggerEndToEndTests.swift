import FlowJSON
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Testing
@testable import Scheduler

@Suite("Flow-to-flow triggers end to end", .serialized)
struct FlowTriggerEndToEndTests {
    func runs(_ sys: LiveSystem, _ flow: String) async throws -> [RunRecord] {
        try await sys.store.runs(RunFilter(flowId: flow, limit: 100))
    }

    @Test("example_trigger_parent starts one example_trigger_child with n=7, waits for it, and example_followup runs once after it with its conf and results")
    func examples() async throws {
        try await withSystem { sys in
            let parent = try await sys.trigger("example_trigger_parent")
            #expect(try await sys.waitForRun(parent) == "success")
            let children = try await runs(sys, "example_trigger_child")
            try #require(children.count == 1)
            let child = children[0]
            #expect(child.triggerKind == "flow" && child.triggeredBy == parent && child.state == "success")
            #expect(child.conf == ["n": 7])
            let tis = try await sys.store.taskInstances(runId: parent)
            let start = try #require(tis.first { $0.taskId == "start_child" })
            #expect(start.result == ["flowId": "example_trigger_child", "runId": .string(child.runId), "state": "success"])
            #expect(start.worker == "flowkit-scheduler")
            #expect(tis.first { $0.taskId == "report" }?.result == start.result)
            let logs = try await sys.store.logs(runId: parent, taskId: "start_child", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(logs.contains("started run \(child.runId) of `example_trigger_child`"))

            try await eventually("example_followup to run after the child") {
                try await runs(sys, "example_followup").first.map { ["success", "failed"].contains($0.state) } ?? false
            }
            let followups = try await runs(sys, "example_followup")
            try #require(followups.count == 1)
            #expect(followups[0].state == "success" && followups[0].triggeredBy == child.runId && followups[0].conf == ["n": 7])
            let echo = try await sys.store.taskInstances(runId: followups[0].runId).first?.result
            #expect(echo == ["n": 7, "square": 49, "upstreamRun": .string(child.runId)])

            // A failed child run starts no follow-up; a manual child run that succeeds starts one.
            let manual = try await sys.trigger("example_trigger_child", conf: ["n": 3])
            #expect(try await sys.waitForRun(manual) == "success")
            try await eventually("a second follow-up") { try await runs(sys, "example_followup").count == 2 }
            try await Task.sleep(for: .seconds(1))
            #expect(try await runs(sys, "example_followup").count == 2)
        }
    }

    @Test("a trigger task whose child fails fails naming the child, and its retries find the same child: one child run in all")
    func retriesFindTheSameChild() async throws {
        let failing = Flow("trigger_failing_child") { f in f.task("fail") { _ in throw TaskError("the child fails") } }
        let parentFlow = Flow("trigger_retrying_parent") { f in
            f.triggerFlow("start", flow: "trigger_failing_child", wait: true, retry: RetryPolicy(retries: 2, delay: .seconds(0.2)))
        }
        let noWait = Flow("trigger_no_wait") { f in
            let s = f.triggerFlow("start", flow: "trigger_failing_child")
            f.task("after", after: [s]) { ctx in ctx.upstream["start"] ?? .null }
        }
        try await withSystem(flows: allFlows + [failing, parentFlow, noWait]) { sys in
            let parent = try await sys.trigger("trigger_retrying_parent")
            #expect(try await sys.waitForRun(parent, timeout: 45) == "failed")
            let children = try await runs(sys, "trigger_failing_child")
            #expect(children.count == 1)
            let ti = try #require(try await sys.store.taskInstances(runId: parent).first)
            #expect(ti.state == "failed" && ti.tryNumber == 3)
            #expect(ti.error == "run \(children.first?.runId ?? "?") of flow `trigger_failing_child` ended failed")
            let logs = try await sys.store.logs(runId: parent, taskId: "start", tryNumber: 3, after: 0).lines.map(\.line)
            #expect(logs.contains { $0.contains("was started before (by an earlier try): not starting another") })

            // Without wait, the task succeeds once the child exists, whatever the child does later.
            let quick = try await sys.trigger("trigger_no_wait")
            #expect(try await sys.waitForRun(quick) == "success")
            #expect(try await runs(sys, "trigger_failing_child").count == 2)
        }
    }

    @Test("a trigger task whose conf the child's params refuse fails with the params' error, and starts nothing")
    func refusedConf() async throws {
        let parentFlow = Flow("trigger_bad_conf") { f in
            f.triggerFlow("start", flow: "example_trigger_child", conf: ["n": "seven"])
        }
        try await withSystem(flows: allFlows + [parentFlow]) { sys in
            let parent = try await sys.trigger("trigger_bad_conf")
            #expect(try await sys.waitForRun(parent) == "failed")
            let ti = try #require(try await sys.store.taskInstances(runId: parent).first)
            #expect(ti.error?.contains("could not start flow `example_trigger_child`") == true)
            #expect(ti.error?.contains("`n`") == true)
            #expect(try await runs(sys, "example_trigger_child").isEmpty)
        }
    }
}
