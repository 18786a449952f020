import FlowKit
import FlowKitTesting
import Flows
import Foundation
import PostgresClient
import Testing
@testable import WorkerRuntime
import Scheduler

/// Flows of SQL tasks with the cases #24 names: injection through params, unknown names,
/// syntax errors, transactions, COPY, cancel and timeout, masking.
let sqlChecks = Flow("sql_checks", params: [Param("name", .string, default: "x"), Param("csv", .string, default: "/nonexistent.csv"),
                                            Param("secret", .string, default: "")]) { f in
    f.sql("inject", connection: "warehouse", sql: "SELECT {{ params.name }} AS name, to_regclass('victims') IS NOT NULL AS victims_exist")
    f.sql("unknown", connection: "warehouse", sql: "CREATE TABLE never_made (x int); SELECT {{ params.nope }}")
    f.sql("syntax", connection: "warehouse", sql: "INSERT INTO victims VALUES (7);\nSELECT 1,\n  2 FROM FROM victims")
    f.sql("autocommit", connection: "warehouse", sql: "INSERT INTO victims VALUES (8); SELECT 1/0", transaction: false)
    f.sql("load", connection: "warehouse", copyFrom: .file("{{ params.csv }}"), into: "loaded (city, value)", format: .csv(header: true))
    f.sql("load_counted", connection: "warehouse", sql: "CREATE TABLE IF NOT EXISTS counted (city text, value numeric); TRUNCATE counted",
          copyFrom: .file("{{ params.csv }}"), into: "counted", afterCopy: "SELECT count(*) AS n, sum(value) AS total FROM counted",
          returning: .firstRow)
    f.sql("masked", connection: "warehouse", sql: "SELECT {{ params.secret }}::int")
}
let sqlSlow = Flow("sql_slow") { f in f.sql("sleep", connection: "warehouse", sql: "SELECT pg_sleep(60)") }
let sqlTimeout = Flow("sql_timeout") { f in f.sql("short_timeout", connection: "warehouse", sql: "SELECT pg_sleep(30)", timeout: .seconds(1)) }

@Suite("SQL tasks end to end", .serialized)
struct SQLTaskEndToEndTests {
    /// A live system whose workers reach its own database as connection `warehouse`, with a
    /// password in the URL (trust authentication ignores it; the masker must hide it).
    func withWarehouse(_ body: (LiveSystem) async throws -> Void) async throws {
        try await withSystem(flows: allFlows + [sqlChecks, sqlSlow, sqlTimeout], workers: 0) { sys in
            let withPassword = sys.url.replacingOccurrences(of: "://flowkit@", with: "://flowkit:hunter2-secret@")
            #expect(withPassword != sys.url)
            setenv("FLOWKIT_CONN_WAREHOUSE", withPassword, 1)
            sys.startWorker("w1")
            sys.startWorker("w2")
            try await body(sys)
        }
    }

    func tasks(_ sys: LiveSystem, _ run: String) async throws -> [String: TaskInstanceRecord] {
        Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
    }

