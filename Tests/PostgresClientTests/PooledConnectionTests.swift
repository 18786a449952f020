import FlowKitTesting
import Foundation
import PostgresClient
import Testing

/// Through a real PgBouncer 1.18 in transaction mode (scripts/pgbouncer.sh, which `make test`
/// starts): what a pooled connection does, and the guard against what a pooler cannot carry.
@Suite("PgBouncer in transaction mode", .serialized)
struct PooledConnectionTests {
    /// A fresh database, as a pooled conninfo (through PgBouncer) and its direct one.
    func database() async throws -> (pooled: String, direct: String) {
        let direct = try await TestServers.freshDatabase()
        let plain = PGEndpoint.session(direct)   // fresh databases are pooled already under FLOWKIT_TEST_VIA_PGBOUNCER
        guard var bouncer = URLComponents(string: try TestServers.env("FLOWKIT_TEST_PGBOUNCER_URL")),
              let name = URLComponents(string: plain)?.path else { throw TestServers.Missing(variable: "FLOWKIT_TEST_PGBOUNCER_URL") }
        bouncer.path = name
        return (PGEndpoint.pooled(bouncer.string!, session: plain), plain)
    }

    @Test("a session-only statement on a pooled connection is refused before it is sent, naming it and FLOWKIT_DATABASE_DIRECT_URL")
    func guardRefusesSessionFeatures() async throws {
        let (pooled, _) = try await database()
        let db = PGConnection(pooled, label: "guard")
        for sql in ["LISTEN flowkit_runs", "SELECT pg_advisory_lock(42)", "SELECT pg_try_advisory_lock($1)", "SET work_mem = '8MB'",
                    "PREPARE p AS SELECT 1", "  select pg_advisory_unlock(42)"] {
            let e = await #expect(throws: PGError.self, "\(sql)") {
                try await db.run { s in _ = try s.query(sql, sql.contains("$1") ? [42] : []) }
            }
            #expect(e?.kind == .misuse && e?.message.contains("cannot run through a transaction pooler") == true
                    && e?.message.contains("FLOWKIT_DATABASE_DIRECT_URL") == true, "\(String(describing: e))")
        }
        await #expect(throws: PGError.self) { try await db.run { s in try s.listen("flowkit_runs") } }
        // A session SET inside a transaction would outlive it on the server connection: refused too.
        await #expect(throws: PGError.self) { try await db.run { s in try s.transaction { _ = try s.query("SET statement_timeout = 5") } } }
        // What a transaction carries is fine: SET LOCAL, transaction-scoped advisory locks.
        let got = try await db.run { s in
            try s.transaction {
                try s.query("SET LOCAL work_mem = '8MB'")
                try s.query("SELECT pg_advisory_xact_lock(42)")
                return try s.query("SELECT current_setting('work_mem') AS w").single().string("w")
            }
        }
        #expect(got == "8MB")
        // The session endpoint carries what the pooler cannot.
        let session = PGConnection(PGEndpoint.session(pooled), label: "session")
        #expect(try await session.run { s in try s.query("SELECT pg_try_advisory_lock(42) AS l").single().bool("l") })
    }

    @Test("thirty pooled clients share twenty server connections: parameterized statements, transactions and pipelines all answer right; zone UTC, ISO dates, the statement timeout per transaction")
    func worksThroughThePooler() async throws {
        let (pooled, direct) = try await database()
        try await PGConnection(direct).run { s in _ = try s.execute("CREATE TABLE k (client int, n int, at timestamptz)") }
        // Each client's statements differ in text: a named statement lent to another client
        // would answer with someone else's SQL (or not exist) on the server connection it gets.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<30 {
                group.addTask {
                    let db = PGConnection(pooled, label: "c\(client)")
                    for n in 0..<40 {
                        let got = try await db.run { s in
                            try s.transaction {
                                s.enqueue("INSERT INTO k VALUES ($1, $2, now())", [client, n])
                                return try s.query("SELECT \(client) AS c, $1::int * 2 AS d", [n]).single()
                            }
                        }
                        #expect(try got.int("c") == client && got.int("d") == 2 * n)
                        let pair = try await db.run { s in try s.queries([("SELECT $1::int + \(client) AS v", [n]), ("SELECT count(*) AS v FROM k WHERE client = $1", [client])]) }
                        #expect(try pair[0].single().int("v") == n + client && pair[1].single().int("v") == n + 1)
                    }
                    db.close()
                }
            }
            try await group.waitForAll()
        }
        let db = PGConnection(pooled, label: "settings", options: PGOptions(statementTimeout: 0.3))
        let settings = try await db.run { s in try s.query("SELECT current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds").single() }
        #expect(try settings.string("tz") == "UTC" && settings.string("ds").hasPrefix("ISO"))
        let slow = await #expect(throws: PGError.self) {
            try await db.run { s in try s.transaction { _ = try s.query("SELECT pg_sleep(3)") } }
        }
        #expect(slow?.sqlState == "57014", "\(String(describing: slow))")
        let rows = try await PGConnection(direct).run { s in try s.query("SELECT count(*) AS n FROM k").single().int("n") }
        #expect(rows == 30 * 40)
    }
}
