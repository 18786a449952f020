import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

/// `src` returns a list, `m` is mapped over it, `sum` reduces.
func mappedFlow(_ id: String = "mapped", maxItems: Int = defaultMaxMapLength, retries: Int = 0) -> Flow {
    Flow(id, params: [Param("xs", .array, default: [])]) { f in
        let src = f.task("src") { _ in nil }
        let m = f.map("m", over: .result(of: src), maxItems: maxItems, retry: RetryPolicy(retries: retries, delay: .seconds(10))) { _, x in x }
        m --> noop(f, "sum")
    }
}

let paramMapped = Flow("param_mapped", params: [Param("xs", .array, default: [1, 2]), Param("label", .string, default: "a")]) { f in
    f.map("m", over: .param("xs")) { _, x in x } --> noop(f, "sum")
}

@Suite("Dynamic task mapping", .serialized)
struct MappingTests {
    /// Reports many outcomes at once, as a batch of worker events.
    func finish(_ h: Harness, _ msgs: [CeleryMessage], _ kind: WorkerEvent.Kind = .succeeded,
                result: (FlowTaskInvocation) -> JSONValue? = { _ in nil }, store: SchedulerStore? = nil) async throws {
        let events = try msgs.map { m in
            let inv = try h.invocation(m)
            var e = WorkerEvent(kind: kind, worker: "w1", at: h.clock.now(), messageId: m.id, runId: inv.runId, taskId: inv.taskId,
                                tryNumber: inv.tryNumber, result: result(inv), error: kind == .failed ? "boom \(inv.taskId)" : nil)
            e.startedAt = h.clock.now().timeIntervalSince1970  // a short try reports its start inside its outcome
            return e
        }
        try await h.broker.perform(try await (store ?? h.store).applyEvents(events, now: h.clock.now()))
    }

    @Test("a mapped task expands into one instance per element, each message carrying its element and not the list; the reduce gets the results in index order")
    func expandAndReduce() async throws {
        let h = try await Harness.make([mappedFlow()])
        let run = try await h.trigger("mapped")
        try await h.report(try h.take()[0], .succeeded, result: [10, 20, 30])
        let msgs = try await h.take()
        let invs = try msgs.map { try h.invocation($0) }
        #expect(invs.map(\.taskId) == ["m[0]", "m[1]", "m[2]"])
        #expect(invs.map(\.mapIndex) == [0, 1, 2] && invs.map(\.mapItem) == [10, 20, 30])
        #expect(invs.allSatisfy { $0.upstream["src"] == nil })
        #expect(msgs.allSatisfy { $0.task == FlowTaskInvocation.taskName(flow: "mapped", task: "m") })
        #expect(try await h.states(run)["m"] == "running")
        // Out of order: the reduce still sees index order.
        try await finish(h, msgs.reversed(), result: { .int(100 + ($0.mapIndex ?? -1)) })
        let sum = try #require(try await h.take().first)
        #expect(try h.invocation(sum).upstream["m"] == [100, 101, 102])
        let tis = Dictionary(uniqueKeysWithValues: try await h.store.taskInstances(runId: run).map { ($0.taskId, $0) })
        #expect(tis["m"]?.state == "success" && tis["m"]?.result == [100, 101, 102])
        #expect(tis["m[1]"]?.result == 101 && tis["m[1]"]?.tries.count == 1)
        try await h.report(sum, .succeeded)
        #expect(try await h.runState(run) == "success")
        #expect(try await h.sql("SELECT unfinished_tasks FROM runs").first?.intOrNull("unfinished_tasks") == 0)
    }

    @Test("each instance retries on its own; one that fails for good fails the mapped task, naming it, and its downstream is upstream_failed")
    func instanceRetriesAndFailure() async throws {
        let h = try await Harness.make([mappedFlow(retries: 1)])
        let run = try await h.trigger("mapped")
        try await h.report(try h.take()[0], .succeeded, result: ["a", "b", "c"])
        let msgs = try await h.take()
        try await finish(h, [msgs[1]], .failed)
        #expect(try await h.states(run)["m[1]"] == "up_for_retry")
        try await finish(h, [msgs[0], msgs[2]])
        #expect(try await h.states(run)["m"] == "running")
        h.clock.advance(by: 10)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        let again = try #require(try await h.take().first)
        let inv = try h.invocation(again)
        #expect(inv.taskId == "m[1]" && inv.tryNumber == 2 && inv.mapItem == "b" && inv.mapIndex == 1)
        try await finish(h, [again], .failed)
        let tis = Dictionary(uniqueKeysWithValues: try await h.store.taskInstances(runId: run).map { ($0.taskId, $0) })
        #expect(tis["m[1]"]?.state == "failed" && tis["m[1]"]?.tries.count == 2)
        #expect(tis["m"]?.state == "failed")
        #expect(tis["m"]?.error == "1 of 3 mapped instances did not succeed; the first is `m[1]`")
        #expect(tis["sum"]?.state == "upstream_failed")
        #expect(try await h.runState(run) == "failed")
    }

