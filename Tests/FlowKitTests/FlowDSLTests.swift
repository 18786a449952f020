import Foundation
import Testing
@testable import FlowKit

@Suite("Flow DSL")
struct FlowDSLTests {
    @Test("a five-task diamond reads naturally and wires its edges")
    func diamond() throws {
        let flow = Flow("diamond") { f in
            let a = f.task("a") { _ in nil }
            let b = f.task("b") { _ in nil }
            let c = f.shell("c", script: "echo c")
            let d = f.task("d") { _ in nil }
            a --> [b, c] --> d
            d --> f.task("e") { _ in nil }
        }
        try flow.validate()
        #expect(flow.task("b")?.upstream == ["a"])
        #expect(flow.task("c")?.upstream == ["a"])
        #expect(Set(flow.task("d")?.upstream ?? []) == ["b", "c"])
        #expect(flow.task("e")?.upstream == ["d"])
        let graph = FlowGraph(FlowDefinition(flow))
        #expect(graph.roots == ["a"])
        #expect(graph.leaves == ["e"])
        #expect(graph.descendants(of: ["b"]) == ["d", "e"])
    }

    @Test("after: declares upstream tasks too")
    func afterParameter() throws {
        let flow = Flow("after_param") { f in
            let a = f.task("a") { _ in nil }
            f.task("b", after: [a]) { _ in nil }
        }
        try flow.validate()
        #expect(flow.task("b")?.upstream == ["a"])
    }

    @Test("task options fall back to the flow defaults, then to FlowKit's")
    func optionDefaults() {
        let flow = Flow("opts", defaults: TaskOptions(retry: RetryPolicy(retries: 2, delay: .seconds(300)), queue: "etl")) { f in
            f.task("a") { _ in nil }
            f.task("b", retry: RetryPolicy(retries: 5), queue: "gpu", priority: 9, triggerRule: .allDone) { _ in nil }
        }
        let a = flow.effectiveOptions(flow.task("a")!), b = flow.effectiveOptions(flow.task("b")!)
        #expect(a.retry?.retries == 2)
        #expect(a.queue == "etl")
        #expect(a.priority == 0)
        #expect(a.triggerRule == .allSuccess)
        #expect(b.retry?.retries == 5)
        #expect(b.queue == "gpu")
        #expect(b.priority == 9)
        #expect(b.triggerRule == .allDone)
    }

    @Test("params: defaults merge with conf; unknown keys and wrong types are refused")
    func params() throws {
        let flow = Flow("p", params: [Param("seconds", .number, default: 10), Param("name", .string)]) { f in f.task("a") { _ in nil } }
        #expect(try flow.resolveParams(conf: [:]) == ["seconds": 10])
        #expect(try flow.resolveParams(conf: ["seconds": 2.5, "name": "x"]) == ["seconds": 2.5, "name": "x"])
        #expect(throws: ConfError.self) { try flow.resolveParams(conf: ["secs": 1]) }
        do {
            _ = try flow.resolveParams(conf: ["seconds": "ten"])
            Issue.record("expected a type error")
        } catch let e as ConfError {
            #expect(e.message.contains("param `seconds` must be of type number"))
        }
    }

    @Test("results over the cap are refused with a message that says what to do")
    func resultCap() throws {
        let big = JSONValue.string(String(repeating: "x", count: maxResultBytes + 1))
        do {
            _ = try checkResultSize(big, task: "t")
            Issue.record("expected the cap to apply")
        } catch let e as TaskError {
            #expect(e.message.contains("capped at \(maxResultBytes) bytes"))
        }
        #expect(try checkResultSize(["rows": 3], task: "t") == #"{"rows":3}"#)
    }
}
