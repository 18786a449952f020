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
