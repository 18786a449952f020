import FlowKitTesting
import Foundation
import PostgresClient
import Testing

@Suite("libpq binding", .serialized)
struct PostgresClientTests {
    @Test("parameters are sent apart from the SQL, typed rows come back, NULLs stay NULL")
    func parameters() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        let row = try await db.run { s in
            try s.query("SELECT $1::text AS t, $2::int AS i, $3::float8 AS d, $4::bool AS b, $5::timestamptz AS ts, $6::text AS n, $7::text[] AS a",
                        ["Robert'); DROP TABLE runs;--", 42, 2.5, true, Date(timeIntervalSince1970: 1_790_000_000.25), PGNull(), ["a,b", "c\"d", "e"]]).first!
        }
        #expect(try row.stringOrNull("t") == "Robert'); DROP TABLE runs;--")
        #expect(try row.intOrNull("i") == 42)
        #expect(try row.doubleOrNull("d") == 2.5)
        #expect(try row.boolOrNull("b") == true)
        #expect(try row.dateOrNull("ts") == Date(timeIntervalSince1970: 1_790_000_000.25))
        #expect(try row.stringOrNull("n") == nil)
        #expect(try row.strings("a") == ["a,b", "c\"d", "e"])
        // Array literals: backslashes, quotes, empty strings, NULLs and non-ASCII survive.
        let elements: [String?] = ["x\\y", nil, "", "ü✓ \"q\"", "{}"]
        let same = try await db.run { s in
            try s.query("SELECT $1::text[] IS NOT DISTINCT FROM ARRAY[$2, NULL, '', $3, '{}']::text[] AS same",
                        [elements, "x\\y", "ü✓ \"q\""]).first!.boolOrNull("same")
        }
        #expect(same == true)
    }

    @Test("a transaction rolls back when its body throws")
    func rollback() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await db.run { s in
                try s.transaction {
                    try s.query("INSERT INTO workers (name, host, started_at, heartbeat_at) VALUES ('x', 'h', now(), now())")
                    throw Boom()
                }
            }
        }
        #expect(try await db.run { s in try s.query("SELECT count(*) AS n FROM workers").first!.intOrNull("n") } == 0)
    }

    @Test("queued statements travel with the next query, in order, in one pipeline; the first failure rolls back the transaction")
    func pipelines() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        let (count, pair) = try await db.run { s in
            try s.transaction {
                for i in 0..<3 {
                    s.enqueue("INSERT INTO workers (name, host, started_at, heartbeat_at) VALUES ($1, 'h', now(), now())", ["w\(i)"])
                }
                // Sees the queued inserts: they were sent before it, in the same transaction.
                let n = try s.query("SELECT count(*) AS n FROM workers").single().int("n")
                let both = try s.queries([("SELECT $1::int AS a", [1]), ("SELECT $1::text AS b", ["two"])])
                return (n, (try both[0].single().int("a"), try both[1].single().string("b")))
            }
        }
        #expect(count == 3)
        #expect(pair.0 == 1 && pair.1 == "two")

        // A failing queued statement fails the query that sends it, and nothing of the transaction stays.
        await #expect(throws: PGError.self) {
            try await db.run { s in
                try s.transaction {
                    s.enqueue("INSERT INTO workers (name, host, started_at, heartbeat_at) VALUES ('late', 'h', now(), now())")
                    s.enqueue("INSERT INTO no_such_table VALUES (1)")
                    _ = try s.query("SELECT 1 AS one")
                }
            }
        }
        // Queued statements left at the end of a run are sent before it returns; the session is usable after a failure.
        try await db.run { s in s.enqueue("DELETE FROM workers WHERE name = 'w0'") }
        let names = try await db.run { s in try s.query("SELECT name FROM workers ORDER BY name").all.map { try $0.string("name") } }
        #expect(names == ["w1", "w2"])
        // A statement over the pipeline's size limit still runs (one by one).
        let big = String(repeating: "x", count: 200_000)
        let length = try await db.run { s in
            s.enqueue("INSERT INTO workers (name, host, started_at, heartbeat_at) VALUES ('big', $1, now(), now())", [big])
            return try s.query("SELECT length(host) AS n FROM workers WHERE name = 'big'").first!.intOrNull("n")
        }
        #expect(length == 200_000)
    }

    @Test("generic plans are scoped: set inside the block, restored after it, also after a failure")
    func planModes() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        @Sendable func mode(_ s: PGSession) throws -> String { try s.query("SHOW plan_cache_mode").single().string("plan_cache_mode") }
        let (inside, nested, after) = try await db.run { s in
            try s.transaction {
                let (a, b) = try s.plans(generic: true) { (try mode(s), try s.plans(generic: false) { try mode(s) }) }
                return (a, b, try mode(s))
            }
        }
        #expect(inside == "force_generic_plan" && nested == "auto" && after == "auto")
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await db.run { s in try s.plans(generic: true) { _ = try mode(s); throw Boom() } }
        }
        #expect(try await db.run { s in try mode(s) } == "auto")
    }

    @Test("errors carry the SQLSTATE and the server's message")
    func errors() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        do {
            try await db.run { s in _ = try s.query("SELECT * FROM no_such_table") }
            Issue.record("expected an error")
        } catch let e as PGError {
            #expect(e.sqlState == "42P01")
            #expect(e.message.contains("no_such_table"))
        }
    }

    @Test("a keyword string with two hosts fails over to the one that answers")
    func multiHost() async throws {
        let url = try await TestServers.freshDatabase()
        let comps = URLComponents(string: url)!
        let conninfo = "host=127.0.0.1,127.0.0.1 port=1,\(comps.port!) dbname=\(comps.path.dropFirst()) user=flowkit target_session_attrs=read-write connect_timeout=2"
        let db = PGConnection(conninfo)
        #expect(try await db.run { s in try s.query("SELECT 7 AS n").first!.intOrNull("n") } == 7)
    }

    @Test("LISTEN receives NOTIFY from another connection")
    func listenNotify() async throws {
        let url = try await TestServers.freshDatabase()
        let listener = PGConnection(url), sender = PGConnection(url)
        try await listener.run { s in try s.listen("flowkit_test") }
        try await sender.run { s in _ = try s.query("SELECT pg_notify('flowkit_test', $1)", ["hello"]) }
        let got = try await listener.run { s in try s.waitForNotifications(timeout: 5) }
        #expect(got.map(\.payload) == ["hello"])
        #expect(got.first?.channel == "flowkit_test")
    }

    @Test("a pool spreads calls over its connections and survives a failing statement")
    func pool() async throws {
        let pool = PGPool(try await TestServers.freshDatabase(), size: 3)
        let pids = try await withThrowingTaskGroup(of: Int.self) { g in
            for _ in 0..<12 { g.addTask { try await pool.run { s in try s.query("SELECT pg_backend_pid() AS p, pg_sleep(0.05)").single().int("p") } } }
            var out = Set<Int>()
            for try await p in g { out.insert(p) }
            return out
        }
        #expect(pids.count == 3)
        _ = try? await pool.run { s in try s.query("SELECT 1/0") }
        #expect(try await pool.run { s in try s.query("SELECT 1 AS n").first!.intOrNull("n") } == 1)
    }

    @Test("after the server restarts, the connection comes back on its own")
    func reconnect() async throws {
        let db = PGConnection(try await TestServers.freshDatabase())
        #expect(try await db.run { s in try s.query("SELECT 1 AS n").first!.intOrNull("n") } == 1)
        try TestServers.services("restart-postgres", "1")
        try await eventually("the connection to come back", timeout: 30) {
            (try? await db.run { s in try s.query("SELECT 2 AS n").first!.intOrNull("n") }) == 2
        }
    }
}
