import FlowKit
import FlowKitTesting
@testable import FlowServer
import Flows
import Foundation
import Scheduler
import Testing

/// One contract: each response decodes into the Swift type `flowctl` reads it as
/// (`Scheduler/Contract`), and each fits the schema `openapi.json` documents for its route —
/// every key the API sent is a documented property, every required property is there.
@Suite("API contract", .serialized)
struct ContractTests {
    static let document = try! JSONValue.parse(OpenAPIDocument.text)

    /// Resolves `$ref`s in the document.
    static func resolve(_ schema: JSONValue) -> JSONValue {
        guard let ref = schema["$ref"]?.stringValue else { return schema }
        return document["components"]?["schemas"]?[String(ref.split(separator: "/").last ?? "")] ?? .null
    }

    /// Where `value` does not fit `schema`, as paths.
    static func misfits(_ value: JSONValue, _ schema: JSONValue, at path: String = "$") -> [String] {
        let s = resolve(schema)
        var out: [String] = []
        if let options = (s["oneOf"] ?? s["anyOf"])?.arrayValue {
            return options.contains { misfits(value, $0, at: path).isEmpty } ? [] : ["\(path): fits none of its \(options.count) schemas"]
        }
        switch value {
        case .object(let o):
            if let props = s["properties"]?.objectValue {
                for key in o.keys where props[key] == nil && s["additionalProperties"] == nil { out.append("\(path).\(key): not documented") }
                for (key, sub) in props { if let v = o[key], v != .null { out += misfits(v, sub, at: "\(path).\(key)") } }
            }
            for r in s["required"]?.arrayValue ?? [] { if let k = r.stringValue, o[k] == nil { out.append("\(path).\(k): required, absent") } }
        case .array(let a):
            if let items = s["items"] { for (i, v) in a.prefix(5).enumerated() { out += misfits(v, items, at: "\(path)[\(i)]") } }
        default: break
        }
        return out
    }

    static func check<T: Decodable>(_ api: LiveAPI, _ method: String, _ path: String, route: String, as type: T.Type,
                                    token: String? = LiveAPI.admin, body: String? = nil, status: Int = 200,
                                    sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let r = try await api.request(method, path, token: token, body: body)
        #expect(r.status == status, "\(method) \(path): \(r.text.prefix(300))", sourceLocation: sourceLocation)
        do { _ = try APIWire.decode(T.self, from: r.json) } catch {
            Issue.record("\(method) \(path) does not decode as \(T.self): \(error)", sourceLocation: sourceLocation)
        }
        let schema = document["paths"]?[route]?[method.lowercased()]?["responses"]?[String(status)]?["content"]?["application/json"]?["schema"]
        guard let schema else { Issue.record("\(method) \(route) documents no \(status) schema", sourceLocation: sourceLocation); return }
        let wrong = misfits(r.json, schema)
        #expect(wrong.isEmpty, "\(method) \(path) does not fit its documented schema: \(wrong)", sourceLocation: sourceLocation)
    }

