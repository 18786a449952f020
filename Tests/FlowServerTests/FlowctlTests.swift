import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Scheduler
import ProcessSupport
import Testing

/// Runs the real `flowctl` binary against a live API.
func flowctl(_ args: [String], api: LiveAPI?, token: String? = LiveAPI.admin) throws -> (status: Int32, output: String) {
    var argv = ["/usr/bin/env"]
    argv.append("FLOWKIT_API_URL=\(api?.base ?? "http://127.0.0.1:9")")
    if let token { argv.append("FLOWKIT_API_TOKEN=\(token)") }
    argv.append(try TestServers.flowctlPath())
    return try ProcessRunner.runToCompletion(argv + args)
}

@Suite("flowctl", .serialized)
struct FlowctlTests {
    @Test("trigger --wait exits 0 when the run succeeds and shows each task's progress")
    func waitSuccess() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let (status, out) = try flowctl(["trigger", "example_retry", "--wait"], api: api)
            #expect(status == 0, "\(out)")
            #expect(out.contains("up_for_retry"))
            #expect(out.contains("flaky"))
            #expect(out.contains(": success in"))
            // The retry's time is said, with its zone and how far off it is.
            #expect(out.range(of: #"retrying at \d\d:\d\d:\d\d UTC \(in \d+s\)"#, options: .regularExpression) != nil, "\(out)")
        }
    }

    @Test("trigger --wait --timeout stops waiting with exit 3, names the run and how to follow it, and leaves the run running")
    func waitTimeout() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let (status, out) = try flowctl(["trigger", "example_sleep", "--conf", #"{"seconds": 30}"#, "--wait", "--timeout", "2s"], api: api)
            #expect(status == 3, "\(out)")
            let runId = try #require(out.split(separator: "\n").first { $0.hasPrefix("triggered ") }.map { String($0.split(separator: " ").last!) })
            #expect(out.contains("stopped waiting after 2s; run \(runId) goes on untouched: follow it with `flowctl runs show \(runId)`"), "\(out)")
            #expect(try await api.request("GET", "/api/v1/runs/\(runId)").json["state"] == "running")
            #expect(try flowctl(["trigger", "example_sleep", "--timeout", "2s"], api: api).status == 2)
        }
    }

    @Test("trigger sends an Idempotency-Key and retries a 503 and a dropped connection with the same key, so the API makes one run")
    func triggerRetriesWithOneKey() async throws {
        // A stand-in API: 503, then a connection closed without an answer, then the run.
        let port = try freePort()
        let script = """
        import http.server, json, sys
        keys = []
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get('Content-Length') or 0))
                keys.append(self.headers.get('Idempotency-Key'))
                print(self.headers.get('Idempotency-Key'), flush=True)
                if len(keys) == 1:
                    body = json.dumps({"error": "database_unavailable", "message": "busy"}).encode()
                    self.send_response(503); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
                elif len(keys) == 2:
                    self.close_connection = True; self.connection.shutdown(2)
                else:
                    body = json.dumps({"id": 1, "runId": "manual__x__1", "flowId": "anything", "flowVersion": 1, "triggerKind": "manual", "state": "queued", "conf": {}, "logicalDate": "2026-12-01T00:00:00.000Z", "dataIntervalStart": "2026-12-01T00:00:00.000Z", "dataIntervalEnd": "2026-12-01T00:00:00.000Z", "createdAt": "2026-12-01T00:00:00.000Z"}).encode()
                    self.send_response(201 if len(keys) == 3 else 200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        http.server.HTTPServer(('127.0.0.1', \(port)), H).serve_forever()
        """
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-fakeapi-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try script.write(to: dir.appendingPathComponent("api.py"), atomically: true, encoding: .utf8)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = [dir.appendingPathComponent("api.py").path]
        let out = Pipe()
        server.standardOutput = out
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { kill(server.processIdentifier, SIGKILL) }
        try await eventually("the stand-in API up") { (try? ProcessRunner.runToCompletion(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/"]))?.status == 0 }
        let r = try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWKIT_API_URL=http://127.0.0.1:\(port)", "FLOWKIT_API_TOKEN=x",
                                                   try TestServers.flowctlPath(), "trigger", "anything"])
        #expect(r.status == 0 && r.output.contains("manual__x__1"), "\(r.output)")
        #expect(r.output.contains("trying again") && r.output.contains("same idempotency key"), "\(r.output)")
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        let keys = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        #expect(keys.count == 3 && Set(keys).count == 1 && keys[0].hasPrefix("flowctl-"), "\(keys)")
    }

    @Test("trigger --wait exits 1 when the run fails")
    func waitFailure() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let (status, out) = try flowctl(["trigger", "example_retry", "--conf", #"{"fail_tries": 5}"#, "--wait"], api: api)
            #expect(status == 1, "\(out)")
            #expect(out.contains(": failed in"))
        }
    }

    @Test("tasks mark: a failed run's task marked success ends the run successful")
    func markSuccess() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let (status, out) = try flowctl(["trigger", "example_retry", "--conf", #"{"fail_tries": 5}"#, "--wait"], api: api)
            #expect(status == 1, "\(out)")
            let runId = try #require(out.split(separator: "\n").first { $0.hasPrefix("triggered") }?.split(separator: " ").last.map(String.init))
            let marked = try flowctl(["tasks", "mark", runId, "flaky", "--state", "success"], api: api)
            #expect(marked.status == 0, "\(marked.output)")
            #expect(marked.output.contains("task flaky marked success; run success"))
            #expect(try flowctl(["tasks", "mark", runId, "flaky", "--state", "skipped"], api: api).status == 2)
            let again = try await api.request("POST", "/api/v1/runs/\(runId)/tasks/flaky/mark", token: LiveAPI.admin, body: #"{"state": "success"}"#)
            #expect(again.status == 409)
            let bad = try await api.request("POST", "/api/v1/runs/\(runId)/tasks/flaky/mark", token: LiveAPI.admin, body: #"{"state": "done"}"#)
            #expect(bad.status == 400 && bad.json["error"] == "bad_request")
        }
    }

    @Test("newcomer paths: --version, a local standalone's token found on its own, log levels checked, logs of a try that does not exist, JSON as the API writes it")
    func newcomer() async throws {
        try await withAPI(openReads: false) { (api: LiveAPI) async throws in
            let version = try flowctl(["--version"], api: api)
            #expect(version.status == 0 && version.output.hasPrefix("flowctl 0."), "\(version.output)")
            // No FLOWKIT_API_TOKEN: the admin token a local standalone keeps in FLOWKIT_HOME is used.
            let home = FileManager.default.temporaryDirectory.appendingPathComponent("fk-home-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: home) }
            try LiveAPI.admin.write(to: home.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
            let env = ["/usr/bin/env", "FLOWKIT_API_URL=\(api.base)", "FLOWKIT_HOME=\(home.path)", try TestServers.flowctlPath()]
            let run = try ProcessRunner.runToCompletion(env + ["trigger", "example_retry", "--wait"])
            #expect(run.status == 0, "\(run.output)")
            let runId = try #require(run.output.split(separator: "\n").first { $0.hasPrefix("triggered") }?.split(separator: " ").last.map(String.init))
            // A log level that does not exist is refused, naming the valid ones.
            let level = try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWKIT_LOG_LEVEL=verbose", try TestServers.flowctlPath(), "flows", "list"])
            #expect(level.status == 2 && level.output.contains("FLOWKIT_LOG_LEVEL: `verbose` is not a log level; use one of trace, debug"), "\(level.output)")
            // A try that does not exist, a mistyped task: errors, not empty output.
            let missing = try flowctl(["logs", runId, "flaky", "--try", "9"], api: api)
            #expect(missing.status == 1 && missing.output.contains("has no try 9: its tries are 1–2"), "\(missing.output)")
            let typo = try flowctl(["logs", runId, "flakey"], api: api)
            #expect(typo.status == 1 && typo.output.contains("did you mean `flaky`?"), "\(typo.output)")
            // --json has the API's shape and does not escape slashes.
            let logs = try JSONValue.parse(try flowctl(["logs", runId, "flaky", "--try", "1", "--json"], api: api).output)
            #expect(logs["tryNumber"] == 1 && (logs["lines"]?.arrayValue?.isEmpty == false) && logs["nextOffset"]?.intValue != nil)
            let flow = try flowctl(["flows", "show", "catalunya_data_pipeline", "--json"], api: api)
            #expect(flow.output.contains("Europe/Madrid") && !flow.output.contains("Europe\\/Madrid"))
        }
    }

    @Test("dates as people type them are read in the flow's zone and said so; a bad one names its flag; times shown say their zone; an inactive flow has no next run")
    func datesAndZones() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            // catalunya_data_pipeline runs in Europe/Madrid: 2026-11-01 is midnight CET, +01:00.
            let t = try flowctl(["trigger", "catalunya_data_pipeline", "--logical-date", "2026-11-01"], api: api)
            #expect(t.status == 0 && t.output.contains("--logical-date 2026-11-01: read as 2026-11-01T00:00:00+01:00 (midnight in Europe/Madrid, the flow's zone)"),
                    "\(t.output)")
            let runId = try #require(t.output.split(separator: "\n").last.map(String.init))
            #expect(try await api.store.run(runId).logicalDate == Instant.parse("2026-10-31T23:00:00Z"))
            // lakehouse_end_to_end is daily at midnight in Europe/Madrid, across the spring DST change.
            let b = try flowctl(["backfill", "lakehouse_end_to_end", "--from", "2026-03-28", "--to", "2026-03-30 00:00"], api: api)
            #expect(b.status == 0 && b.output.contains("3 runs to create") && b.output.contains("--to 2026-03-30 00:00: read as 2026-03-30T00:00:00+02:00"),
                    "\(b.output)")
            #expect(b.output.contains("2026-03-30 00:00:00 +02:00") && b.output.contains("2026-03-28 00:00:00 +01:00"),
                    "logical dates are shown in the flow's zone, with it: \(b.output)")
            let id = try #require(b.output.firstMatch(of: /backfill (\d+) of/).map { String($0.1) })
            _ = try flowctl(["backfill", "pause", id], api: api)
            let again = try flowctl(["backfill", "lakehouse_end_to_end", "--from", "2026-03-28", "--to", "2026-03-30"], api: api)
            #expect(again.status == 1 && again.output.contains("backfill \(id) of `lakehouse_end_to_end` is paused over an overlapping range"), "\(again.output)")
            _ = try flowctl(["backfill", "cancel", id], api: api)
            let bad = try flowctl(["backfill", "lakehouse_end_to_end", "--from", "yesterday", "--to", "2026-03-30"], api: api)
            #expect(bad.status == 2 && bad.output.contains("--from `yesterday` is not a date or time") && !bad.output.contains("from must"), "\(bad.output)")
            let badDay = try flowctl(["trigger", "catalunya_data_pipeline", "--logical-date", "2026-13-01"], api: api)
            #expect(badDay.status == 2 && badDay.output.contains("--logical-date `2026-13-01` is not a date or time") && !badDay.output.contains("logicalDate"),
                    "\(badDay.output)")

            // A flow gone from the deployed code: no running scheduler carries it, the leader deactivates it.
            try await api.store.registerFlows([Flow("gone_flow", schedule: .cron("0 3 * * *")) { f in f.task("t") { _ in nil } }], now: Date())
            try await eventually("gone_flow deactivated", timeout: 20) { try await api.store.flow("gone_flow", withDefinition: false).isActive == false }
            let list = try flowctl(["flows", "list"], api: api).output
            func row(_ id: String) -> String { list.split(separator: "\n").first { $0.hasPrefix(id + " ") }.map(String.init) ?? "" }
            #expect(row("catalunya_data_pipeline").range(of: #"\d{4}-\d\d-\d\d \d\d:00:00 \+0[12]:00"#, options: .regularExpression) != nil, "\(list)")
            #expect(row("example_hourly").range(of: #"\d{4}-\d\d-\d\d \d\d:00:00 UTC"#, options: .regularExpression) != nil, "\(list)")
            #expect(!row("gone_flow").isEmpty && row("gone_flow").range(of: #"\d{4}-"#, options: .regularExpression) == nil, "\(list)")
            #expect(try await api.request("GET", "/api/v1/flows/gone_flow").json["nextRunAt"] == nil)
        }
    }

    @Test("a trigger of a paused flow says so at once; a backfill's dry run says what it would make, re-run and skip, and why; --reprocess failed re-runs the failed run")
    func pausedAndBackfill() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            _ = try flowctl(["flows", "pause", "example_sleep"], api: api)
            let paused = try flowctl(["trigger", "example_sleep", "--conf", #"{"seconds": 0}"#], api: api)
            #expect(paused.status == 0 && paused.output.contains("flow example_sleep is paused: run"), "\(paused.output)")
            let range = ["--from", "2026-11-01T00:00:00Z", "--to", "2026-11-01T02:00:00Z"]
            let first = try flowctl(["backfill", "example_hourly", "--wait"] + range, api: api)
            #expect(first.status == 0 && first.output.contains("3 runs to create") && first.output.contains("completed: 3/3 ticks done; runs: 3 success"),
                    "\(first.output)")
            let again = try flowctl(["backfill", "example_hourly", "--dry-run"] + range, api: api)
            #expect(again.output.contains("would: create 0 runs, re-run 0, skip 3 ticks") && again.output.contains("its run succeeded (reprocess: all re-runs it)"),
                    "\(again.output)")
            // One of them fails (marked by hand); --reprocess failed runs it again, and only it.
            let runs = try await api.request("GET", "/api/v1/runs?flow_id=example_hourly").json["runs"]?.arrayValue ?? []
            let victim = try #require(runs.first?["runId"]?.stringValue)
            #expect(try await api.request("POST", "/api/v1/runs/\(victim)/tasks/tick/mark", token: LiveAPI.admin, body: #"{"state": "failed"}"#).json["state"] == "failed")
            let plan = try flowctl(["backfill", "example_hourly", "--dry-run", "--reprocess", "failed"] + range, api: api)
            #expect(plan.output.contains("would: create 0 runs, re-run 1, skip 2 ticks") && plan.output.contains("failed 1, all 3"), "\(plan.output)")
            let rerun = try flowctl(["backfill", "example_hourly", "--reprocess", "failed", "--wait"] + range, api: api)
            #expect(rerun.status == 0 && rerun.output.contains("0 runs to create, 1 to re-run, 2 ticks skipped"), "\(rerun.output)")
            #expect(try await api.request("GET", "/api/v1/runs/\(victim)").json["state"] == "success")
            let list = try flowctl(["backfill", "list", "--flow", "example_hourly"], api: api)
            #expect(list.output.split(separator: "\n").filter { $0.contains("completed") }.count == 2, "\(list.output)")
            let bad = try flowctl(["backfill", "example_hourly", "--reprocess", "some"] + range, api: api)
            #expect(bad.status == 2 && bad.output.contains("--reprocess must be none, failed or all"), "\(bad.output)")
        }
    }

    @Test("usage errors exit 2: bad --conf, a missing argument, conf of the wrong type")
    func usageErrors() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            #expect(try flowctl(["trigger", "example_sleep", "--conf", "not json"], api: api).status == 2)
            #expect(try flowctl(["trigger"], api: api).status == 2)
            let typed = try flowctl(["trigger", "example_sleep", "--conf", #"{"seconds": "ten"}"#], api: api)
            #expect(typed.status == 2)
            #expect(typed.output.contains("param `seconds` must be of type number"))
        }
    }

    @Test("an unknown flow is one clear line naming the nearest flow")
    func unknownFlow() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let (status, out) = try flowctl(["trigger", "catalunya_pipeline"], api: api)
            #expect(status == 1)
            #expect(out.contains("did you mean `catalunya_data_pipeline`?"))
        }
    }

    @Test("an unreachable server gives one line: the URL, what failed, what to start")
    func unreachable() throws {
        let (status, out) = try flowctl(["flows", "list"], api: nil)
        #expect(status == 1)
        #expect(out.contains("cannot reach the FlowKit API at http://127.0.0.1:9"))
        #expect(out.contains("flowctl standalone"))
        #expect(out.split(separator: "\n").count == 1)
    }

    @Test("runs list and show, flows list and show, logs, all with --json too")
    func readCommands() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let run = try flowctl(["trigger", "example_sleep", "--conf", #"{"seconds": 0}"#, "--wait"], api: api)
            #expect(run.status == 0)
            let list = try flowctl(["runs", "list", "--json"], api: api)
            let runs = try JSONValue.parse(list.output)["runs"]?.arrayValue ?? []
            let id = try #require(runs.first?["runId"]?.stringValue)
            #expect(try flowctl(["runs", "show", id], api: api).output.contains("sleep"))
            #expect(try flowctl(["flows", "list"], api: api).output.contains("catalunya_data_pipeline"))
            #expect(try flowctl(["flows", "show", "catalunya_data_pipeline"], api: api).output.contains("quality_checks"))
            #expect(try flowctl(["logs", id, "sleep"], api: api).output.contains("slept 0"))
        }
    }

    @Test("example_mapping through flowctl and the API: the total, instances as task[index] in runs show, the tasks list and logs")
    func mapping() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let run = try flowctl(["trigger", "example_mapping", "--conf", #"{"items": [1,2,3,4,5,6,7,8,9,10,11,12]}"#, "--wait"], api: api)
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains(#"{"count":12,"sum":156}"#))
            let list = try JSONValue.parse(try flowctl(["runs", "list", "--json"], api: api).output)["runs"]?.arrayValue ?? []
            let id = try #require(list.first?["runId"]?.stringValue)
            let show = try flowctl(["runs", "show", id], api: api).output
            #expect(show.contains("double[9]") && !show.contains("double[10]") && show.contains("2 more (success 12)"))
            #expect(try flowctl(["runs", "show", id, "--instances"], api: api).output.contains("double[11]"))
            let tasks = try JSONValue.parse(try flowctl(["runs", "show", id, "--json"], api: api).output)["tasks"]?.arrayValue ?? []
            #expect(tasks.map { $0["taskId"]?.stringValue ?? "" } == ["make_list", "double"] + (0..<12).map { "double[\($0)]" } + ["total"])
            #expect(tasks[1]["mapLength"] == 12 && tasks[5]["mapIndex"] == 3 && tasks[5]["mapParent"] == "double" && tasks[5]["result"] == 8)
            let logs = try flowctl(["logs", id, "double[3]", "--json"], api: api)
            #expect(logs.status == 0, "\(logs.output)")
            #expect(try JSONValue.parse(logs.output)["tryNumber"] == 1)
            let missing = try flowctl(["logs", id, "double[12]"], api: api)
            #expect(missing.status == 1 && missing.output.contains("double[12]"), "\(missing.output)")
        }
    }

    @Test("pools: set, list, resize and delete through flowctl and the API; bad names and slots are usage errors; a used pool cannot go")
    func pools() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let made = try flowctl(["pools", "set", "warehouse", "--slots", "4", "--description", "the warehouse"], api: api)
            #expect(made.status == 0 && made.output.contains("pool warehouse: 4 slots, 0 used, 0 waiting"), "\(made.output)")
            #expect(try flowctl(["pools", "set", "warehouse", "--slots", "6"], api: api).status == 0)
            let list = try JSONValue.parse(try flowctl(["pools", "list", "--json"], api: api).output)["pools"]?.arrayValue ?? []
            let w = try #require(list.first { $0["name"] == "warehouse" })
            #expect(w["slots"] == 6 && w["description"] == "the warehouse" && w["usedSlots"] == 0)
            #expect(list.contains { $0["name"] == "example_pool" && $0["slots"] == 2 })
            #expect(try flowctl(["pools", "list"], api: api).output.contains("warehouse"))
            let bad = try flowctl(["pools", "set", "no good", "--slots", "1"], api: api)
            #expect(bad.status == 2 && bad.output.contains("pool name `no good` is invalid"), "\(bad.output)")
            #expect(try flowctl(["pools", "set", "x", "--slots", "-1"], api: api).status == 2)
            let used = try flowctl(["pools", "delete", "example_pool"], api: api)
            #expect(used.status == 1 && used.output.contains("pool `example_pool` is used by flow `example_pool`"), "\(used.output)")
            #expect(try flowctl(["pools", "delete", "warehouse"], api: api).status == 0)
            let gone = try flowctl(["pools", "delete", "warehouse"], api: api)
            #expect(gone.status == 1 && gone.output.contains("unknown pool `warehouse`"))
            // Read-only tokens cannot change pools.
            #expect(try flowctl(["pools", "set", "p2", "--slots", "1"], api: api, token: LiveAPI.reader).status == 1)
        }
    }

    @Test("assets: a producer's success starts exactly one consumer run, which sees the event; an event posted with flowctl starts another; an events token may post and nothing else")
    func assets() async throws {
        try await withAPI(openReads: false) { (api: LiveAPI) async throws in
            func consumerRuns() async throws -> [JSONValue] {
                try await api.request("GET", "/api/v1/runs?flow_id=example_asset_consumer", token: LiveAPI.admin).json["runs"]?.arrayValue ?? []
            }
            let produced = try flowctl(["trigger", "example_asset_producer", "--wait"], api: api)
            #expect(produced.status == 0, "\(produced.output)")
            try await eventually("the consumer run to succeed") { try await consumerRuns().first?["state"] == "success" }
            #expect(try await consumerRuns().count == 1)
            let first = try #require(try await consumerRuns().first?["runId"]?.stringValue)
            let tasks = try await api.request("GET", "/api/v1/runs/\(first)/tasks", token: LiveAPI.admin).json["tasks"]?.arrayValue ?? []
            #expect(tasks.first?["result"] == ["count": 1, "extra": ["n": 42]])
            #expect(try await api.request("GET", "/api/v1/runs/\(first)", token: LiveAPI.admin).json["triggerKind"] == "asset")

            let posted = try flowctl(["assets", "event", "demo://numbers", "--extra", #"{"file": "s3://landing/x.csv"}"#], api: api, token: LiveAPI.events)
            #expect(posted.status == 0 && posted.output.contains("started asset__"), "\(posted.output)")
            try await eventually("the second consumer run") {
                let runs = try await consumerRuns()
                return runs.count == 2 && runs.allSatisfy { $0["state"] == "success" }
            }
            let second = try #require(try await consumerRuns().first?["runId"]?.stringValue)
            let t2 = try await api.request("GET", "/api/v1/runs/\(second)/tasks", token: LiveAPI.admin).json["tasks"]?.arrayValue ?? []
            #expect(t2.first?["result"] == ["count": 1, "extra": ["file": "s3://landing/x.csv"]])

            #expect(try flowctl(["runs", "list"], api: api, token: LiveAPI.events).status == 1)  // events tokens cannot read
            #expect(try flowctl(["assets", "event", "not a uri"], api: api).status == 2)
            let list = try flowctl(["assets", "list"], api: api)
            #expect(list.output.contains("demo://numbers") && list.output.contains("example_asset_consumer"))
            let events = try JSONValue.parse(try flowctl(["assets", "events", "demo://numbers", "--json"], api: api).output)["events"]?.arrayValue ?? []
            #expect(events.count == 2 && events.last?["source"] == "task" && events.first?["source"] == "api")
        }
    }

    @Test("backfill makes a backfill of a run per tick in the range, refuses an overlapping one while it runs, and a reversed range")
    func backfill() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let ok = try flowctl(["backfill", "lakehouse_end_to_end", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T23:00:00Z"], api: api)
            #expect(ok.status == 0, "\(ok.output)")
            #expect(ok.output.contains("2 runs to create, 0 to re-run, 0 ticks skipped"), "\(ok.output)")
            let id = try #require(ok.output.firstMatch(of: /backfill (\d+) of/).map { String($0.1) })
            _ = try flowctl(["backfill", "pause", id], api: api)
            let again = try flowctl(["backfill", "lakehouse_end_to_end", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T23:00:00Z"], api: api)
            #expect(again.status == 1 && again.output.contains("is paused over an overlapping range"), "\(again.output)")
            let shown = try flowctl(["backfill", "show", id], api: api)
            #expect(shown.output.contains("backfill \(id) paused") && shown.output.contains("2026-11-02 23:00:00 UTC"), "\(shown.output)")
            #expect(try flowctl(["backfill", "cancel", id], api: api).output.contains("cancelled"))
            let reversed = try flowctl(["backfill", "lakehouse_end_to_end", "--from", "2026-11-03T00:00:00Z", "--to", "2026-11-01T00:00:00Z"], api: api)
            #expect(reversed.status == 2)
            #expect(reversed.output.contains("is after --to"))
            #expect(try flowctl(["backfill", "lakehouse_end_to_end", "--from", "soon", "--to", "later"], api: api).status == 2)
        }
    }

    @Test("cron preview prints UTC instants; a bad expression or zone exits non-zero naming the problem")
    func cronPreview() throws {
        let ok = try flowctl(["cron", "preview", "0 */6 * * *", "--tz", "Europe/Madrid", "--after", "2026-11-22T00:00:00Z", "--count", "2"], api: nil)
        #expect(ok.status == 0)
        #expect(ok.output == "2026-11-22T05:00:00Z\n2026-11-22T11:00:00Z\n")
        let bad = try flowctl(["cron", "preview", "0 0 30 2 *"], api: nil)
        #expect(bad.status != 0)
        #expect(bad.output.contains("can never fire"))
        let zone = try flowctl(["cron", "preview", "@daily", "--tz", "Europe/Atlantis"], api: nil)
        #expect(zone.status != 0)
        #expect(zone.output.contains("unknown time zone `Europe/Atlantis`"))
    }

    @Test("db clean: a dry run counts, --yes deletes the old finished runs only, a bad duration is a usage error, no TTY and no --yes refuses")
    func dbClean() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            func clean(_ args: [String]) throws -> (status: Int32, output: String) {
                try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWKIT_DATABASE_URL=\(api.databaseURL)", try TestServers.flowctlPath(), "db", "clean"] + args)
            }
            var runs: [String] = []
            for _ in 0..<3 {
                let r = try flowctl(["trigger", "example_retry", "--wait"], api: api)
                runs.append(String(try #require(r.output.split(separator: "\n").last { $0.hasPrefix("run ") }).dropFirst(4).components(separatedBy: ": ")[0]))
            }
            let old = Array(runs.prefix(2))
            try await PGConnection(api.databaseURL).run { s in
                _ = try s.query("UPDATE runs SET ended_at = now() - interval '10 days' WHERE run_id = ANY($1::text[])", [old])
            }
            let dry = try clean(["--older-than", "7d", "--dry-run"])
            #expect(dry.status == 0 && dry.output.hasPrefix("would delete 2 finished runs that ended before "), "\(dry.output)")
            #expect(try clean(["--older-than", "7d"]).status == 2)  // no terminal to ask, no --yes
            #expect(try clean(["--older-than", "soon"]).output.contains("--older-than: `soon` is not a duration"))
            let done = try clean(["--older-than", "7d", "--yes"])
            #expect(done.status == 0 && done.output.hasPrefix("deleted 2 finished runs"), "\(done.output)")
            #expect(try flowctl(["runs", "show", runs[0]], api: api).status == 1)
            #expect(try flowctl(["runs", "show", runs[2]], api: api).status == 0)
            #expect(try clean(["--older-than", "7d", "--yes"]).output.hasPrefix("nothing to delete: 0 finished runs"))
        }
    }

    @Test("a mistyped command gets the nearest command, not \"unexpected arguments\"")
    func typo() throws {
        let r = try flowctl(["flow", "list"], api: nil)
        #expect(r.status == 2)
        #expect(r.output.contains("unknown command `flowctl flow`; did you mean `flowctl flows`?"), "\(r.output)")
        let sub = try flowctl(["runs", "shw", "x"], api: nil)
        #expect(sub.status == 2 && sub.output.contains("did you mean `flowctl runs show`?"), "\(sub.output)")
        #expect(try flowctl(["--version"], api: nil).output.hasPrefix("flowctl "))
        #expect(try flowctl(["cron", "preview", "@daily", "--count", "1"], api: nil).status == 0)
    }

    @Test("a unique part of a run id works everywhere (its start, or the short id at its end); an ambiguous one lists the candidates")
    func runIdParts() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            var runs: [String] = []
            for _ in 0..<2 {
                let r = try flowctl(["trigger", "example_retry", "--wait"], api: api)
                runs.append(String(try #require(r.output.split(separator: "\n").last { $0.hasPrefix("run ") }).dropFirst(4).components(separatedBy: ": ")[0]))
            }
            let short = try #require(runs[0].components(separatedBy: "__").last)
            let shown = try flowctl(["runs", "show", short], api: api)
            #expect(shown.status == 0 && shown.output.hasPrefix("run \(runs[0]) of example_retry"), "\(shown.output)")
            #expect(try flowctl(["logs", short, "flaky", "--try", "1"], api: api).status == 0)
            #expect(try await api.request("GET", "/api/v1/runs/\(String(runs[1].prefix(runs[1].count - 3)))").json["runId"]?.stringValue == runs[1])
            let ambiguous = try flowctl(["runs", "show", "manual__"], api: api)
            #expect(ambiguous.status != 0 && ambiguous.output.contains("matches several runs") && ambiguous.output.contains(runs[0]), "\(ambiguous.output)")
            #expect(try flowctl(["runs", "show", "zzzzzzzz"], api: api).output.contains("unknown run `zzzzzzzz`"))
        }
    }
}
