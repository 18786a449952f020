import CeleryProtocol
import FlowKit
import Flows
import Foundation
import Testing
@testable import Scheduler

/// The dispatch layer as pure code: no database, no broker.
@Suite("Run state machine and message builder (pure)")
struct RunStateMachineTests {
    static let graph = FlowGraph(FlowDefinition(diamond))  // a → [b, c] → d → e

    @Test("a finished task makes ready the downstream tasks whose upstream tasks all succeeded")
    func ready() {
        var states = Dictionary(uniqueKeysWithValues: ["a", "b", "c", "d", "e"].map { ($0, TaskState.pending) })
        states["a"] = .success
        #expect(RunStateMachine.settle(after: ["a"], states: states, in: Self.graph) == .init(ready: ["b", "c"]))
        states["b"] = .success
        #expect(RunStateMachine.settle(after: ["b"], states: states, in: Self.graph) == .init())  // d waits for c
        states["c"] = .success
        #expect(RunStateMachine.settle(after: ["c"], states: states, in: Self.graph) == .init(ready: ["d"]))
    }

    @Test("a failure marks everything downstream upstream_failed, transitively, in waves")
    func upstreamFailedPropagates() {
        var states = Dictionary(uniqueKeysWithValues: ["a", "b", "c", "d", "e"].map { ($0, TaskState.pending) })
        states["a"] = .success; states["b"] = .failed; states["c"] = .success
        let settled = RunStateMachine.settle(after: ["b"], states: states, in: Self.graph)
        #expect(settled == .init(upstreamFailed: ["d", "e"]))
        // The first wave alone reaches d only; e comes in the next.
        let first = RunStateMachine.evaluate(RunStateMachine.candidates(after: ["b"], in: Self.graph), states: states, in: Self.graph)
        #expect(first == .init(upstreamFailed: ["d"]))
        #expect(RunStateMachine.statesNeeded(for: ["d"], in: Self.graph) == ["b", "c", "d"])
    }

    @Test("trigger rules: all_done runs after a failure; a skipped upstream skips an all_success task; one_failed skips when none failed")
    func triggerRules() {
        let flow = Flow("rules") { f in
            let a = noop(f, "a"), b = noop(f, "b")
            noop(f, "cleanup", after: [a, b], rule: .allDone)
            noop(f, "alert", after: [a, b], rule: .oneFailed)
            noop(f, "report", after: [a, b])
        }
        let g = FlowGraph(FlowDefinition(flow))
        let failed = RunStateMachine.settle(after: ["a", "b"], states: ["a": .failed, "b": .success, "cleanup": .pending, "alert": .pending, "report": .pending], in: g)
        #expect(Set(failed.ready) == ["cleanup", "alert"] && failed.upstreamFailed == ["report"])
        let fine = RunStateMachine.settle(after: ["a", "b"], states: ["a": .success, "b": .success, "cleanup": .pending, "alert": .pending, "report": .pending], in: g)
        #expect(Set(fine.ready) == ["cleanup", "report"] && fine.skipped == ["alert"])
        let skipped = RunStateMachine.settle(after: ["a", "b"], states: ["a": .skipped, "b": .success, "cleanup": .pending, "alert": .pending, "report": .pending], in: g)
        #expect(skipped.skipped.contains("report"))
    }

    @Test("a branch's unchosen direct downstream tasks are the ones skipped")
    func notChosen() {
        let g = FlowGraph(FlowDefinition(exampleBranch))
        #expect(RunStateMachine.notChosen(["choose": ["left"]], in: g) == ["right"])
        #expect(RunStateMachine.notChosen(["choose": []], in: g) == ["left", "right"])
        #expect(RunStateMachine.notChosen(["choose": ["left", "right"]], in: g).isEmpty)
        #expect(g.tasks["choose"]?.kind == TaskBody.branchKind)
    }

    @Test("ready tasks go out highest priority first, ties in the order they became ready")
    func dispatchOrder() {
        let flow = Flow("prio") { f in
            let root = noop(f, "root")
            root --> [f.task("low", priority: 1) { _ in nil }, f.task("high", priority: 9) { _ in nil },
                      f.task("mid", priority: 5) { _ in nil }, f.task("mid2", priority: 5) { _ in nil }]
        }
        let g = FlowGraph(FlowDefinition(flow))
        #expect(RunStateMachine.dispatchOrder(["low", "mid2", "high", "mid"], in: g) == ["high", "mid2", "mid", "low"])
    }