    @Test("every typed response decodes into its contract type and fits its documented schema")
    func responses() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let made = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 0}}"#)
            #expect(made.status == 201)
            let run = try #require(made.json["runId"]?.stringValue)
            for _ in 0..<200 where try await api.request("GET", "/api/v1/runs/\(run)").json["state"] != "success" {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Self.check(api, "GET", "/api/v1/flows", route: "/api/v1/flows", as: FlowList.self)
            try await Self.check(api, "GET", "/api/v1/flows/example_sleep", route: "/api/v1/flows/{flow_id}", as: FlowRecord.self)
            try await Self.check(api, "GET", "/api/v1/runs?taskCounts=true", route: "/api/v1/runs", as: RunPage.self)
            try await Self.check(api, "GET", "/api/v1/runs/\(run)", route: "/api/v1/runs/{run_id}", as: RunRecord.self)
            try await Self.check(api, "GET", "/api/v1/runs/\(run)/tasks", route: "/api/v1/runs/{run_id}/tasks", as: TaskList.self)
            try await Self.check(api, "GET", "/api/v1/runs/\(run)/tasks/sleep/logs", route: "/api/v1/runs/{run_id}/tasks/{task_id}/logs",
                                 as: LogPage.self)
            try await Self.check(api, "GET", "/api/v1/schedulers", route: "/api/v1/schedulers", as: SchedulerList.self)
            try await Self.check(api, "GET", "/api/v1/workers", route: "/api/v1/workers", as: WorkerList.self)
            try await Self.check(api, "PUT", "/api/v1/pools/contract", route: "/api/v1/pools/{pool}", as: PoolRecord.self, body: #"{"slots": 2}"#)
            try await Self.check(api, "GET", "/api/v1/pools", route: "/api/v1/pools", as: PoolList.self)
            try await Self.check(api, "DELETE", "/api/v1/pools/contract", route: "/api/v1/pools/{pool}", as: Deleted.self)
            try await Self.check(api, "POST", "/api/v1/assets/events", route: "/api/v1/assets/events", as: AssetEventPosted.self,
                                 token: LiveAPI.events, body: #"{"uri": "demo://contract"}"#, status: 201)
            try await Self.check(api, "GET", "/api/v1/assets", route: "/api/v1/assets", as: AssetList.self)
            try await Self.check(api, "GET", "/api/v1/assets/events?uri=demo://contract", route: "/api/v1/assets/events", as: AssetEventList.self)
            try await Self.check(api, "GET", "/api/v1/notifications", route: "/api/v1/notifications", as: NotificationList.self)
            try await Self.check(api, "GET", "/api/v1/audit", route: "/api/v1/audit", as: AuditPage.self)
            try await Self.check(api, "GET", "/api/v1/dead-letters", route: "/api/v1/dead-letters", as: DeadLetterPage.self)
            try await Self.check(api, "GET", "/api/v1/connections", route: "/api/v1/connections", as: ConnectionList.self)
            try await Self.check(api, "GET", "/api/v1/variables", route: "/api/v1/variables", as: VariableList.self)
            try await Self.check(api, "GET", "/health", route: "/health", as: HealthReport.self)
            try await Self.check(api, "POST", "/api/v1/flows/example_sleep/runs", route: "/api/v1/flows/{flow_id}/runs", as: RunRecord.self,
                                 body: try APIWire.encode(TriggerBody(conf: ["seconds": 0])).compactJSON, status: 201)
            try await Self.check(api, "GET", "/api/v1/flows/example_sleep/grid", route: "/api/v1/flows/{flow_id}/grid", as: FlowGrid.self)
            try await Self.check(api, "POST", "/api/v1/flows/example_hourly/pause", route: "/api/v1/flows/{flow_id}/pause", as: FlowRecord.self)
            try await Self.check(api, "POST", "/api/v1/flows/example_hourly/backfill", route: "/api/v1/flows/{flow_id}/backfill",
                                 as: BackfillCreated.self, body: #"{"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T02:00:00Z"}"#, status: 201)
            let backfilled = try #require(try await api.request("GET", "/api/v1/runs?flow_id=example_hourly&limit=1").json["runs"]?.arrayValue?.first?["runId"]?.stringValue)
            try await Self.check(api, "POST", "/api/v1/runs/\(backfilled)/cancel", route: "/api/v1/runs/{run_id}/cancel", as: RunRecord.self)
            try await Self.check(api, "POST", "/api/v1/runs/\(run)/tasks/sleep/mark", route: "/api/v1/runs/{run_id}/tasks/{task_id}/mark",
                                 as: RunRecord.self, body: #"{"state": "failed"}"#)
            try await Self.check(api, "PUT", "/api/v1/connections/contract_db", route: "/api/v1/connections/{name}", as: ConnectionRecord.self,
                                 body: #"{"uri": "postgresql://u:secret@db:5432/x"}"#)
            try await Self.check(api, "GET", "/api/v1/connections/contract_db", route: "/api/v1/connections/{name}", as: ConnectionRecord.self)
            try await Self.check(api, "PUT", "/api/v1/variables/contract_var", route: "/api/v1/variables/{key}", as: VariableRecord.self,
                                 body: #"{"value": {"n": 1}}"#)
            try await Self.check(api, "GET", "/api/v1/variables/contract_var", route: "/api/v1/variables/{key}", as: VariableRecord.self)
            try await Self.check(api, "DELETE", "/api/v1/variables/contract_var", route: "/api/v1/variables/{key}", as: Deleted.self)
            try await Self.check(api, "DELETE", "/api/v1/connections/contract_db", route: "/api/v1/connections/{name}", as: Deleted.self)
            try await Self.check(api, "POST", "/api/v1/runs/\(run)/clear", route: "/api/v1/runs/{run_id}/clear", as: RunRecord.self,
                                 body: #"{"taskIds": ["sleep"]}"#)
            try await Self.check(api, "GET", "/api/v1/overview", route: "/api/v1/overview", as: Overview.self)
            try await Self.check(api, "GET", "/api/v1/runs?kind=manual&taskCounts=true", route: "/api/v1/runs", as: RunPage.self)
            #expect(try await api.request("GET", "/api/v1/runs?kind=nightly").status == 400)
            // An approval waiting, listed, then decided.
            let waiting = try #require(try await api.request("POST", "/api/v1/flows/example_approval/runs", token: LiveAPI.admin, body: "{}").json["runId"]?.stringValue)
            for _ in 0..<200 where try await api.request("GET", "/api/v1/approvals?run_id=\(waiting)").json["approvals"]?.arrayValue?.isEmpty != false {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Self.check(api, "GET", "/api/v1/approvals", route: "/api/v1/approvals", as: ApprovalList.self)
            try await Self.check(api, "POST", "/api/v1/runs/\(waiting)/tasks/approve/decision", route: "/api/v1/runs/{run_id}/tasks/{task_id}/decision",
                                 as: ApprovalRecord.self, body: try APIWire.encode(DecisionBody(decision: "approve", comment: "ok")).compactJSON)
            try await Self.check(api, "GET", "/api/v1/approvals?state=all", route: "/api/v1/approvals", as: ApprovalList.self)
            // Backfill objects: a dry run over ticks with and without runs, then one made, listed, shown, paused, resumed, cancelled.
            let range = BackfillCreateBody(flowId: "example_hourly", from: "2026-11-01T00:00:00Z", to: "2026-11-01T05:00:00Z", reprocess: "all",
                                           maxActiveRuns: 1)
            var dry = range; dry.dryRun = true
            try await Self.check(api, "POST", "/api/v1/backfills", route: "/api/v1/backfills", as: BackfillPlan.self,
                                 body: try APIWire.encode(dry).compactJSON)
            try await Self.check(api, "POST", "/api/v1/backfills", route: "/api/v1/backfills", as: BackfillDetail.self,
                                 body: try APIWire.encode(range).compactJSON, status: 201)
            let bf = try #require(try await api.request("GET", "/api/v1/backfills?flow_id=example_hourly").json["backfills"]?.arrayValue?.first?["id"]?.intValue)
            try await Self.check(api, "GET", "/api/v1/backfills?state=running", route: "/api/v1/backfills", as: BackfillList.self)
            try await Self.check(api, "GET", "/api/v1/backfills/\(bf)", route: "/api/v1/backfills/{backfill_id}", as: BackfillDetail.self)
            for action in ["pause", "resume", "cancel"] {
                try await Self.check(api, "POST", "/api/v1/backfills/\(bf)/\(action)", route: "/api/v1/backfills/{backfill_id}/\(action)", as: BackfillDetail.self)
            }
        }
    }

    @Test("the schema check finds a key the document does not have, and a required one missing")
    func checkerCatches() {
        let schema: JSONValue = ["type": "object", "required": ["a"], "properties": ["a": ["type": "string"], "b": ["type": "integer"]]]
        #expect(Self.misfits(["a": "x", "b": 1], schema).isEmpty)
        #expect(Self.misfits(["a": "x", "c": 1], schema) == ["$.c: not documented"])
        #expect(Self.misfits(["b": 1], schema) == ["$.a: required, absent"])
        #expect(!Self.misfits(["tasks": [["taskId": "x"]]], ["properties": ["tasks": ["items": ["$ref": "#/components/schemas/TaskInstance"]]]]).isEmpty)
    }
}
