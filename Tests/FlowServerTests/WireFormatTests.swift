import FlowKit
@testable import FlowServer
import Foundation
import Scheduler
import Testing

@Suite("API wire format")
struct WireFormatTests {
    func record(_ i: Int, started: Bool, ended: Bool) throws -> RunRecord {
        var o: [String: Any] = [
            "id": i, "runId": "manual__2026-11-22T06:00:00.\(i)Z", "flowId": "catalunya_data_pipeline", "flowVersion": i % 3 + 1,
            "triggerKind": ["manual", "scheduled", "backfill"][i % 3], "state": ["queued", "running", "success"][i % 3],
            "conf": i % 2 == 0 ? [:] : ["region": "Girona \"nord\"/\u{1}", "n": i, "x": [1.5, true, NSNull()]] as [String: Any],
            "logicalDate": 1_795_327_200.123 + Double(i), "dataIntervalStart": -86_400.5, "dataIntervalEnd": 4_107_542_400.999,
            "createdAt": 1_795_327_200.0005 * Double(i % 2),
        ]
        if started { o["startedAt"] = 1_795_327_201.25 }
        if ended { o["endedAt"] = 1_795_327_202.0 }
        if i % 5 == 1 { o["stalledReason"] = "no live worker has version \(i) of flow `catalunya_data_pipeline`" }
        if i % 7 == 2 { o["triggeredBy"] = "manual__parent" }
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        return try d.decode(RunRecord.self, from: JSONSerialization.data(withJSONObject: o))
    }

    @Test("a page of runs is written byte for byte as JSONEncoder writes it")
    func runPage() throws {
        let runs = try (0..<12).map { try record($0, started: $0 % 2 == 0, ended: $0 % 4 == 0) }
        for cursor in [nil, "42"] as [String?] {
            let page = RunPage(runs: runs, nextCursor: cursor)
            let expected = String(decoding: try apiEncoder.encode(page), as: UTF8.self)
            var w = JSONWriter()
            page.write(to: &w)
            #expect(w.string == expected)
            #expect(expected.contains("\"nextCursor\":\(cursor.map { "\"\($0)\"" } ?? "null")"))
        }
    }
}
