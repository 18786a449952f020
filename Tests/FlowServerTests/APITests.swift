import FlowKit
import FlowKitTesting
import FlowServer
import Flows
import Foundation
import Testing

@Suite("HTTP API", .serialized)
struct APITests {
    @Test("health reports PostgreSQL, Redis and the scheduler; metrics are Prometheus text")
    func healthAndMetrics() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let h = try await api.request("GET", "/health")
            #expect(h.status == 200)
            #expect(h.json["checks"] == ["postgres": "ok", "redis": "ok", "scheduler": "ok"])
            let m = try await api.request("GET", "/metrics")
            #expect(m.status == 200)
            #expect(m.text.contains("flowkit_runs{state=\"success\"}"))
            #expect(m.text.contains("flowkit_queue_depth{queue=\"default\"}"))
            // A run whose tasks hand over to downstream tasks feeds the hop histogram.
            let before = hopCount(m.text)
            let run = try await api.request("POST", "/api/v1/flows/lakehouse_end_to_end/runs", token: LiveAPI.admin, body: #"{"conf": {"orders": 10}}"#)
            let id = try #require(run.json["runId"]?.stringValue)
            try await eventually("the run to succeed") { try await api.request("GET", "/api/v1/runs/\(id)").json["state"] == "success" }
            let after = try await api.request("GET", "/metrics")
            #expect(hopCount(after.text) > before)
            #expect(after.text.contains("# TYPE flowkit_scheduler_event_batch_seconds histogram"))
        }
    }

    @Test("flows: list, get with graph and latest runs, pause and unpause; unknown flows are 404 with a suggestion")
    func flows() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let list = try await api.request("GET", "/api/v1/flows")
            #expect(list.json["flows"]?.arrayValue?.count == allFlows.count)
            let f = try await api.request("GET", "/api/v1/flows/catalunya_data_pipeline")
            #expect(f.status == 200)
            #expect(f.json["schedule"] == "0 */6 * * *")
            #expect(f.json["timezone"] == "Europe/Madrid")
            #expect(f.json["nextRunAt"]?.stringValue != nil)
            #expect(f.json["definition"]?["tasks"]?.arrayValue?.count == 5)
            #expect(f.json["definition"]?["edges"]?.arrayValue?.count == 4)
            let missing = try await api.request("GET", "/api/v1/flows/catalunya_pipeline")
            #expect(missing.status == 404)
            #expect(missing.json["error"] == "not_found")
            #expect(missing.json["message"]?.stringValue?.contains("did you mean `catalunya_data_pipeline`?") == true)
            let paused = try await api.request("POST", "/api/v1/flows/example_sleep/pause", token: LiveAPI.admin)
            #expect(paused.json["isPaused"] == true)
            let unpaused = try await api.request("POST", "/api/v1/flows/example_sleep/unpause", token: LiveAPI.admin)
            #expect(unpaused.json["isPaused"] == false)
        }
    }

    @Test("writes need an admin token: 401 without one or with a bad one, 403 with a read-only one")
    func auth() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            #expect(try await api.request("POST", "/api/v1/flows/example_sleep/runs").status == 401)
            #expect(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: "wrong").status == 401)
            let ro = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.reader)
            #expect(ro.status == 403)
            #expect(ro.json["error"] == "forbidden")
            let ok = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 0}}"#)
            #expect(ok.status == 201)
            #expect(ok.json["state"] == "queued")
        }
    }

    @Test("reads can be closed: then they need a token too")
    func closedReads() async throws {
        try await withAPI(openReads: false) { (api: LiveAPI) async throws in
            #expect(try await api.request("GET", "/api/v1/flows").status == 401)
            #expect(try await api.request("GET", "/api/v1/flows", token: LiveAPI.reader).status == 200)
            #expect(try await api.request("GET", "/health").status == 200)
        }
    }

    @Test("bad input is a 4xx with a JSON error, never a 500", arguments: [
        ("POST", "/api/v1/flows/example_sleep/runs", "{not json", 400, "malformed_json"),
        ("POST", "/api/v1/flows/example_sleep/runs", "[1, 2]", 400, "malformed_json"),
        ("POST", "/api/v1/flows/example_sleep/runs", #"{"conf": 5}"#, 400, "bad_request"),
        ("POST", "/api/v1/flows/example_sleep/runs", #"{"conf": {"seconds": "ten"}}"#, 400, "invalid_conf"),
        ("POST", "/api/v1/flows/example_sleep/runs", #"{"conf": {"minutes": 1}}"#, 400, "invalid_conf"),
        ("POST", "/api/v1/flows/example_sleep/runs", #"{"logicalDate": "yesterday"}"#, 400, "bad_request"),
        ("POST", "/api/v1/flows/nope/runs", "{}", 404, "not_found"),
        ("GET", "/api/v1/runs?limit=0", nil, 400, "bad_request"),
        ("GET", "/api/v1/runs?limit=abc", nil, 400, "bad_request"),
        ("GET", "/api/v1/runs?state=exploded", nil, 400, "bad_request"),
        ("GET", "/api/v1/runs?cursor=-4", nil, 400, "bad_request"),
        ("GET", "/api/v1/runs?since=notadate", nil, 400, "bad_request"),
        ("GET", "/api/v1/runs/nope", nil, 404, "not_found"),
        ("POST", "/api/v1/runs/nope/cancel", nil, 404, "not_found"),
        ("GET", "/api/v1/runs/nope/tasks", nil, 404, "not_found"),
        ("GET", "/api/v1/runs/nope/tasks/x/logs", nil, 404, "not_found"),
    ] as [(String, String, String?, Int, String)])
    func badInput(_ method: String, _ path: String, _ body: String?, _ status: Int, _ code: String) async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let r = try await api.request(method, path, token: LiveAPI.admin, body: body)
            #expect(r.status == status, "\(method) \(path): \(r.text)")
            #expect(r.json["error"]?.stringValue == code)
            #expect(r.json["message"]?.stringValue?.isEmpty == false)
        }
    }

    @Test("an oversized body is refused with 413")
    func oversized() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let big = #"{"conf": {"x": ""# + String(repeating: "a", count: 2 << 20) + #""}}"#
            let r = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: big)
            #expect(r.status == 413)
            #expect(r.json["error"] == "payload_too_large")
        }
    }

    @Test("runs: keyset pagination and filters; a run's tasks with every try, and its logs from an offset")
    func runsAndLogs() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            var ids: [String] = []
            for _ in 0..<5 {
                let r = try await api.request("POST", "/api/v1/flows/example_retry/runs", token: LiveAPI.admin)
                ids.append(r.json["runId"]!.stringValue!)
            }
            let page1 = try await api.request("GET", "/api/v1/runs?limit=2")
            let cursor = try #require(page1.json["nextCursor"]?.stringValue)
            let page2 = try await api.request("GET", "/api/v1/runs?limit=2&cursor=\(cursor)")
            let page3 = try await api.request("GET", "/api/v1/runs?limit=2&cursor=\(page2.json["nextCursor"]!.stringValue!)")
            let seen = [page1, page2, page3].flatMap { $0.json["runs"]?.arrayValue ?? [] }.compactMap { $0["runId"]?.stringValue }
            #expect(seen == ids.reversed())
            #expect(page3.json["nextCursor"] == .null)
            #expect(try await api.request("GET", "/api/v1/runs?flow_id=example_sleep").json["runs"]?.arrayValue?.isEmpty == true)
            try await eventually("all five runs succeed") {
                try await api.request("GET", "/api/v1/runs?state=success").json["runs"]?.arrayValue?.count == 5
            }
            let tasks = try await api.request("GET", "/api/v1/runs/\(ids[0])/tasks")
            let flaky = try #require(tasks.json["tasks"]?.arrayValue?.first)
            #expect(flaky["tries"]?.arrayValue?.map { $0["state"] } == ["failed", "success"])
            let logs = try await api.request("GET", "/api/v1/runs/\(ids[0])/tasks/flaky/logs?try=1")
            let lines = try #require(logs.json["lines"]?.arrayValue)
            #expect(lines.contains { $0["line"]?.stringValue?.contains("failing on purpose") == true })
            let after = try await api.request("GET", "/api/v1/runs/\(ids[0])/tasks/flaky/logs?try=1&offset=\(logs.json["nextOffset"]!.intValue!)")
            #expect(after.json["lines"]?.arrayValue?.isEmpty == true)
            #expect(try await api.request("GET", "/api/v1/runs/\(ids[0])/tasks/nope/logs").status == 404)
            let w = try await api.request("GET", "/api/v1/workers")
            #expect(w.json["workers"]?.arrayValue?.first?["name"] == "api-test-worker")
        }
    }

    @Test("cancel and clear answer 409 when the run's state does not allow them")
    func conflicts() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let r = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 30}}"#)
            let id = r.json["runId"]!.stringValue!
            #expect(try await api.request("POST", "/api/v1/runs/\(id)/cancel", token: LiveAPI.admin).json["state"] == "cancelled")
            let again = try await api.request("POST", "/api/v1/runs/\(id)/cancel", token: LiveAPI.admin)
            #expect(again.status == 409)
            #expect(again.json["error"] == "conflict")
            #expect(try await api.request("POST", "/api/v1/runs/\(id)/clear", token: LiveAPI.admin).status == 409)
        }
    }
}

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