    @Test("example_sql: the numbers 1…n and their total, for several runs at once with different n")
    func exampleSQL() async throws {
        try await withWarehouse { sys in
            let ns = [3, 10, 1, 100, 7, 3]
            var runs: [String] = []
            for n in ns { runs.append(try await sys.trigger("example_sql", conf: ["n": .int(n)])) }
            for (run, n) in zip(runs, ns) {
                #expect(try await sys.waitForRun(run, timeout: 60) == "success")
                let t = try await tasks(sys, run)
                #expect(t["total"]?.result == ["columns": ["total"], "rows": [[.int(n * (n + 1) / 2)]], "rowCount": 1, "truncated": false])
                #expect(t["make_table"]?.result == ["rowsAffected": .int(n)])
            }
            let log = try await sys.store.logs(runId: runs[0], taskId: "make_table", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(log.contains { $0.contains("5 statements") && $0.contains("in one transaction") })
        }
    }

    @Test("a conf value is a bound parameter, never SQL; an unknown name fails before anything runs; errors name the place, not the text; transactions roll back")
    func bindingAndErrors() async throws {
        try await withWarehouse { sys in
            try await sys.sql("CREATE TABLE victims (x int); INSERT INTO victims VALUES (1)")
            let evil = "x' AS name, 1 AS victims; DROP TABLE victims; --"
            let run = try await sys.trigger("sql_checks", conf: ["name": .string(evil), "secret": "hunter2-secret"])
            #expect(try await sys.waitForRun(run, timeout: 60) == "failed")
            let t = try await tasks(sys, run)
            #expect(t["inject"]?.result == ["columns": ["name", "victims_exist"], "rows": [[.string(evil), true]], "rowCount": 1, "truncated": false])

            let unknown = try #require(t["unknown"]?.error)
            #expect(unknown.contains("unknown template name `params.nope`") && unknown.contains("params.csv, params.name, params.secret"))

            let syntax = try #require(t["syntax"]?.error)
            #expect(syntax.hasPrefix("statement 2 of 2, line 3 column 10: ERROR 42601: syntax error at or near \"FROM\""))
            #expect(!syntax.contains("SELECT") && !syntax.contains("victims"))   // the cause, not the statement's text

            let autocommit = try #require(t["autocommit"]?.error)
            #expect(autocommit.contains("statement 2 of 2") && autocommit.contains("22012"))   // division by zero

            let masked = try #require(t["masked"]?.error)
            #expect(masked.contains("invalid input syntax for type integer") && masked.contains("***") && !masked.contains("hunter2"))
            let maskedLog = try await sys.store.logs(runId: run, taskId: "masked", tryNumber: 1, after: 0).lines.map(\.line).joined(separator: "\n")
            #expect(!maskedLog.contains("hunter2"))

            // The injection did nothing, the unknown name ran nothing, the failed transaction kept
            // nothing, and the task outside a transaction kept its first statement.
            let conn = PGConnection(sys.url, label: "test-sql")
            defer { conn.close() }
            let (victims, made) = try await conn.run { s in
                (try s.query("SELECT array_agg(x ORDER BY x)::text AS v FROM victims").first?.stringOrNull("v"),
                 try s.query("SELECT to_regclass('never_made') IS NOT NULL AS made").first?.boolOrNull("made"))
            }
            #expect(victims == "{1,8}")
            #expect(made == false)
        }
    }

    @Test("COPY streams a CSV into a table and counts its rows; a malformed file fails naming its line")
    func copy() async throws {
        try await withWarehouse { sys in
            try await sys.sql("CREATE TABLE loaded (city text NOT NULL, value numeric NOT NULL)")
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-copy-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let good = dir.appendingPathComponent("good.csv"), bad = dir.appendingPathComponent("bad.csv")
            let rows = (0..<5000).map { "city \($0),\(Double($0) / 4)" }.joined(separator: "\n")
            try Data("city,value\n\(rows)\n".utf8).write(to: good)
            try Data("city,value\nGirona,1.5\nLleida,2\nTarragona,not-a-number\n".utf8).write(to: bad)

            let ok = try await sys.trigger("sql_checks", conf: ["csv": .string(good.path)])
            _ = try await sys.waitForRun(ok, timeout: 60)
            #expect(try await tasks(sys, ok)["load"]?.result == ["rowsCopied": 5000])
            // Statements before the load (create, truncate) and after it (a count), one transaction.
            let counted = try await tasks(sys, ok)["load_counted"]?.result
            #expect(counted?["n"] == 5000 && counted?["total"]?.doubleValue == 3_124_375)
            let broken = try await sys.trigger("sql_checks", conf: ["csv": .string(bad.path)])
            _ = try await sys.waitForRun(broken, timeout: 60)
            let error = try #require(try await tasks(sys, broken)["load"]?.error)
            #expect(error.contains("22P02") && error.contains("line 4") && error.contains("not-a-number"))
            let missing = try await sys.trigger("sql_checks", conf: ["csv": "/nonexistent/in.csv"])
            _ = try await sys.waitForRun(missing, timeout: 60)
            #expect(try await tasks(sys, missing)["load"]?.error?.contains("cannot open /nonexistent/in.csv") == true)
            let conn = PGConnection(sys.url, label: "test-sql")
            defer { conn.close() }
            #expect(try await conn.run { s in try s.query("SELECT count(*) AS n FROM loaded").first?.intOrNull("n") } == 5000)
        }
    }

    @Test("cancelling a run stops its long statement on the server within 2 s; the task's timeout ends a statement as statement_timeout")
    func cancelAndTimeout() async throws {
        try await withWarehouse { sys in
            let run = try await sys.trigger("sql_slow")
            try await sys.waitForTask(run, "sleep", state: "running")
            try await eventually("pg_sleep(60) running on the server") { try await sleeping(sys, "pg_sleep(60)") }
            let t0 = Date()
            try await sys.daemon.broker.perform(try await sys.store.cancelRun(runId: run, now: Date()))
            try await eventually("the statement cancelled on the server", timeout: 10) { !(try await sleeping(sys, "pg_sleep(60)")) }
            let took = Date().timeIntervalSince(t0)
            #expect(took < 2.5, "the server still ran the statement \(took)s after the cancel")
            #expect(try await sys.waitForRun(run) == "cancelled")
            let late = try await sys.trigger("sql_timeout")
            #expect(try await sys.waitForRun(late, timeout: 30) == "failed")
            let timedOut = try #require(try await tasks(sys, late)["short_timeout"])
            #expect(timedOut.state == "failed")
            #expect(timedOut.error?.contains("timed out") == true)
            #expect(!(try await sleeping(sys, "pg_sleep(30)")))
        }
    }

    @Test("a SQL task whose database refuses connections for a few seconds waits for it (1, 2, 4, 8 s) within the same try")
    func connectRetry() async throws {
        try await withSystem(flows: allFlows, workers: 0) { sys in
            // The warehouse is reached through a forwarder that starts listening 2.5 s from now.
            let pgPort = try #require(URLComponents(string: sys.url)?.port)
            let port = Int.random(in: 30_000..<40_000)
            let forwarder = try spawn(["/usr/bin/env", "python3", repoPath("scripts/tcp_forward.py"), "\(port)", "\(pgPort)", "2.5"], env: [:])
            defer { kill(forwarder, SIGKILL); waitpid(forwarder, nil, 0) }
            let before = ProcessInfo.processInfo.environment["FLOWKIT_CONN_WAREHOUSE"]
            defer { if let before { setenv("FLOWKIT_CONN_WAREHOUSE", before, 1) } else { unsetenv("FLOWKIT_CONN_WAREHOUSE") } }
            setenv("FLOWKIT_CONN_WAREHOUSE", sys.url.replacingOccurrences(of: ":\(pgPort)/", with: ":\(port)/"), 1)
            sys.startWorker("w1")
            let run = try await sys.trigger("example_sql", conf: ["n": 4])
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
            let make = try #require(try await tasks(sys, run)["make_table"])
            #expect(make.tryNumber == 1)
            #expect(make.result == ["rowsAffected": 4])
            let log = try await sys.store.logs(runId: run, taskId: "make_table", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(log.contains { $0.contains("could not connect to `warehouse`") && $0.contains("trying again in 1 s") })
        }
    }

    func sleeping(_ sys: LiveSystem, _ what: String) async throws -> Bool {
        let conn = PGConnection(sys.url, label: "test-sql")
        defer { conn.close() }
        return try await conn.run { s in
            try s.query("SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1", ["%" + what + "%"]).first?.intOrNull("n") ?? 0
        } > 0
    }
}
