import FlowKit
import FlowKitTesting
import Foundation
import Scheduler
import Testing

/// `POST /api/v1/backfills` and its resources over HTTP, with the scheduler of a live API
/// carrying the backfills out.
@Suite("Backfills over the API", .serialized)
struct BackfillAPITests {
    @Test("bad backfill requests are 4xx naming the field or the problem; writes need an admin token")
    func badRequests() async throws {
        try await withAPI { api in
            let cases: [(String, Int, String)] = [
                (#"{"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z"}"#, 400, "flowId"),
                (#"{"flowId": "example_hourly", "from": "yesterday", "to": "2026-11-01T05:00:00Z"}"#, 400, "`from`"),
                (#"{"flowId": "example_hourly", "from": "2026-11-02T00:00:00Z", "to": "2026-11-01T05:00:00Z"}"#, 400, "is after `to`"),
                (#"{"flowId": "example_hourly", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z", "reprocess": "some"}"#, 400, "`reprocess` must be none, failed or all"),
                (#"{"flowId": "example_hourly", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z", "maxActiveRuns": 0}"#, 400, "`maxActiveRuns`"),
                (#"{"flowId": "example_hourly", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z", "maxActiveRuns": "two"}"#, 400, "maxActiveRuns"),
                (#"{"flowId": "example_hourly", "from": "2000-01-01T00:00:00Z", "to": "2026-11-01T05:00:00Z"}"#, 400, "more than 10000 ticks"),
                (#"{"flowId": "example_hourly", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z", "conf": {"nope": 1}}"#, 400, "nope"),
                (#"{"flowId": "catalunya_pipeline", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z"}"#, 404, "catalunya_data_pipeline"),
                (#"{"flowId": "example_sleep", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T05:00:00Z"}"#, 409, "has no schedule"),
            ]
            for (body, status, words) in cases {
                let r = try await api.request("POST", "/api/v1/backfills", token: LiveAPI.admin, body: body)
                #expect(r.status == status && r.text.contains(words), "\(body): \(r.status) \(r.text)")
            }
            let ok = #"{"flowId": "example_hourly", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T01:00:00Z", "dryRun": true}"#
            #expect(try await api.request("POST", "/api/v1/backfills", body: ok).status == 401)
            #expect(try await api.request("POST", "/api/v1/backfills", token: LiveAPI.reader, body: ok).status == 403)
            #expect(try await api.request("GET", "/api/v1/backfills/12345").status == 404)
            #expect(try await api.request("GET", "/api/v1/backfills/abc").status == 404)
            #expect(try await api.request("POST", "/api/v1/backfills/12345/pause", token: LiveAPI.admin).status == 404)
            #expect(try await api.request("GET", "/api/v1/backfills?state=exploded").status == 400)
            #expect(try await api.request("POST", "/api/v1/backfills", token: LiveAPI.admin, body: ok).status == 200, "a dry run creates nothing")
            #expect(try await api.request("GET", "/api/v1/backfills").json["backfills"]?.arrayValue?.isEmpty == true)
        }
    }

    @Test("twelve admins creating the same backfill at once: one is created (201), the others are told it overlaps (409); its runs are made once, within maxActiveRuns, and audited")
    func concurrentCreators() async throws {
        try await withAPI { api in
            let body = #"{"flowId": "example_hourly", "from": "2026-10-01T00:00:00Z", "to": "2026-10-01T11:00:00Z", "maxActiveRuns": 3}"#
            let statuses = try await withThrowingTaskGroup(of: Int.self) { g in
                for _ in 0..<12 { g.addTask { try await api.request("POST", "/api/v1/backfills", token: LiveAPI.admin, body: body).status } }
                var out: [Int] = []
                for try await s in g { out.append(s) }
                return out.sorted()
            }
            #expect(statuses == [201] + Array(repeating: 409, count: 11), "\(statuses)")
            let id = try #require(try await api.request("GET", "/api/v1/backfills").json["backfills"]?.arrayValue?.first?["id"]?.intValue)
            var most = 0
            try await eventually("the backfill to complete", timeout: 60) {
                let active = try await api.store.runs(RunFilter(flowId: "example_hourly", limit: 500))
                    .filter { $0.triggerKind == "backfill" && ($0.state == "queued" || $0.state == "running") }.count
                most = max(most, active)
                return try await api.store.backfill(id: id).backfill.state == "completed"
            }
            #expect(most <= 3, "at most maxActiveRuns of its runs at once, saw \(most)")
            let d = try await api.store.backfill(id: id)
            #expect(d.backfill.runs == ["success": 12] && d.ticks.allSatisfy { $0.done && $0.action == "create" })
            let runs = try await api.store.runs(RunFilter(flowId: "example_hourly", limit: 500)).filter { $0.triggerKind == "backfill" }
            #expect(runs.count == 12 && Set(runs.map(\.logicalDate)).count == 12)
            let audit = try await api.request("GET", "/api/v1/audit?action=backfill", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            #expect(audit.count == 1 && audit.first?["detail"]?["backfill"]?.intValue == id, "\(audit)")
        }
    }
}
