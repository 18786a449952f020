import FlowKit
import FlowKitTesting
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Scheduler
import Testing
@testable import FlowServer

/// FlowKit's Airflow-compatible API (`/api/v2`). `scripts/airflow_client_test.sh` (in `make test`)
/// drives it with Airflow's own Python client; these check the parts a client does not show:
/// the mapping rules, offset paging with totals and ordering, filters FlowKit refuses, Airflow's
/// error shape, marking a run, and the token exchange.
@Suite("Airflow's REST API", .serialized)
struct AirflowAPITests {
    @Test("mapping rules: Airflow's patterns, instants as Python sends them, states, run types, derived UUIDs")
    func mapping() throws {
        #expect(AirflowQuery.like("catalunya_data_pipeline", "data_pipe"))
        #expect(AirflowQuery.like("catalunya_data_pipeline", "CATALUNYA%line"))
        #expect(!AirflowQuery.like("example_retry", "sleep"))
        #expect(!AirflowQuery.like("ab", "a.b"))  // a dot is a dot, not a regular expression
        let t = try #require(Instant.parse("2026-12-04T20:00:00.5Z"))
        for text in ["2026-12-04T20:00:00.500000+0000", "2026-12-04T21:00:00.500000+01:00", "2026-12-04T20:00:00.5", "2026-12-04T20:00:00.500Z"] {
            #expect(try AirflowQuery.instant(text, "x") == t, "\(text)")
        }
        #expect(throws: APIError.self) { try AirflowQuery.instant("yesterday", "logical_date_gte") }
        #expect(try AirflowShapes.runStates(fromAirflow: "failed") == ["failed", "cancelled"])
        #expect(AirflowShapes.runState("cancelled") == "failed")
        #expect(throws: APIError.self) { try AirflowShapes.runStates(fromAirflow: "cancelled") }
        #expect(AirflowShapes.taskState("pending") == .null && AirflowShapes.taskState("cancelled") == "skipped")
        #expect(AirflowShapes.taskState("running", awaitingInput: true) == "awaiting_input")
        #expect(AirflowShapes.runType("asset") == "asset_triggered" && AirflowShapes.runType("flow") == "operator_triggered")
        #expect(try AirflowShapes.kinds(fromAirflow: "manual") == ["manual", "webhook"])
        let u = AirflowShapes.uuid("42/extract")
        #expect(u == AirflowShapes.uuid("42/extract") && u != AirflowShapes.uuid("43/extract"))
        #expect(UUID(uuidString: u) != nil)
        #expect(try AirflowQuery.runOrder(["-start_date", "id"]).map { "\($0.column.rawValue) \($0.descending)" } == ["r.started_at true", "r.id false"])
        #expect(throws: APIError.self) { try AirflowQuery.runOrder(["conf"]) }
    }

