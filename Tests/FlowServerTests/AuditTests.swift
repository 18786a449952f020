import FlowJSON
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import PostgresClient
import Testing
@testable import FlowServer
import Scheduler

@Suite("Audit log", .serialized)
struct AuditTests {
    @Test("every write names the token that made it; many writers at once get one entry per write; only admins read the log")
    func everyWriteNamesItsToken() async throws {
        try await withAPI { api in
            // A named token of `flowctl tokens`, besides the configured ones.
            let t = APITokens.generate()
            _ = try await api.store.createAPIToken(id: t.id, name: "ops-bot", role: "admin", salt: t.salt, secretHash: t.secretHash,
                                                   expiresAt: nil, now: Date())
            let run = try #require(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: t.text, body: #"{"conf": {"seconds": 30}}"#)
                .json["runId"]?.stringValue)
            #expect(try await api.request("POST", "/api/v1/runs/\(run)/cancel", token: LiveAPI.admin).status == 200)
            let failing = try #require(try await api.request("POST", "/api/v1/flows/example_retry/runs", token: LiveAPI.admin,
                                                             body: #"{"conf": {"fail_tries": 9}}"#).json["runId"]?.stringValue)
            try await eventually("the failing run to fail", timeout: 30) { try await api.store.run(failing).state == "failed" }
            #expect(try await api.request("POST", "/api/v1/runs/\(failing)/tasks/flaky/mark", token: t.text, body: #"{"state": "success"}"#).status == 200)
            #expect(try await api.request("POST", "/api/v1/runs/\(failing)/clear", token: LiveAPI.admin, body: #"{"taskIds": ["flaky"]}"#).status == 200)
            #expect(try await api.request("POST", "/api/v1/flows/example_sleep/pause", token: LiveAPI.admin).status == 200)
            #expect(try await api.request("POST", "/api/v1/flows/example_sleep/unpause", token: LiveAPI.admin).status == 200)
            #expect(try await api.request("PUT", "/api/v1/pools/audit_pool", token: t.text, body: #"{"slots": 3}"#).status == 200)
            #expect(try await api.request("DELETE", "/api/v1/pools/audit_pool", token: t.text).status == 200)
            #expect(try await api.request("POST", "/api/v1/assets/events", token: LiveAPI.events, body: #"{"uri": "demo://audit"}"#).status == 201)
            // A refused write is not a write: no entry, also when the refusal comes inside the write's transaction.
            #expect(try await api.request("POST", "/api/v1/flows/nope/runs", token: LiveAPI.admin).status == 404)
            #expect(try await api.request("POST", "/api/v1/runs/\(run)/cancel", token: LiveAPI.admin).status == 409)
            #expect(try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": "soon"}}"#).status == 400)

            let entries = try await api.request("GET", "/api/v1/audit", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            let seen = entries.reversed().map { "\($0["actor"]?.stringValue ?? "") \($0["action"]?.stringValue ?? "") \($0["target"]?.stringValue ?? "")" }
            #expect(seen == [
                "token:ops-bot trigger \(run)", "config:admin#1 cancel \(run)", "config:admin#1 trigger \(failing)",
                "token:ops-bot mark \(failing)", "config:admin#1 clear \(failing)",
                "config:admin#1 pause example_sleep", "config:admin#1 unpause example_sleep", "token:ops-bot pool_set audit_pool",
                "token:ops-bot pool_delete audit_pool", "config:events#3 asset_event demo://audit",
            ])
            #expect(entries.last?["detail"]?["conf"] == ["seconds": 30])
            #expect(entries.first { $0["action"] == "mark" }?["detail"] == ["taskId": "flaky", "state": "success"])
            #expect(try await api.request("GET", "/api/v1/audit", token: LiveAPI.reader).status == 403)
            // The task history names who changed a task, not only that the API did.
            let flaky = try await PGConnection(api.databaseURL, label: "t").run { s in
                try s.query("SELECT h.source FROM task_history h JOIN runs r ON r.id = h.run_pk WHERE r.run_id = $1 AND h.task_id = 'flaky'",
                            [failing]).all.compactMap { try $0.stringOrNull("source") }
            }
            #expect(flaky.contains("api:token:ops-bot") && flaky.contains("api:config:admin#1"), "\(flaky)")
            let mine = try await api.request("GET", "/api/v1/audit?actor=token:ops-bot&action=pool_set", token: LiveAPI.admin).json["entries"]?.arrayValue
            #expect(mine?.count == 1)

            // Concurrent writers: 20 triggers from two tokens at once, 20 runs, 20 entries.
            try await withThrowingTaskGroup(of: Int.self) { g in
                for i in 0..<20 {
                    g.addTask { try await api.request("POST", "/api/v1/flows/example_retry/runs", token: i % 2 == 0 ? LiveAPI.admin : t.text).status }
                }
                for try await status in g { #expect(status == 201) }
            }
            let triggers = try await api.request("GET", "/api/v1/audit?action=trigger&limit=100", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            #expect(triggers.count == 22)
            #expect(triggers.filter { $0["actor"] == "token:ops-bot" }.count == 11)
        }
    }
}
