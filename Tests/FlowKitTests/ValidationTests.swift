import Foundation
import Testing
@testable import FlowKit

@Suite("Validation errors")
struct ValidationTests {
    @Test("an invalid flow id is refused")
    func badFlowId() {
        #expect(throws: FlowValidationError.invalidFlowId("Bad-Id")) { try Flow("Bad-Id") { f in f.task("a") { _ in nil } }.validate() }
    }

    @Test("a run timeout must be positive; it reaches the definition in seconds")
    func runTimeout() throws {
        #expect(throws: FlowValidationError.self) { try Flow("t0", runTimeout: .zero) { f in f.task("a") { _ in nil } }.validate() }
        let ok = Flow("t90", runTimeout: .seconds(90)) { f in f.task("a") { _ in nil } }
        try ok.validate()
        #expect(FlowDefinition(ok).runTimeoutSeconds == 90)
        // Absent when unset: older flows keep their definitions and hashes.
        #expect(try !FlowDefinition(Flow("t") { f in f.task("a") { _ in nil } }).json().contains("runTimeout"))
    }

    @Test("duplicate task ids are named")
    func duplicateTask() {
        let flow = Flow("dup") { f in
            f.task("load") { _ in nil }
            f.task("load") { _ in nil }
        }
        #expect(throws: FlowValidationError.duplicateTask(flow: "dup", task: "load")) { try flow.validate() }
    }

    @Test("an unknown upstream task is named with the nearest id suggested")
    func unknownUpstream() {
        var broken = Flow("typo") { f in
            f.task("extract") { _ in nil }
            f.task("load") { _ in nil }
        }
        broken.injectUpstream(task: "load", upstream: ["extrct"])
        #expect(throws: FlowValidationError.unknownUpstream(flow: "typo", task: "load", upstream: "extrct", suggestion: "extract")) {
            try broken.validate()
        }
        #expect(FlowValidationError.unknownUpstream(flow: "typo", task: "load", upstream: "extrct", suggestion: "extract").description
            == "flow `typo`: task `load` depends on unknown task `extrct`; did you mean `extract`?")
    }

    @Test("a cycle is named in execution order")
    func cycle() {
        let flow = Flow("loop") { f in
            let a = f.task("a") { _ in nil }
            let b = f.task("b") { _ in nil }
            let c = f.task("c") { _ in nil }
            a --> b --> c --> a
        }
        do {
            try flow.validate()
            Issue.record("expected a cycle")
        } catch let FlowValidationError.cycle(flow: id, path: path) {
            #expect(id == "loop")
            #expect(path.count == 4 && path.first == path.last)
            #expect(Set(path) == ["a", "b", "c"])
            // Each hop is a real edge upstream → downstream.
            let edges: Set<[String]> = [["a", "b"], ["b", "c"], ["c", "a"]]
            for i in 0..<(path.count - 1) { #expect(edges.contains([path[i], path[i + 1]])) }
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a bad cron names the field, the value and why")
    func badCron() {
        let flow = Flow("cronbad", schedule: .cron("0 24 * * *")) { f in f.task("a") { _ in nil } }
        do {
            try flow.validate()
            Issue.record("expected a schedule error")
        } catch let e as FlowValidationError {
            #expect(e.description == "flow `cronbad`: cron `0 24 * * *`: field 2 (hour) value `24`: 24 is out of range 0-23")
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test("an unknown time zone is refused")
    func badZone() {
        let flow = Flow("zonebad", schedule: .cron("0 6 * * *", timeZone: "Europe/Madird")) { f in f.task("a") { _ in nil } }
        #expect(throws: FlowValidationError.invalidSchedule(flow: "zonebad", error: .unknownTimeZone("Europe/Madird"))) { try flow.validate() }
    }

    @Test("an empty flow, bad retries and a duplicate flow are refused")
    func otherErrors() {
        #expect(throws: FlowValidationError.emptyFlow("empty")) { try Flow("empty") { _ in }.validate() }
        let badRetry = Flow("r") { f in f.task("a", retry: RetryPolicy(retries: -1)) { _ in nil } }
        #expect(throws: FlowValidationError.self) { try badRetry.validate() }
        let one = Flow("same") { f in f.task("a") { _ in nil } }
        #expect(throws: FlowValidationError.duplicateFlow("same")) { try FlowRegistry([one, one]) }
    }

    @Test("a mapped task maps over an upstream result or a declared list param, within its cap")
    func mapping() throws {
        func refused(_ flow: Flow) -> String {
            do { try flow.validate(); return "" } catch { return "\(error)" }
        }
        #expect(refused(Flow("m1", params: [Param("items", .array)]) { f in f.map("m", over: .param("itms")) { _, x in x } })
            == "flow `m1`: mapped task `m`: maps over param `itms`, which the flow does not declare; did you mean `items`?")
        #expect(refused(Flow("m2", params: [Param("n", .int)]) { f in f.map("m", over: .param("n")) { _, x in x } })
            == "flow `m2`: mapped task `m`: maps over param `n` of type int; declare it .array")
        #expect(refused(Flow("m3", params: [Param("xs", .array)]) { f in f.map("m", over: .param("xs"), maxItems: 0) { _, x in x } })
            == "flow `m3`: mapped task `m`: maxItems must be 1...100000, got 0")
        var detached = Flow("m4") { f in
            let src = f.task("src") { _ in [1] }
            f.map("m", over: .result(of: src)) { _, x in x }
        }
        detached.replaceTask("m") { $0.upstream = [] }
        #expect(refused(detached) == "flow `m4`: mapped task `m`: maps over `src`, which is not one of its upstream tasks")
        // The source becomes an upstream task by itself; unmapped tasks keep their definitions' hashes.
        let ok = Flow("m5") { f in
            let src = f.task("src") { _ in [1, 2] }
            f.map("m", over: .result(of: src), maxItems: 50) { _, x in x }
        }
        try ok.validate()
        let def = FlowDefinition(ok)
        #expect(def.task("m")?.upstream == ["src"] && def.task("m")?.mapOver == .result(of: "src") && def.task("m")?.maxMapLength == 50)
        #expect(try !def.json().contains("\"id\":\"src\",\"kind\":\"swift\",\"map"))
        #expect(try FlowDefinition.decode(def.json()) == def)
        let graph = FlowGraph(def)
        #expect(graph.tasks["m[7]"]?.id == "m" && graph.tasks.isMapped("m") && !graph.tasks.isMapped("m[7]"))
    }

    @Test("mapped instance ids parse back to their task and index, and nothing else does")
    func instanceIds() {
        #expect(MappedInstance.parse("double[3]")! == ("double", 3))
        #expect(MappedInstance.parse(MappedInstance.id("a-b", index: 9999))! == ("a-b", 9999))
        for bad in ["double", "double[]", "[3]", "double[-1]", "double[03]", "double[3", "double[x]", "double[1234567890]"] {
            #expect(MappedInstance.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("an unknown flow lookup suggests the nearest flow")
    func unknownFlow() throws {
        let registry = try FlowRegistry([Flow("catalunya_data_pipeline") { f in f.task("a") { _ in nil } }])
        do {
            _ = try registry.flow("catalunya_pipeline")
            Issue.record("expected an error")
        } catch let e as UnknownFlowError {
            #expect(e.description.contains("did you mean `catalunya_data_pipeline`?"))
        }
    }
}

extension Flow {
    /// Test hook: add an upstream id that may not exist (the DSL cannot express a typo).
    mutating func injectUpstream(task: String, upstream: [String]) {
        replaceTask(task) { $0.upstream += upstream }
    }
}