    @Test("runs: offset pages with totals in Airflow's order, filters by state and dates, a refused filter named, errors as {detail}, a run marked failed or success")
    func runs() async throws {
        try await withAPI(openReads: false) { (api: LiveAPI) async throws in
            var ids: [String] = []
            for i in 0..<3 {
                let r = try await api.request("POST", "/api/v2/dags/example_sleep/dagRuns", token: LiveAPI.admin,
                                              body: #"{"dag_run_id": "af-\#(i)", "logical_date": null, "conf": {"seconds": 0}}"#)
                #expect(r.status == 200, "\(r.text)")
                #expect(r.json["dag_run_id"] == .string("af-\(i)") && r.json["run_type"] == "manual" && r.json["conf"] == ["seconds": 0])
                ids.append("af-\(i)")
            }
            try await eventually("the three runs succeed") {
                try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns?state=success", token: LiveAPI.reader).json["total_entries"] == 3
            }
            let newest = try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns?order_by=-id&limit=2", token: LiveAPI.reader)
            #expect(newest.json["total_entries"] == 3)
            #expect(newest.json["dag_runs"]?.arrayValue?.compactMap { $0["dag_run_id"]?.stringValue } == ["af-2", "af-1"])
            let rest = try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns?order_by=-id&limit=2&offset=2", token: LiveAPI.reader)
            #expect(rest.json["dag_runs"]?.arrayValue?.compactMap { $0["dag_run_id"]?.stringValue } == ["af-0"])
            let oldest = try await api.request("GET", "/api/v2/dags/~/dagRuns?limit=1", token: LiveAPI.reader)
            #expect(oldest.json["dag_runs"]?.arrayValue?.first?["dag_run_id"] == "af-0")  // Airflow's default order: id ascending
            let future = try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns?start_date_gte=2999-01-01T00:00:00%2B0000", token: LiveAPI.reader)
            #expect(future.json["total_entries"] == 0, "\(future.text)")
            let run = try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns/af-1", token: LiveAPI.reader)
            #expect(run.json["state"] == "success" && run.json["duration"]?.doubleValue != nil)
            #expect(run.json["dag_versions"]?.arrayValue?.first?["version_number"] == 1)
            // A run's task instances come from the version it was made from, after a newer one.
            try await api.store.registerFlows([Flow("af_versions") { f in f.task("t") { _ in nil } }], now: Date())
            let v1 = try await api.request("POST", "/api/v2/dags/af_versions/dagRuns", token: LiveAPI.admin, body: #"{"dag_run_id": "af-v1"}"#)
            #expect(v1.status == 200, "\(v1.text)")
            try await api.store.registerFlows([Flow("af_versions") { f in f.shell("t", script: "true") }], now: Date())
            let before = try await api.request("GET", "/api/v2/dags/af_versions/dagRuns/af-v1/taskInstances/t", token: LiveAPI.reader)
            let now = try await api.request("GET", "/api/v2/dags/af_versions/details", token: LiveAPI.reader)
            #expect(before.json["operator"] == "swift" && before.json["dag_version"]?["version_number"] == 1, "\(before.text)")
            #expect(now.json["dag_version"]?["version_number"] == 2 || now.json["latest_dag_version"]?["version_number"] == 2, "\(now.text)")
            // Errors are Airflow's {detail}; a filter FlowKit does not serve is named, not ignored.
            let refused = try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns?conf_contains=x", token: LiveAPI.reader)
            #expect(refused.status == 400 && refused.json["detail"]?.stringValue?.contains("conf_contains") == true, "\(refused.text)")
            let missing = try await api.request("GET", "/api/v2/dags/example_retry/dagRuns/af-1", token: LiveAPI.reader)
            #expect(missing.status == 404 && missing.json["detail"]?.stringValue?.contains("it is a run of `example_sleep`") == true, "\(missing.text)")
            #expect(try await api.request("GET", "/api/v2/dags", token: nil).json["detail"] != nil)
            let unknown = try await api.request("GET", "/api/v2/connections", token: LiveAPI.reader)
            #expect(unknown.status == 404 && unknown.json["detail"]?.stringValue?.contains("no route") == true, "\(unknown.text)")
            let wrongMethod = try await api.request("DELETE", "/api/v2/dags/example_sleep", token: LiveAPI.admin)
            #expect(wrongMethod.status == 405 && wrongMethod.json["detail"] != nil && wrongMethod.header("Allow") != nil, "\(wrongMethod.text)")
            let denied = try await api.request("PATCH", "/api/v2/dags/example_sleep", token: LiveAPI.reader, body: #"{"is_paused": true}"#)
            #expect(denied.status == 403 && denied.json["detail"] != nil)
            // Marking: a long run marked failed stops (FlowKit cancels it); one marked success has every task succeed.
            let long = try await api.request("POST", "/api/v2/dags/example_sleep/dagRuns", token: LiveAPI.admin, body: #"{"conf": {"seconds": 30}}"#)
            let longId = try #require(long.json["dag_run_id"]?.stringValue)
            try await eventually("the long run to start") {
                try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns/\(longId)", token: LiveAPI.reader).json["state"] == "running"
            }
            let marked = try await api.request("PATCH", "/api/v2/dags/example_sleep/dagRuns/\(longId)", token: LiveAPI.admin, body: #"{"state": "failed"}"#)
            #expect(marked.status == 200 && marked.json["state"] == "failed", "\(marked.text)")
            #expect(try await api.request("GET", "/api/v1/runs/\(longId)", token: LiveAPI.reader).json["state"] == "cancelled")
            let other = try await api.request("POST", "/api/v2/dags/example_sleep/dagRuns", token: LiveAPI.admin, body: #"{"conf": {"seconds": 30}}"#)
            let otherId = try #require(other.json["dag_run_id"]?.stringValue)
            try await eventually("the other run to start") {
                try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns/\(otherId)", token: LiveAPI.reader).json["state"] == "running"
            }
            let success = try await api.request("PATCH", "/api/v2/dags/example_sleep/dagRuns/\(otherId)", token: LiveAPI.admin, body: #"{"state": "success"}"#)
            #expect(success.status == 200, "\(success.text)")
            try await eventually("the run marked success to end successful") {
                try await api.request("GET", "/api/v2/dags/example_sleep/dagRuns/\(otherId)", token: LiveAPI.reader).json["state"] == "success"
            }
            let audit = try await api.request("GET", "/api/v1/audit?limit=50", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            #expect(audit.contains { $0["action"] == "trigger" && $0["target"] == "af-0" })
            #expect(audit.contains { $0["action"] == "mark" && $0["target"]?.stringValue?.hasPrefix(otherId) == true }, "\(audit.prefix(5))")
        }
    }

    @Test("POST /auth/token: a configured user gets a 24-hour token of their role; an API token as the password is answered with itself; anything else is 401")
    func tokens() async throws {
        try await withAPI(openReads: false, configure: { $0.airflowUsers = [("ci", .admin, "long-password"), ("dash", .read, "other-password")] }) { (api: LiveAPI) async throws in
            let ci = try await api.request("POST", "/auth/token", body: #"{"username": "ci", "password": "long-password"}"#)
            #expect(ci.status == 201)
            let token = try #require(ci.json["access_token"]?.stringValue)
            #expect(try await api.request("PATCH", "/api/v2/dags/example_sleep", token: token, body: #"{"is_paused": true}"#).json["is_paused"] == true)
            let dash = try #require(try await api.request("POST", "/auth/token", body: #"{"username": "dash", "password": "other-password"}"#).json["access_token"]?.stringValue)
            #expect(try await api.request("PATCH", "/api/v2/dags/example_sleep", token: dash, body: #"{"is_paused": false}"#).status == 403)
            #expect(try await api.request("GET", "/api/v2/dags/example_sleep", token: dash).json["is_paused"] == true)
            let tokens = try await api.store.apiTokens(all: false, now: Date())
            #expect(tokens.contains { $0.name.hasPrefix("airflow-ci-") && $0.role == "admin" && ($0.expiresAt?.timeIntervalSinceNow ?? 0) > 86_000 })
            #expect(try await api.request("POST", "/auth/token", body: #"{"username": "x", "password": "\#(LiveAPI.reader)"}"#).json["access_token"] == .string(LiveAPI.reader))
            for body in [#"{"username": "ci", "password": "wrong"}"#, #"{"username": "nobody", "password": "long-password"}"#] {
                let r = try await api.request("POST", "/auth/token", body: body)
                #expect(r.status == 401 && r.json["detail"] == "invalid username or password", "\(r.text)")
            }
            #expect(try await api.request("POST", "/auth/token", body: #"{"username": "ci"}"#).status == 422)
            // Login tokens go a day after they expire (the retention cleaner's hourly pass); others stay.
            _ = try await api.store.createAPIToken(id: "keep1", name: "ci-bot", role: "read", salt: "s", secretHash: "h",
                                                   expiresAt: Date().addingTimeInterval(3600), now: Date())
            let logins = try await api.store.apiTokens(all: true, now: Date()).filter { $0.name.hasPrefix("airflow-") }.count
            #expect(logins == 2)
            #expect(try await api.store.deleteExpiredLoginTokens(before: Date()) == 0)
            #expect(try await api.store.deleteExpiredLoginTokens(before: Date().addingTimeInterval(2 * 86_400)) == 2)
            let left = try await api.store.apiTokens(all: true, now: Date())
            #expect(left.map(\.name) == ["ci-bot"], "\(left.map(\.name))")
        }
        #expect(throws: ConfigError.self) { try APIConfig.parseAirflowUsers("ci:admin:short") }
        #expect(throws: ConfigError.self) { try APIConfig.parseAirflowUsers("ci:events:long-enough-password") }
        #expect(try APIConfig.parseAirflowUsers("ci:admin:pass:with:colons").first?.password == "pass:with:colons")
    }
}
