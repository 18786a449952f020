import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Testing
@testable import WorkerRuntime
import Scheduler

let shellMapped = Flow("shell_mapped", params: [Param("cities", .array, default: ["Lleida", "Girona"])]) { f in
    f.mapShell("greet", over: .param("cities"), script: "printf '{\"i\": %s, \"city\": \"%s\"}\\n' \"$FLOWKIT_MAP_INDEX\" \"$FLOWKIT_MAP_ITEM\"")
}

@Suite("Mapping end to end", .serialized)
struct MappingEndToEndTests {
    @Test("example_mapping: double runs once per item on real workers and total sums them; an empty list skips both")
    func exampleMapping() async throws {
        try await withSystem(flows: allFlows + [shellMapped], workers: 2) { sys in
            let run = try await sys.trigger("example_mapping")
            #expect(try await sys.waitForRun(run) == "success")
            let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
            #expect(tis["total"]?.result == ["sum": 12, "count": 3])
            #expect(tis["double"]?.result == [2, 4, 6])
            #expect((0..<3).map { tis["double[\($0)]"]?.state } == ["success", "success", "success"])
            let logs = try await sys.store.logs(runId: run, taskId: "double[2]", tryNumber: 1, after: 0)
            #expect(logs.tryNumber == 1)

            let big = try await sys.trigger("example_mapping", conf: ["items": .array((1...200).map { .int($0) })])
            #expect(try await sys.waitForRun(big) == "success")
            let total = try await sys.store.taskInstances(runId: big).first { $0.taskId == "total" }
            #expect(total?.result == ["sum": .int(2 * 200 * 201 / 2), "count": 200])

            let empty = try await sys.trigger("example_mapping", conf: ["items": []])
            #expect(try await sys.waitForRun(empty) == "success")
            let states = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: empty).map { ($0.taskId, $0.state) })
            #expect(states == ["make_list": "success", "double": "skipped", "total": "skipped"])

            let shell = try await sys.trigger("shell_mapped")
            #expect(try await sys.waitForRun(shell) == "success")
            let greet = try await sys.store.taskInstances(runId: shell).first { $0.taskId == "greet" }
            #expect(greet?.result == [["i": 0, "city": "Lleida"], ["i": 1, "city": "Girona"]])
        }
    }
}