    @Test("an empty list skips the mapped task and the skip propagates; a non-list or a list over the cap fails it, naming the task and the count")
    func emptyNonListAndCap() async throws {
        let h = try await Harness.make([mappedFlow(), mappedFlow("capped", maxItems: 2)])
        let empty = try await h.trigger("mapped")
        try await h.report(try h.take()[0], .succeeded, result: [])
        #expect(try await h.states(empty) == ["src": "success", "m": "skipped", "sum": "skipped"])
        #expect(try await h.runState(empty) == "success")

        let notList = try await h.trigger("mapped")
        try await h.report(try h.take()[0], .succeeded, result: "abc")
        let m = try #require(try await h.store.taskInstances(runId: notList).first { $0.taskId == "m" })
        #expect(m.state == "failed" && m.error == "mapped task `m` maps over the result of `src`, which is a JSON string, not a list")
        #expect(try await h.runState(notList) == "failed")

        let over = try await h.trigger("capped")
        try await h.report(try h.take()[0], .succeeded, result: [1, 2, 3])
        let capped = try #require(try await h.store.taskInstances(runId: over).first { $0.taskId == "m" })
        #expect(capped.state == "failed")
        #expect(capped.error == "mapped task `m` would expand to 3 instances (the result of `src`), over its cap of 2: raise maxItems or split the list")
        #expect(try await h.queued().isEmpty)
        #expect(try await h.states(over)["sum"] == "upstream_failed")
        #expect(try await h.runState(over) == "failed")
    }

    @Test("mapping over a param: the instances get its elements, and their messages leave the list out of their params")
    func overParam() async throws {
        let h = try await Harness.make([paramMapped])
        let run = try await h.trigger("param_mapped", conf: ["xs": ["x", "y", "z"]])
        let invs = try await h.take().map { try h.invocation($0) }
        #expect(invs.map(\.mapItem) == ["x", "y", "z"])
        #expect(invs.allSatisfy { $0.params["xs"] == nil && $0.params["label"] == "a" })
        #expect(try await h.states(run)["m"] == "running")
    }

    @Test("10,000 instances expand in one batch and settle exactly once, with outcomes applied by two schedulers at once")
    func tenThousandFromTwoSchedulers() async throws {
        let h = try await Harness.make([paramMapped])
        let n = 10_000
        let run = try await h.trigger("param_mapped", conf: ["xs": .array((0..<n).map { .int($0) })])
        let msgs = try await h.take()
        #expect(msgs.count == n)
        #expect(try await h.sql("SELECT count(*) AS c FROM task_instances WHERE map_parent = 'm' AND state = 'queued'").first?.intOrNull("c") == n)
        // Two stores (two schedulers' connections) apply interleaved batches concurrently.
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        let batches = stride(from: 0, to: n, by: 250).map { Array(msgs[$0..<min($0 + 250, n)]) }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for (i, b) in batches.enumerated() {
                g.addTask { try await self.finish(h, b, result: { .int(2 * ($0.mapIndex ?? 0)) }, store: i % 2 == 0 ? h.store : other) }
            }
            try await g.waitForAll()
        }
        let sum = try #require(try await h.take().first)
        let reduced = try h.invocation(sum).upstream["m"]?.arrayValue ?? []
        #expect(reduced.count == n && reduced.first == 0 && reduced.last == .int(2 * (n - 1)))
        let ended = try await h.sql("SELECT count(*) AS c FROM task_history WHERE task_id = 'm' AND to_state = 'success'")
        #expect(try ended.first?.intOrNull("c") == 1)
        try await h.report(sum, .succeeded)
        #expect(try await h.runState(run) == "success")
    }

    @Test("clearing a failed mapped task expands it again, tries continuing; an instance cannot be cleared or marked alone")
    func clearAndMark() async throws {
        let h = try await Harness.make([mappedFlow()])
        let run = try await h.trigger("mapped")
        try await h.report(try h.take()[0], .succeeded, result: [1, 2])
        let msgs = try await h.take()
        try await finish(h, [msgs[0]])
        try await finish(h, [msgs[1]], .failed)
        #expect(try await h.runState(run) == "failed")
        await #expect(throws: StateConflict.self) { _ = try await h.store.clearTasks(runId: run, taskIds: ["m[1]"], now: h.clock.now()) }
        await #expect(throws: StateConflict.self) { _ = try await h.store.markTask(runId: run, taskId: "m[1]", as: .success, now: h.clock.now()) }
        try await h.broker.perform(try await h.store.clearTasks(runId: run, taskIds: nil, now: h.clock.now()))
        let again = try await h.take().map { try h.invocation($0) }
        #expect(again.map(\.taskId) == ["m[0]", "m[1]"] && again.allSatisfy { $0.tryNumber == 2 })
        #expect(try await h.states(run)["sum"] == "pending")

        // Marking the mapped task success ends its unfinished instances and lets `sum` run.
        try await h.broker.perform(try await h.store.markTask(runId: run, taskId: "m", as: .success, now: h.clock.now()))
        let states = try await h.states(run)
        #expect(states["m[0]"] == "cancelled" && states["m[1]"] == "cancelled" && states["m"] == "success")
        let sum = try #require(try await h.take().first)
        #expect(try h.invocation(sum).taskId == "sum")
        try await h.report(sum, .succeeded)
        #expect(try await h.runState(run) == "success")
    }
}