    @Test("a run fails when a leaf failed, was upstream_failed or cancelled; otherwise it succeeds (skipped leaves too)")
    func finalState() {
        for s in TaskState.allCases where s.isTerminal {
            let expected: RunState = [.failed, .upstreamFailed, .cancelled].contains(s) ? .failed : .success
            #expect(RunStateMachine.finalState(leafStates: [.success, s]) == expected, "\(s)")
        }
        // The store's SQL gets exactly this list.
        #expect(RunStateMachine.failingLeafStateNames == ["failed", "upstream_failed", "cancelled"])
    }

    @Test("messages: FlowKit tasks carry their invocation and run header; upstream results of their own upstream only; Celery tasks get params as kwargs")
    func messages() throws {
        let mixed = Flow("mixed") { f in
            let a = noop(f, "a"), b = noop(f, "b")
            noop(f, "c", after: [a])
            f.celery("py", name: "tasks.add", after: [b])
        }
        let g = FlowGraph(FlowDefinition(mixed))
        let day = Date(timeIntervalSince1970: 1_764_547_200)
        let run = TaskMessageBuilder.Run(runId: "manual__x", flowId: "mixed", params: ["n": 3], logicalDate: day,
                                         dataIntervalStart: day.addingTimeInterval(-3600), dataIntervalEnd: day)
        let tries = [TaskMessageBuilder.Try(taskId: "c", tryNumber: 2, messageId: "m-c", queue: "default", timeoutSeconds: 30),
                     TaskMessageBuilder.Try(taskId: "py", tryNumber: 1, messageId: "m-py", queue: "python", timeoutSeconds: nil)]
        let ms = TaskMessageBuilder.messages(run: run, tries: tries, graph: g, results: ["a": ["rows": 5], "b": "from b"])
        #expect(ms.map(\.id) == ["m-c", "m-py"])
        let c = ms[0]
        #expect(c.task == "flowkit.mixed.c" && c.queue == "default" && c.retries == 1 && c.priority == 0 && c.timeLimit.hard == 30)
        #expect(c.extraHeaders[FlowKitKeys.runHeader] == "manual__x" && c.rootId == "manual__x")
        let inv = try FlowTaskInvocation(json: try #require(c.kwargs[FlowTaskInvocation.kwarg]))
        #expect(inv.upstream == ["a": ["rows": 5]])  // not b's
        #expect(inv.tryNumber == 2 && inv.params == ["n": 3] && inv.logicalDate == day.timeIntervalSince1970)
        let py = ms[1]
        #expect(py.task == "tasks.add" && py.queue == "python" && py.kwargs == ["n": 3])
        #expect(py.extraHeaders[FlowKitKeys.runHeader] == "manual__x")
        #expect(try FlowTaskInvocation(json: try #require(py.extraHeaders[FlowTaskInvocation.kwarg])).upstream == ["b": "from b"])
        // The envelope round-trips through the codec.
        #expect(try CeleryMessage.decode(c.encoded()) == c)
    }

    @Test("messages: a task that declares connections or variables carries those the store has, still sealed; other tasks carry nothing")
    func sealedNeeds() throws {
        let flow = Flow("needs") { f in
            f.task("uses", connections: ["warehouse", "absent"], variables: ["threshold"]) { _ in nil }
            f.sql("sql", connection: "warehouse", sql: "SELECT 1")
            noop(f, "plain")
        }
        let g = FlowGraph(FlowDefinition(flow))
        let day = Date(timeIntervalSince1970: 1_764_547_200)
        let run = TaskMessageBuilder.Run(runId: "r", flowId: "needs", params: [:], logicalDate: day, dataIntervalStart: day, dataIntervalEnd: day)
        let tries = ["uses", "sql", "plain"].map { TaskMessageBuilder.Try(taskId: $0, tryNumber: 1, messageId: "m-\($0)", queue: "default", timeoutSeconds: nil) }
        let sealed = TaskMessageBuilder.Sealed(connections: ["warehouse": "fk1:abc:W", "other": "fk1:abc:O"], variables: ["threshold": "fk1:abc:T"])
        let ms = TaskMessageBuilder.messages(run: run, tries: tries, graph: g, results: [:], sealed: sealed)
        func secrets(_ i: Int) throws -> JSONValue? { try FlowTaskInvocation(json: try #require(ms[i].kwargs[FlowTaskInvocation.kwarg])).secrets }
        #expect(try secrets(0) == ["connections": ["warehouse": "fk1:abc:W"], "variables": ["threshold": "fk1:abc:T"]])
        #expect(try secrets(1) == ["connections": ["warehouse": "fk1:abc:W"], "variables": [:]])
        #expect(try secrets(2) == nil)
        #expect(!(ms[2].kwargs[FlowTaskInvocation.kwarg]?.compactJSON.contains("secrets") ?? true))
    }
}
