import FlowKit
import FlowKitTesting
import FlowServer
import Flows
import Foundation
import Testing

@Suite("OpenAPI document")
struct OpenAPITests {
    @Test("every route is documented and every documented route exists")
    func routesMatch() throws {
        let doc = try JSONValue.parse(OpenAPIDocument.text)
        #expect(doc["openapi"] == "3.1.0")
        var documented = Set<String>()
        for (path, item) in doc["paths"]?.objectValue ?? [:] {
            for method in (item.objectValue ?? [:]).keys { documented.insert("\(method.uppercased()) \(path)") }
        }
        let routed = Set(FlowAPI.routes.map { "\($0.method) \($0.path)" })
        #expect(routed.subtracting(documented).isEmpty, "undocumented: \(routed.subtracting(documented))")
        #expect(documented.subtracting(routed).isEmpty, "documented but missing: \(documented.subtracting(routed))")
    }
}

func hopCount(_ metrics: String) -> Int {
    metrics.split(separator: "\n").first { $0.hasPrefix("flowkit_hop_seconds_count ") }.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
}
