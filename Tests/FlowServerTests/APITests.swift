import FlowKit
import FlowKitTesting
import FlowServer
import Flows
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import Hummingbird
import NIOCore
import PostgresClient
import Prometheus
import RedisClient
import Scheduler

@Suite("HTTP API", .serialized)
struct APITests {
    @Test("health reports PostgreSQL, Redis and the scheduler; metrics are Prometheus text")
    func healthAndMetrics() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let h = try await api.request("GET", "/health")
            #expect(h.status == 200)
            #expect(h.json["checks"] == ["postgres": "ok", "redis": "ok", "scheduler": "ok"])
            // Kubernetes' probes, open like /health.
            #expect(try await api.request("GET", "/health/live").status == 200)
            let ready = try await api.request("GET", "/health/ready")
            #expect(ready.status == 200 && ready.json["checks"] == ["postgres": "ok", "redis": "ok"], "\(ready.text)")
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
            // What starts each flow besides its schedule, in words, in the list itself.
            let triggers = Dictionary(uniqueKeysWithValues: (list.json["flows"]?.arrayValue ?? []).map { ($0["flowId"]?.stringValue ?? "", $0["triggers"]) })
            #expect(triggers["example_asset_consumer"] == ["assets: demo://numbers"])
            #expect(triggers["example_webhook"] == ["webhook"])
            #expect(triggers["example_followup"] == ["after: example_trigger_child"])
            #expect(triggers["catalunya_data_pipeline"] == .some(nil))
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

