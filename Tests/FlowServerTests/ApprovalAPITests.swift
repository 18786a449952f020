import FlowKit
import FlowKitTesting
import Foundation
import Scheduler
import Testing

/// `example_approval` end to end: the live scheduler asks, a person decides through the API or
/// flowctl, the run goes on (or fails) as written.
@Suite("Approvals over the API and flowctl", .serialized)
struct ApprovalAPITests {
    func waitingRun(_ api: LiveAPI) async throws -> String {
        let made = try await api.request("POST", "/api/v1/flows/example_approval/runs", token: LiveAPI.admin, body: #"{"conf": {"timeout": 600}}"#)
        let run = try #require(made.json["runId"]?.stringValue)
        try await eventually("the approval to wait for a decision") {
            try await api.request("GET", "/api/v1/approvals?run_id=\(run)").json["approvals"]?.arrayValue?.count == 1
        }
        return run
    }

    @Test("example_approval waits for a decision; the API approves it (once, of ten admins deciding at once) and publish returns who; bad decisions are 4xx naming the problem")
    func approveOverAPI() async throws {
        try await withAPI { api in
            let run = try await waitingRun(api)
            let asked = try #require(try await api.request("GET", "/api/v1/approvals").json["approvals"]?.arrayValue?.first)
            #expect(asked["prompt"] == "Publish this release?" && asked["options"] == ["approve", "reject"] && asked["state"] == "waiting")
            #expect(asked["timeoutAt"]?.stringValue != nil)
            #expect(try await api.store.taskInstances(runId: run).first { $0.taskId == "approve" }?.worker == "scheduler:approvals")
            let path = "/api/v1/runs/\(run)/tasks/approve/decision"
            let bad: [(String?, String, Int, String)] = [
                (LiveAPI.admin, #"{"decision": "maybe"}"#, 400, "`decision` must be one of `approve`, `reject`"),
                (LiveAPI.admin, #"{"comment": "no decision"}"#, 400, "decision"),
                (LiveAPI.admin, #"{"decision": "approve", "values": {"x": 1}}"#, 400, "has no form"),
                (nil, #"{"decision": "approve"}"#, 401, "bearer token"),
                (LiveAPI.reader, #"{"decision": "approve"}"#, 403, "admin token"),
            ]
            for (token, body, status, words) in bad {
                let r = try await api.request("POST", path, token: token, body: body)
                #expect(r.status == status && r.text.contains(words), "\(body): \(r.status) \(r.text)")
            }
            #expect(try await api.request("POST", "/api/v1/runs/\(run)/tasks/prepare/decision", token: LiveAPI.admin, body: #"{"decision": "approve"}"#).status == 400)
            #expect(try await api.request("POST", "/api/v1/runs/nope/tasks/approve/decision", token: LiveAPI.admin, body: #"{"decision": "approve"}"#).status == 404)

            let statuses = try await withThrowingTaskGroup(of: Int.self) { g in
                for i in 0..<10 {
                    g.addTask { try await api.request("POST", path, token: LiveAPI.admin, body: #"{"decision": "approve", "comment": "ok \#(i)"}"#).status }
                }
                var out: [Int] = []
                for try await s in g { out.append(s) }
                return out.sorted()
            }
            #expect(statuses == [200] + Array(repeating: 409, count: 9), "\(statuses)")
            try await eventually("the run to succeed") { try await api.store.run(run).state == "success" }
            let tasks = try await api.store.taskInstances(runId: run)
            let decided = try #require(tasks.first { $0.taskId == "approve" }?.result)
            let by = try #require(decided["approved_by"]?.stringValue)
            #expect(decided["decision"] == "approve" && by.hasPrefix("config:"), "\(decided)")
            #expect(tasks.first { $0.taskId == "publish" }?.result == ["approved_by": .string(by)])
            let audit = try await api.request("GET", "/api/v1/audit?action=decide", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            #expect(audit.count == 1, "one decision, audited once: \(audit)")
            #expect(try await api.request("GET", "/api/v1/approvals").json["approvals"]?.arrayValue?.isEmpty == true)
        }
    }

    @Test("flowctl approvals list shows what waits; flowctl approvals decide … reject fails the run")
    func rejectWithFlowctl() async throws {
        try await withAPI { api in
            let run = try await waitingRun(api)
            let list = try flowctl(["approvals", "list"], api: api)
            #expect(list.status == 0 && list.output.contains(run) && list.output.contains("Publish this release?") && list.output.contains("approve|reject"),
                    "\(list.output)")
            let short = String(run.suffix(8))   // a unique part of the run id
            let bad = try flowctl(["approvals", "decide", short, "approve", "perhaps"], api: api)
            #expect(bad.status != 0 && bad.output.contains("must be one of `approve`, `reject`"), "\(bad.output)")
            let no = try flowctl(["approvals", "decide", short, "approve", "reject", "--comment", "not this week"], api: api)
            #expect(no.status == 0 && no.output.contains("decided `reject`"), "\(no.output)")
            try await eventually("the run to fail") { try await api.store.run(run).state == "failed" }
            let states = Dictionary(uniqueKeysWithValues: try await api.store.taskInstances(runId: run).map { ($0.taskId, $0) })
            #expect(states["approve"]?.state == "failed" && states["approve"]?.error?.contains("not this week") == true)
            #expect(states["publish"]?.state == "upstream_failed")
            let all = try flowctl(["approvals", "list", "--all"], api: api)
            #expect(all.output.contains("reject by config:"), "\(all.output)")
        }
    }
}
