import FlowKitTesting
import Foundation
import PostgresClient
import Testing

@Suite("libpq liveness guards", .serialized)
struct PostgresLivenessTests {
    @Test("every session is cut off by the server when left idle in a transaction")
    func idleInTransactionTimeout() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        let shown = try await db.run { s in try s.query("SHOW idle_in_transaction_session_timeout").first?.stringOrNull("idle_in_transaction_session_timeout") }
        #expect(shown == "30s")
        let api = PGConnection(db.conninfo, options: PGOptions(statementTimeout: 10))
        #expect(try await api.run { s in try s.query("SHOW statement_timeout").first?.stringOrNull("statement_timeout") } == "10s")
    }

    @Test("a run that returns with a transaction open is rolled back and fails, naming the last statement")
    func runLeavesTransactionOpen() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        do {
            try await db.run { s in
                _ = try s.execute("BEGIN")
                _ = try s.query("INSERT INTO workers (name, host, started_at, heartbeat_at) VALUES ('w', 'h', now(), now())")
            }
            Issue.record("the run should have failed")
        } catch let e as PGError {
            #expect(e.kind == .misuse)
            #expect(e.message.contains("INSERT INTO workers"))
        }
        let after = try await db.run { s in try s.query("SELECT count(*) AS n FROM workers").first!.intOrNull("n") }
        #expect(after == 0)
    }

    @Test("a server that never answers costs the reply timeout, not a hung thread; the next run reconnects")
    func boundedReplyWait() async throws {
        let db = PGConnection(try await TestServers.freshDatabase(), options: PGOptions(replyTimeout: 1))
        do {
            _ = try await within(30, "a query past the reply timeout") {
                try await db.run { s in try s.query("SELECT pg_sleep(20)") }
            }
            Issue.record("pg_sleep(20) should have timed out")
        } catch let e as PGError {
            #expect(e.kind == .timeout)
            #expect(e.description.contains("pg_sleep"))
        }
        #expect(try await db.run { s in try s.query("SELECT 1 AS one").first?.intOrNull("one") } == 1)
    }

    @Test("a statement past the statement timeout is cancelled by the server and says so")
    func statementTimeout() async throws {
        let db = PGConnection(try await TestServers.freshDatabase(), options: PGOptions(statementTimeout: 0.3))
        do {
            try await db.run { s in _ = try s.query("SELECT pg_sleep(5)") }
            Issue.record("pg_sleep(5) should have been cancelled")
        } catch let e as PGError {
            #expect(e.isStatementTimeout)
            #expect(e.message.contains("pg_sleep"))
        }
        #expect(try await db.run { s in try s.query("SELECT 2 AS two").first?.intOrNull("two") } == 2)
    }

    @Test("notifications asked for in a transaction leave after its commit, in a transaction of their own; none on rollback")
    func notifyAfterCommit() async throws {
        let url = try await TestServers.freshDatabase()
        let listener = PGConnection(url, label: "listener")
        try await listener.run { s in try s.listen("test_channel") }
        let db = PGConnection(url)
        db.traceStatements(true)
        try await db.run { s in
            try s.transaction {
                s.notifyAfterCommit("test_channel", "hello")
                s.notifyAfterCommit("test_channel", "hello")  // folded
                _ = try s.query("SELECT 1")
            }
        }
        let trace = db.traceStatements(false)
        let commit = try #require(trace.firstIndex(of: "COMMIT"))
        let notify = try #require(trace.firstIndex { $0.contains("pg_notify") })
        #expect(notify > commit, "the NOTIFY must not be part of the data transaction: \(trace)")
        #expect(trace[notify - 1] == "SET LOCAL synchronous_commit = off")
        let got = try await listener.run { s in try s.waitForNotifications(timeout: 5) }
        #expect(got == [PGNotification(channel: "test_channel", payload: "hello")])

        struct Boom: Error {}
        _ = try? await db.run { s in
            try s.transaction {
                s.notifyAfterCommit("test_channel", "rolled back")
                throw Boom()
            }
        }
        #expect(try await listener.run { s in try s.waitForNotifications(timeout: 0.5) }.isEmpty)
    }

    @Test("pooled connections the server closed while idle (a restart) are replaced before use: no call fails")
    func staleConnectionsReplaced() async throws {
        let url = try await TestServers.freshDatabase()
        let pool = PGPool(url, size: 3)
        // Open all three connections, with calls in flight at once.
        async let a: Int? = pool.run { s in try s.query("SELECT pg_backend_pid() AS p, pg_sleep(0.2)").first?.intOrNull("p") }
        async let b: Int? = pool.run { s in try s.query("SELECT pg_backend_pid() AS p, pg_sleep(0.2)").first?.intOrNull("p") }
        async let c: Int? = pool.run { s in try s.query("SELECT pg_backend_pid() AS p, pg_sleep(0.2)").first?.intOrNull("p") }
        let pids = [try await a, try await b, try await c].compactMap { $0 }
        #expect(Set(pids).count == 3)
        let admin = PGConnection(url, label: "admin")
        try await admin.run { s in _ = try s.query("SELECT pg_terminate_backend(p) FROM unnest($1::int[]) AS u(p)", [pids]) }
        try await eventually("the backends have gone") {
            try await admin.run { s in try s.query("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = ANY($1::int[])", [pids]).first!.intOrNull("n") } == 0
        }
        for _ in 0..<6 {
            #expect(try await pool.run { s in try s.query("SELECT 1 AS one").first?.intOrNull("one") } == 1)
        }
    }

    @Test("a transaction that loses its connection before committing runs again on a fresh one")
    func replayBeforeCommit() async throws {
        let url = try await TestServers.freshDatabase()
        let db = PGConnection(url)
        let admin = PGConnection(url, label: "admin")
        let pid = try await db.run { s in try s.query("SELECT pg_backend_pid() AS p").single().int("p") }
        let attempts = Counter()
        try await db.run { s in
            try s.transaction {
                attempts.add()
                _ = try s.query("INSERT INTO workers (name, host, started_at, heartbeat_at) VALUES ('w\(attempts.value)', 'h', now(), now())")
                if attempts.value == 1 {
                    // The server goes away mid-transaction, before COMMIT was sent.
                    let done = DispatchSemaphore(value: 0)
                    Task { _ = try? await admin.run { a in try a.query("SELECT pg_terminate_backend($1)", [pid]) }; done.signal() }
                    done.wait()
                }
                _ = try s.query("SELECT 1")
            }
        }
        #expect(attempts.value == 2)
        let names = try await admin.run { s in try s.query("SELECT name FROM workers ORDER BY name").all.compactMap { try $0.stringOrNull("name") } }
        #expect(names == ["w2"])
    }
}