    @Test("an API that cannot reach Redis is alive but not ready, and says which server it misses")
    func readinessWithoutRedis() async throws {
        let url = try await TestServers.freshDatabase()
        let port = try freePort(), deadRedis = try freePort()
        let api = FlowAPI(store: SchedulerStore(db: PGPool(url, size: 1)), broker: SchedulerBroker(config: RedisConfig(port: deadRedis), consumer: "api"),
                          config: APIConfig(tokens: [], openReads: true), registry: PrometheusCollectorRegistry())
        let app = Task { try await api.application(host: "127.0.0.1", port: port).run() }
        defer { app.cancel() }
        let base = "http://127.0.0.1:\(port)"
        try await eventually("the API to answer") { (try? await LiveAPI.request(base: base, "GET", "/health/live").status) == 200 }
        let ready = try await LiveAPI.request(base: base, "GET", "/health/ready")
        #expect(ready.status == 503, "\(ready.text)")
        #expect(ready.json["checks"]?["postgres"] == "ok")
        #expect(ready.json["checks"]?["redis"]?.stringValue?.hasPrefix("down") == true, "\(ready.text)")
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

    @Test("edge cases: out-of-range numbers, percent-encoded paths, unknown routes and methods, content types, far dates")
    func edgeCases() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            func expectError(_ r: LiveAPI.Reply, _ status: Int, _ code: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
                #expect(r.status == status, "\(r.text)", sourceLocation: sourceLocation)
                #expect(r.json["error"]?.stringValue == code, "\(r.text)", sourceLocation: sourceLocation)
                #expect(r.json["message"]?.stringValue?.contains(text) == true, "\(r.text)", sourceLocation: sourceLocation)
            }
            let run = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 0}}"#)
            let id = try #require(run.json["runId"]?.stringValue)
            try await eventually("the run to succeed") { try await api.request("GET", "/api/v1/runs/\(id)").json["state"] == "success" }
            // A try number beyond PostgreSQL's integer was a 500 (22003).
            expectError(try await api.request("GET", "/api/v1/runs/\(id)/tasks/sleep/logs?try=2147483648"), 400, "bad_request", "from 1 to 2147483647")
            // The largest try number the API takes is a 404 here: the task has no such try.
            expectError(try await api.request("GET", "/api/v1/runs/\(id)/tasks/sleep/logs?try=2147483647"), 404, "not_found", "has no try 2147483647")
            #expect(try await api.request("GET", "/api/v1/runs/\(id)/tasks/sleep/logs?try=1").status == 200)
            for bad in ["0", "10001", "x"] {
                expectError(try await api.request("GET", "/api/v1/runs/\(id)/tasks/sleep/logs?limit=\(bad)"), 400, "bad_request", "`limit`")
            }
            // Numbers that overflow a double were stored as null.
            expectError(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 1e999999}}"#),
                        400, "malformed_json", "out of range")
            expectError(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin,
                                              body: #"{"conf": {"n": "# + String(repeating: "7", count: 5000) + "}}"), 400, "malformed_json", "out of range")
            // Percent-encoded path segments are decoded.
            #expect(try await api.request("GET", "/api/v1/flows/example%5Fsleep").json["flowId"] == "example_sleep")
            let encoded = id.replacingOccurrences(of: ":", with: "%3A")
            #expect(encoded != id)
            #expect(try await api.request("GET", "/api/v1/runs/\(encoded)").json["runId"]?.stringValue == id)
            expectError(try await api.request("GET", "/api/v1/flows/bad%C3%28"), 400, "bad_request", "percent-encoding")
            // Unknown routes and wrong methods answer with the JSON error.
            expectError(try await api.request("GET", "/api/v1/nothing/here"), 404, "not_found", "no route `GET /api/v1/nothing/here`")
            let wrong = try await api.request("DELETE", "/api/v1/runs/\(id)", token: LiveAPI.admin)
            expectError(wrong, 405, "method_not_allowed", "answers GET")
            expectError(try await api.request("PUT", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: "{}"), 405, "method_not_allowed", "answers POST")
            // HEAD is GET without the body; HEAD of a POST-only route is a 405 like any wrong method.
            let head = try await api.request("HEAD", "/api/v1/flows/example_sleep")
            #expect(head.status == 200 && head.text.isEmpty)
            #expect(try await api.request("HEAD", "/health").status == 200)
            let headOfPost = try await api.request("HEAD", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin)
            #expect(headOfPost.status == 405 && headOfPost.headers["Allow"] == "POST", "\(headOfPost.headers)")
            // JSON must say it is JSON.
            expectError(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 0}}"#,
                                              contentType: "text/plain"), 415, "unsupported_media_type", "`text/plain`")
            #expect(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 0}}"#,
                                          contentType: "application/json; charset=utf-8").status == 201)
            // Year 1 is a client's zero value, not a logical date.
            expectError(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin,
                                              body: #"{"logicalDate": "0001-01-01T00:00:00Z"}"#), 400, "bad_request", "outside the years 1900 to 9999")
            expectError(try await api.request("GET", "/api/v1/runs?since=0001-01-01T00:00:00Z"), 400, "bad_request", "outside the years")
        }
    }

    @Test("a client that sends its headers or body too slowly is cut off; one address cannot hold every connection")
    func slowClientsAndConnectionLimit() async throws {
        try await withAPI(configure: { c in
            c.connectionLimits.headerTimeout = .seconds(1)
            c.connectionLimits.bodyTimeout = .seconds(1)
            c.connectionLimits.perClient = 3
        }) { (api: LiveAPI) async throws in
            // Partial headers, never finished: held for more than 150 s before.
            let slow = try RawConnection(port: api.port)
            slow.send("GET /api/v1/flows HTTP/1.1\r\nHost: x\r\n")
            #expect(slow.readUntilClosed(seconds: 15).closed, "partial headers kept the connection open")
            // Headers, then a body that never comes.
            let body = try RawConnection(port: api.port)
            body.send("POST /api/v1/flows/example_sleep/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            #expect(body.readUntilClosed(seconds: 15).closed, "an unfinished body kept the connection open")
            // Three open connections from one address; the fourth is answered 429 and closed.
            let held = try (0..<3).map { _ in try RawConnection(port: api.port) }
            for h in held { h.send("GET /api/v1/flows HTTP/1.1\r\nHost: x\r\n") }
            let extra = try RawConnection(port: api.port)
            extra.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            let reply = extra.readUntilClosed(seconds: 15)
            #expect(reply.text.hasPrefix("HTTP/1.1 429"), "\(reply.text)")
            #expect(reply.text.contains("too_many_connections"))
            #expect(reply.closed)
            // Once they are gone (cut off by the header timeout), the address may connect again.
            for h in held { _ = h.readUntilClosed(seconds: 15) }
            try await eventually("the address to be let in again") { (try? await api.request("GET", "/health").status) == 200 }
        }
    }

    @Test("webhook triggers: a signed delivery (or the secret as a bearer token) starts a run with the payload as params; a repeated Idempotency-Key, also sent ten times at once, makes one run; bad signatures and payloads are refused")
    func webhooks() async throws {
        setenv("FLOWKIT_CONN_HOOK_EXAMPLE", "hook-secret", 1)
        try await withAPI { api in
            func sign(_ body: String) -> String {
                WebhookSignature.value(secret: "hook-secret", body: Array(body.utf8))
            }
            func post(_ body: String, headers: [String: String]) async throws -> (Int, JSONValue) {
                var req = URLRequest(url: URL(string: api.base + "/api/v1/hooks/example_webhook")!, timeoutInterval: 10)
                req.httpMethod = "POST"
                req.httpBody = Data(body.utf8)
                for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
                let (data, resp) = try await URLSession.shared.data(for: req)
                return ((resp as! HTTPURLResponse).statusCode, (try? JSONValue.parse(data)) ?? .null)
            }
            let body = #"{"file": "s3://landing/a.csv", "bytes": 12}"#
            let (status, run) = try await post(body, headers: ["X-FlowKit-Signature": sign(body), "Idempotency-Key": "delivery-1"])
            #expect(status == 201 && run["triggerKind"] == "webhook")
            let runId = try #require(run["runId"]?.stringValue)
            let again = try await post(body, headers: ["X-FlowKit-Signature": sign(body), "Idempotency-Key": "delivery-1"])
            #expect(again.0 == 200 && again.1["runId"]?.stringValue == runId)
            try await eventually("the hook run to succeed") { try await api.store.run(runId).state == "success" }
            #expect(try await api.store.taskInstances(runId: runId).first?.result == ["file": "s3://landing/a.csv", "bytes": 12])

            // Ten identical deliveries at once: one run.
            let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { g in
                for _ in 0..<10 {
                    g.addTask { let r = try await post(body, headers: ["Authorization": "Bearer hook-secret", "Idempotency-Key": "burst"]); return (r.0, r.1["runId"]?.stringValue) }
                }
                var out: [(Int, String?)] = []
                for try await r in g { out.append(r) }
                return out
            }
            #expect(statuses.filter { $0.0 == 201 }.count == 1 && statuses.filter { $0.0 == 200 }.count == 9)
            #expect(Set(statuses.compactMap(\.1)).count == 1)

            #expect(try await post(body, headers: ["X-FlowKit-Signature": sign(body + " ")]).0 == 401)
            #expect(try await post(body, headers: [:]).0 == 401)
            let wrongType = #"{"file": "x", "bytes": "many"}"#
            let typed = try await post(wrongType, headers: ["X-FlowKit-Signature": sign(wrongType)])
            #expect(typed.0 == 400 && typed.1["error"] == "invalid_conf")
            let broken = "{nope"
            #expect(try await post(broken, headers: ["X-FlowKit-Signature": sign(broken)]).1["error"] == "malformed_json")
            var req = URLRequest(url: URL(string: api.base + "/api/v1/hooks/example_sleep")!)
            req.httpMethod = "POST"
            req.httpBody = Data("{}".utf8)
            let (_, noHook) = try await URLSession.shared.data(for: req)
            #expect((noHook as! HTTPURLResponse).statusCode == 404)
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
            // A dashboard needs no call per row: runs carry their task counts, flows their latest run.
            try await eventually("the newest run to end") { try await api.request("GET", "/api/v1/runs/\(ids[4])").json["state"] == "success" }
            #expect(try await api.request("GET", "/api/v1/runs?limit=1&taskCounts=true").json["runs"]?.arrayValue?.first?["taskCounts"] == ["success": 1])
            #expect(try await api.request("GET", "/api/v1/runs?limit=1").json["runs"]?.arrayValue?.first?["taskCounts"] == nil)
            #expect(try await api.request("GET", "/api/v1/runs?taskCounts=maybe").status == 400)
            #expect(try await api.request("GET", "/api/v1/runs/\(ids[4])").json["taskCounts"] == ["success": 1])
            let flows = try await api.request("GET", "/api/v1/flows").json["flows"]?.arrayValue ?? []
            let retry = try #require(flows.first { $0["flowId"] == "example_retry" })
            #expect(retry["latestRun"]?["runId"]?.stringValue == ids[4] && retry["latestRun"]?["state"] == "success")
            #expect(retry["latestRun"]?["at"]?.stringValue != nil)
            #expect(flows.first { $0["flowId"] == "example_sleep" }?["latestRun"] == nil)
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
            // `limit` pages: one line at a time reads the same lines as one page.
            var paged: [JSONValue] = [], offset = 0
            while true {
                let page = try await api.request("GET", "/api/v1/runs/\(ids[0])/tasks/flaky/logs?try=1&offset=\(offset)&limit=1")
                let got = try #require(page.json["lines"]?.arrayValue)
                #expect(got.count <= 1)
                if got.isEmpty { break }
                paged += got
                offset = try #require(page.json["nextOffset"]?.intValue)
            }
            #expect(paged == lines)
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
