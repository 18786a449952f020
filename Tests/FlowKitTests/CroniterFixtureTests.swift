import Foundation
import Testing
@testable import FlowKit

@Suite("Cron against croniter")
struct CroniterFixtureTests {
    struct Case: Decodable { let expression: String; let timeZone: String; let after: String; let next: [String] }
    struct File: Decodable { let cases: [Case] }

    static func load() throws -> [Case] {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/croniter_cases", withExtension: "json"))
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases
    }

    @Test("FlowKit agrees with croniter on every generated case")
    func agree() throws {
        let cases = try Self.load()
        #expect(cases.count >= 300)
        var mismatches: [String] = []
        for c in cases {
            let got = try fires(c.expression, TimeZone(identifier: c.timeZone)!, after: c.after, count: c.next.count)
            if got != c.next { mismatches.append("\(c.expression) [\(c.timeZone)] after \(c.after): got \(got), croniter \(c.next)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches, first: \(mismatches.prefix(3))")
    }
}
