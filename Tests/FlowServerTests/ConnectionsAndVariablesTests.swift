import FlowKit
import FlowKitTesting
import FlowServer
import Foundation
import PostgresClient
import ProcessSupport
import RedisClient
import Scheduler
import Testing

/// A flow whose tasks need a connection and variables from the store: a Swift task, a SQL task
/// on the connection, and a shell task reading a variable from its environment.
let storeNeedsFlow = Flow("store_needs") { f in
    let use = f.task("use", connections: ["warehouse"], variables: ["threshold", "api_password"]) { ctx in
        let url = try ctx.connection("warehouse")
        let password = try ctx.variable("api_password")
        ctx.log("connecting to \(url) with \(password)")
        return ["threshold": .string(try ctx.variable("threshold")), "passwordLength": .int(password.count),
                "limits": try ctx.jsonVariable("limits_json")]
    }.needs(variables: ["limits_json"])
    let query = f.sql("query", connection: "warehouse", sql: "SELECT 40 + 2 AS answer")
    f.shell("echo", script: #"echo "{\"t\": \"$FLOWKIT_VAR_THRESHOLD\"}""#).needs(variables: ["threshold"])
    use --> query
}

@Suite("Connections and variables", .serialized)
struct ConnectionsAndVariablesTests {
    /// The API, a scheduler and a worker whose environment has the shared key and nothing else:
    /// no FLOWKIT_CONN_*, no database URL.
    func withBareWorker(_ body: (LiveAPI) async throws -> Void) async throws {
        let api = try await LiveAPI(flows: [storeNeedsFlow], workerEnvironment: [SecretKeyring.variable: LiveAPI.secretKey, "PATH": "/usr/bin:/bin"])
        do { try await body(api) } catch { await api.stop(); throw error }
        await api.stop()
    }

    func runToEnd(_ api: LiveAPI) async throws -> (state: String, tasks: [String: TaskInstanceRecord], runId: String) {
        let trigger = try await api.request("POST", "/api/v1/flows/store_needs/runs", token: LiveAPI.admin, body: "{}")
        #expect(trigger.status == 201, "\(trigger.text)")
        let run = try #require(trigger.json["runId"]?.stringValue)
        try await eventually("store_needs to finish", timeout: 40) { ["success", "failed"].contains(try await api.store.run(run).state) }
        let tis = Dictionary(uniqueKeysWithValues: try await api.store.taskInstances(runId: run).map { ($0.taskId, $0) })
        return (try await api.store.run(run).state, tis, run)
    }

    @Test("a connection and variables set through the API reach tasks on a worker without FLOWKIT_CONN_* or database credentials; missing ones fail the task naming them; secrets never come back")
    func endToEnd() async throws {
        try await withBareWorker { api in
            // Before anything is set: the flow says what it needs, and the run fails naming it.
            let before = try await api.request("GET", "/api/v1/flows/store_needs")
            let needed = before.json["needs"]?["connections"]?.arrayValue ?? []
            #expect(needed.map { $0["name"] } == ["warehouse"] && needed.first?["set"] == false)
            #expect(needed.first?["tasks"] == ["query", "use"])
            #expect(before.json["needs"]?["variables"]?.arrayValue?.map { $0["name"] } == ["api_password", "limits_json", "threshold"])
            let failed = try await runToEnd(api)
            #expect(failed.state == "failed")
            let useError = failed.tasks["use"]?.error ?? ""
            #expect(useError.contains("connection `warehouse` is not set: set it with `flowctl connections set warehouse --uri URL`"), "\(useError)")
            #expect(failed.tasks["echo"]?.error?.contains("variable `threshold` is not set") == true, "\(failed.tasks["echo"]?.error ?? "")")
            // The body did not run: no "connecting" line.
            let failedLog = try await api.store.logs(runId: failed.runId, taskId: "use", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(!failedLog.contains { $0.contains("connecting to") })

            // Set them: a reader may not; an admin may. (The test server trusts loopback, so the
            // URL carries a password only to show that it never comes back.)
            var withPassword = try #require(URLComponents(string: api.databaseURL))
            withPassword.password = "pg-pass-7731"
            let warehouse = try #require(withPassword.string)
            let body = #"{"uri": "\#(warehouse)", "description": "the test warehouse"}"#
            #expect(try await api.request("PUT", "/api/v1/connections/warehouse", token: LiveAPI.reader, body: body).status == 403)
            // Set with flowctl, as a user would.
            let set = try flowctl(["connections", "set", "warehouse", "--uri", warehouse, "--description", "the test warehouse"], api: api)
            #expect(set.status == 0 && !set.output.contains("pg-pass-7731"), "\(set.output)")
            for (key, value) in [("threshold", #""0.75""#), ("api_password", #""hunter2-very-secret""#), ("limits_json", #"{"rows": 10}"#)] {
                let r = try await api.request("PUT", "/api/v1/variables/\(key)", token: LiveAPI.admin, body: #"{"value": \#(value)}"#)
                #expect(r.status == 200, "\(r.text)")
            }
            // The secret never comes back: not in the list, not in the record, not in the audit log.
            for path in ["/api/v1/connections", "/api/v1/connections/warehouse", "/api/v1/audit"] {
                let r = try await api.request("GET", path, token: LiveAPI.admin)
                #expect(r.status == 200)
                #expect(!r.text.contains("pg-pass-7731"), "\(path): \(r.text)")
            }
            #expect(try await api.request("GET", "/api/v1/connections/warehouse").json["uri"]?.stringValue?.contains(":***@127.0.0.1") == true)
            let shown = try await api.request("GET", "/api/v1/connections/warehouse")
            #expect(shown.json["type"] == "postgresql" || shown.json["type"] == "postgres", "\(shown.text)")
            #expect(shown.json["description"] == "the test warehouse")
            // Readers see a secret-looking variable masked; admins see it.
            #expect(try await api.request("GET", "/api/v1/variables/api_password", token: LiveAPI.reader).json["value"] == "***")
            #expect(try await api.request("GET", "/api/v1/variables/api_password", token: LiveAPI.admin).json["value"] == "hunter2-very-secret")
            #expect(try await api.request("GET", "/api/v1/variables/threshold", token: LiveAPI.reader).json["value"] == "0.75")
            // Stored sealed: the database holds neither the URL nor the value in clear.
            let raw = try await PGConnection(api.databaseURL, label: "t").run { s in try s.query("SELECT string_agg(secret, ' ') AS s FROM (SELECT secret FROM connections UNION ALL SELECT secret FROM variables) x").first?.stringOrNull("s") ?? "" }
            #expect(!raw.contains("hunter2") && !raw.contains("pg-pass-7731") && raw.hasPrefix("fk1:"))

            let flow = try await api.request("GET", "/api/v1/flows/store_needs")
            #expect(flow.json["needs"]?["connections"]?.arrayValue?.first?["set"] == true)

            let ok = try await runToEnd(api)
            #expect(ok.state == "success", "\(ok.tasks.mapValues { $0.error ?? "" })")
            #expect(ok.tasks["use"]?.result == ["threshold": "0.75", "passwordLength": 19, "limits": ["rows": 10]])
            #expect(ok.tasks["query"]?.result?["rows"] == [["42"]] || ok.tasks["query"]?.result?["rows"] == [[42]], "\(ok.tasks["query"]?.result ?? .null)")
            #expect(ok.tasks["echo"]?.result == ["t": "0.75"])
            // The connection's URL and the secret-looking variable are masked in the task's log.
            let log = try await api.store.logs(runId: ok.runId, taskId: "use", tryNumber: 1, after: 0).lines.map(\.line)
            let line = try #require(log.first { $0.contains("connecting to") })
            #expect(!line.contains("hunter2") && !line.contains("pg-pass-7731") && line.contains("***"), "\(line)")

            // Every write is in the audit log with its actor, without the secret.
            let audit = try await api.request("GET", "/api/v1/audit?limit=50", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            #expect(audit.contains { $0["action"] == "connection_set" && $0["target"] == "warehouse" && $0["actor"]?.stringValue?.hasPrefix("config:admin") == true })
            #expect(audit.filter { $0["action"] == "variable_set" }.count == 3)

            // Deleted: the next run fails again, naming it.
            #expect(try await api.request("DELETE", "/api/v1/connections/warehouse", token: LiveAPI.admin).status == 200)
            #expect(try await api.request("GET", "/api/v1/connections/warehouse").status == 404)
            #expect(try await api.request("DELETE", "/api/v1/connections/warehouse", token: LiveAPI.admin).status == 404)
            let again = try await runToEnd(api)
            #expect(again.state == "failed" && again.tasks["use"]?.error?.contains("connection `warehouse` is not set") == true)
        }
    }

    @Test("bad writes get a 400 naming the field; a worker's own FLOWKIT_CONN_* wins over the store's")
    func badInputAndOverride() async throws {
        let api = try await LiveAPI(flows: [storeNeedsFlow], workerEnvironment: [
            SecretKeyring.variable: LiveAPI.secretKey, "PATH": "/usr/bin:/bin",
            "FLOWKIT_VAR_THRESHOLD": "from-the-worker", "FLOWKIT_VAR_API_PASSWORD": "worker-pw", "FLOWKIT_VAR_LIMITS_JSON": "[1]",
        ])
        do {
            for (path, body, expect) in [
                ("/api/v1/connections/warehouse", #"{}"#, "`uri`"),
                ("/api/v1/connections/warehouse", #"{"uri": 5}"#, "`uri`"),
                ("/api/v1/connections/bad%20name", #"{"uri": "postgresql://x"}"#, "connection name `bad name` is invalid"),
                ("/api/v1/variables/threshold", #"{"description": "x"}"#, "`value`"),
                ("/api/v1/variables/threshold", #"{"value": "1", "description": 3}"#, "`description`"),
                ("/api/v1/connections/warehouse", #"{"uri": "postgresql://x", "description": "\#(String(repeating: "d", count: 1001))"}"#, "`description`"),
            ] {
                let r = try await api.request("PUT", path, token: LiveAPI.admin, body: body)
                #expect(r.status == 400 && r.json["message"]?.stringValue?.contains(expect) == true, "\(path) \(body): \(r.status) \(r.text)")
            }
            #expect(try await api.request("PUT", "/api/v1/variables/threshold", token: LiveAPI.admin, body: "not json").status == 400)
            _ = try await api.request("PUT", "/api/v1/connections/warehouse", token: LiveAPI.admin, body: #"{"uri": "\#(api.databaseURL)"}"#)
            _ = try await api.request("PUT", "/api/v1/variables/threshold", token: LiveAPI.admin, body: #"{"value": "from-the-store"}"#)
            let r = try await runToEnd(api)
            #expect(r.state == "success", "\(r.tasks.mapValues { $0.error ?? "" })")
            #expect(r.tasks["use"]?.result?["threshold"] == "from-the-worker")
            #expect(r.tasks["use"]?.result?["limits"] == [1])
        } catch { await api.stop(); throw error }
        await api.stop()
    }

    @Test("twenty concurrent writers: every write lands once, in the audit log, and the value read back is one of them")
    func concurrentWriters() async throws {
        try await withBareWorker { api in
            let statuses = try await withThrowingTaskGroup(of: Int.self) { g in
                for i in 0..<20 {
                    g.addTask {
                        let path = i % 2 == 0 ? "/api/v1/variables/shared" : "/api/v1/connections/shared"
                        let body = i % 2 == 0 ? #"{"value": "v\#(i)"}"# : #"{"uri": "postgresql://u:p\#(i)@db/x"}"#
                        return try await api.request("PUT", path, token: LiveAPI.admin, body: body).status
                    }
                    g.addTask { try await api.request("PUT", "/api/v1/variables/own_\(i)", token: LiveAPI.admin, body: #"{"value": "\#(i)"}"#).status }
                }
                return try await g.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.count == 40 && statuses.allSatisfy { $0 == 200 }, "\(statuses)")
            let vars = try await api.request("GET", "/api/v1/variables", token: LiveAPI.admin).json["variables"]?.arrayValue ?? []
            #expect(vars.count == 21)
            let shared = try #require(vars.first { $0["key"] == "shared" }?["value"]?.stringValue)
            #expect((0..<20).filter { $0 % 2 == 0 }.map { "v\($0)" }.contains(shared))
            for i in 0..<20 { #expect(vars.contains { $0["key"]?.stringValue == "own_\(i)" && $0["value"]?.stringValue == "\(i)" }) }
            let uri = try #require(try await api.request("GET", "/api/v1/connections/shared").json["uri"]?.stringValue)
            #expect(uri.hasPrefix("postgresql://u:***@db/x"), "\(uri)")
            let audit = try await api.request("GET", "/api/v1/audit?limit=100", token: LiveAPI.admin).json["entries"]?.arrayValue ?? []
            #expect(audit.filter { $0["action"] == "variable_set" }.count == 30)
            #expect(audit.filter { $0["action"] == "connection_set" }.count == 10)
        }
    }

    @Test("flowctl connections, variables and secret-key: set, list, get, delete; rotation seals everything with the new key and the old key can go")
    func cli() async throws {
        try await withBareWorker { api in
            var r = try flowctl(["connections", "set", "warehouse", "--uri", "postgresql://loader:s3cr3t-pw@db.internal:5432/dw", "--description", "dw"], api: api)
            #expect(r.status == 0 && r.output.contains("connection warehouse set: postgresql://loader:***@db.internal:5432/dw"), "\(r.output)")
            r = try flowctl(["connections", "list"], api: api)
            #expect(r.status == 0 && r.output.contains("warehouse") && r.output.contains("db.internal") && !r.output.contains("s3cr3t"), "\(r.output)")
            r = try flowctl(["connections", "set", "warehouse", "--uri", "postgresql://x"], api: api, token: LiveAPI.reader)
            #expect(r.status != 0 && r.output.contains("admin"), "\(r.output)")
            r = try flowctl(["variables", "set", "limits", #"{"rows": 10}"#, "--json"], api: api)
            #expect(r.status == 0, "\(r.output)")
            r = try flowctl(["variables", "set", "broken", "{", "--json"], api: api)
            #expect(r.status == 2 && r.output.contains("not JSON"), "\(r.output)")
            r = try flowctl(["variables", "get", "limits"], api: api)
            #expect(r.status == 0 && r.output.trimmingCharacters(in: .whitespacesAndNewlines) == #"{"rows": 10}"#, "\(r.output)")
            r = try flowctl(["variables", "list"], api: api)
            #expect(r.status == 0 && r.output.contains("limits"), "\(r.output)")
            r = try flowctl(["flows", "show", "store_needs"], api: api)
            #expect(r.output.contains("connections needed:") && r.output.contains("warehouse  set"), "\(r.output)")
            #expect(r.output.contains("threshold  NOT SET in the store"), "\(r.output)")

            // Rotation: NEW,OLD — everything is sealed again with NEW, and then opens with NEW alone.
            let newKey = SecretKeyring.newKey()
            let both = try SecretKeyring("\(newKey),\(LiveAPI.secretKey)")
            let rotate = try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWKIT_DATABASE_URL=\(api.databaseURL)",
                                                            "\(SecretKeyring.variable)=\(newKey),\(LiveAPI.secretKey)", try TestServers.flowctlPath(),
                                                            "secret-key", "rotate"])
            #expect(rotate.status == 0 && rotate.output.contains("1 connection, 1 variable"), "\(rotate.output)")
            let ids = try await PGConnection(api.databaseURL, label: "t").run { s in try s.query("SELECT key_id FROM connections UNION ALL SELECT key_id FROM variables").all.map { try $0.string("key_id") } }
            #expect(ids == [both.primaryKeyId, both.primaryKeyId])
            let onlyNew = try SecretKeyring(newKey)
            #expect(try await api.store.variables(keyring: onlyNew).map(\.value) == [#"{"rows": 10}"#])
            await #expect(throws: SecretError.self) { try await api.store.variables(keyring: try SecretKeyring(LiveAPI.secretKey)) }
            let audit = try await api.store.auditLog(action: "connection_reseal")
            #expect(audit.count == 1 && audit[0].actor.hasPrefix("flowctl@"))

            r = try flowctl(["connections", "delete", "warehouse"], api: api)
            #expect(r.status == 0)
            r = try flowctl(["connections", "get", "warehouse"], api: api)
            #expect(r.status != 0 && r.output.contains("no connection named `warehouse`"), "\(r.output)")
            let made = try ProcessRunner.runToCompletion([try TestServers.flowctlPath(), "secret-key", "new"])
            #expect(made.status == 0 && (try? SecretKeyring(made.output.trimmingCharacters(in: .whitespacesAndNewlines))) != nil)
        }
    }

    @Test("an API without FLOWKIT_SECRET_KEY answers 503 naming it, and still lists connections")
    func noKey() async throws {
        try await withAPI(configure: { $0.secretKeyring = .success(nil) }, flows: [storeNeedsFlow]) { api in
            let r = try await api.request("PUT", "/api/v1/connections/warehouse", token: LiveAPI.admin, body: #"{"uri": "postgresql://x"}"#)
            #expect(r.status == 503 && r.json["error"] == "secret_key_unset" && r.text.contains("FLOWKIT_SECRET_KEY"), "\(r.text)")
            #expect(try await api.request("GET", "/api/v1/connections").status == 200)
            #expect(try await api.request("GET", "/api/v1/variables").status == 503)
        }
    }
}

@Suite("Where flows are declared, through the API", .serialized)
struct SourceLocationAPITests {
    @Test("GET /api/v1/flows/{id} says where the flow and each task are declared; the same flow declared elsewhere keeps its version and gets the new positions")
    func source() async throws {
        try await withAPI(flows: [storeNeedsFlow]) { api in
            let f = try await api.request("GET", "/api/v1/flows/store_needs")
            let at = try #require(f.json["source"]?["flow"]?.stringValue)
            #expect(at.hasPrefix("FlowServerTests/ConnectionsAndVariablesTests.swift:"), "\(f.text)")
            #expect(f.json["source"]?["tasks"]?["use"]?.stringValue?.hasPrefix("FlowServerTests/ConnectionsAndVariablesTests.swift:") == true)
            #expect(f.json["definition"]?.compactJSON.contains("ConnectionsAndVariablesTests") == false)
            let version = f.json["version"]
            // The same flow, declared on another line: no new version, new positions.
            let moved = Flow("store_needs") { f in
                let use = f.task("use", connections: ["warehouse"], variables: ["threshold", "api_password"]) { ctx in
                    let url = try ctx.connection("warehouse")
                    let password = try ctx.variable("api_password")
                    ctx.log("connecting to \(url) with \(password)")
                    return ["threshold": .string(try ctx.variable("threshold")), "passwordLength": .int(password.count),
                            "limits": try ctx.jsonVariable("limits_json")]
                }.needs(variables: ["limits_json"])
                let query = f.sql("query", connection: "warehouse", sql: "SELECT 40 + 2 AS answer")
                f.shell("echo", script: #"echo "{\"t\": \"$FLOWKIT_VAR_THRESHOLD\"}""#).needs(variables: ["threshold"])
                use --> query
            }
            #expect(try FlowDefinition(moved).contentHash() == FlowDefinition(storeNeedsFlow).contentHash())
            let added = try await api.store.registerFlows([moved], now: Date())
            #expect(added.isEmpty)
            let after = try await api.request("GET", "/api/v1/flows/store_needs")
            #expect(after.json["version"] == version)
            #expect(after.json["source"]?["flow"]?.stringValue == moved.declaredAt && moved.declaredAt != at, "\(after.json["source"] ?? .null)")
            let show = try flowctl(["flows", "show", "store_needs"], api: api)
            #expect(show.output.contains("declared at: \(moved.declaredAt!)") && show.output.contains("at \(moved.task("query")!.declaredAt!)"), "\(show.output)")
        }
    }
}
