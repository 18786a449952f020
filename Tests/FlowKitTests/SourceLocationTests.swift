import Foundation
import Testing
@testable import FlowKit

@Suite("Where flows and tasks are declared")
struct SourceLocationTests {
    func made(padding: Bool) -> (Flow, Int) {
        var line = 0
        let flow: Flow
        if padding {
            line = #line + 1
            flow = Flow("located") { f in let a = f.task("a") { _ in nil }; f.shell("b", script: "true", after: [a]) }
        } else {


            line = #line + 1
            flow = Flow("located") { f in let a = f.task("a") { _ in nil }; f.shell("b", script: "true", after: [a]) }
        }
        return (flow, line)
    }

    @Test("each flow and task records #fileID:#line of its declaration; moving code keeps the definition and hash")
    func recorded() throws {
        let (a, lineA) = made(padding: true)
        let (b, lineB) = made(padding: false)
        #expect(lineA != lineB)
        #expect(a.declaredAt == "FlowKitTests/SourceLocationTests.swift:\(lineA)")
        #expect(a.task("a")?.declaredAt == "FlowKitTests/SourceLocationTests.swift:\(lineA)")
        #expect(a.sourceLocations == ["flow": .string("FlowKitTests/SourceLocationTests.swift:\(lineA)"),
                                      "tasks": ["a": .string("FlowKitTests/SourceLocationTests.swift:\(lineA)"), "b": .string("FlowKitTests/SourceLocationTests.swift:\(lineA)")]])
        #expect(b.task("b")?.declaredAt == "FlowKitTests/SourceLocationTests.swift:\(lineB)")
        #expect(try FlowDefinition(a).contentHash() == FlowDefinition(b).contentHash())
        #expect(try !FlowDefinition(a).json().contains("SourceLocationTests"))
    }

    @Test("a task made through another builder method (a built-in sensor, a mapped task) gets its caller's line, not the library's")
    func throughHelpers() throws {
        let here = #line + 2
        let flow = Flow("helpers") { f in
            let wait = f.sensor("wait", .http("http://127.0.0.1:9/"))
            f.map("each", over: .param("xs"), after: [wait]) { _, x in x }
            f.task("plain") { _ in nil }
        }
        #expect(flow.task("wait")?.declaredAt == "FlowKitTests/SourceLocationTests.swift:\(here)")
        #expect(flow.task("each")?.declaredAt == "FlowKitTests/SourceLocationTests.swift:\(here + 1)")
        #expect(flow.task("plain")?.declaredAt == "FlowKitTests/SourceLocationTests.swift:\(here + 2)")
    }
}
