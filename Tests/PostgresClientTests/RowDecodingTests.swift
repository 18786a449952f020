import FlowKitTesting
import Foundation
import PostgresClient
import Testing

/// A column read that does not fit — missing, NULL where required, the wrong type, no row at all —
/// is an error naming the column, its table and the statement; never a crash or a default.
@Suite("Row decoding errors", .serialized)
struct RowDecodingTests {
    static func probe() async throws -> PGConnection {
        let db = PGConnection(try await TestServers.freshDatabase())
        try await db.run { s in
            try s.execute("CREATE TABLE decode_probe (id int NOT NULL, label text, at timestamptz)")
            try s.execute("INSERT INTO decode_probe VALUES (1, NULL, now()), (2, 'abc', NULL)")
        }
        return db
    }

    static func failure(_ body: () throws -> Void) -> PGDecodingError? {
        do { try body() } catch let e as PGDecodingError { return e } catch { Issue.record("unexpected \(error)") }
        return nil
    }

    @Test("inside a run: a missing column, a NULL and the wrong type each name the table, column and statement")
    func insideRun() async throws {
        let db = try await Self.probe()
        let sql = "SELECT id, label, at FROM decode_probe ORDER BY id"
        for (read, problem, words) in [
            ({ @Sendable (r: [PGRow]) in _ = try r[0].string("missing") }, PGDecodingError.Problem.missingColumn,
             ["column \"missing\"", "is not in the result of", sql]),
            ({ @Sendable (r: [PGRow]) in _ = try r[0].string("label") }, .null,
             ["column \"label\" of table decode_probe", "NULL where a value is required", sql]),
            ({ @Sendable (r: [PGRow]) in _ = try r[1].int("label") }, .wrongType(expected: "an integer", text: "abc"),
             ["column \"label\" of table decode_probe", "holds \"abc\", not an integer", sql]),
            ({ @Sendable (r: [PGRow]) in _ = try r[1].date("at") }, .null, ["column \"at\" of table decode_probe"]),
            ({ @Sendable (r: [PGRow]) in _ = try r[1].boolOrNull("label") }, .wrongType(expected: "a boolean", text: "abc"), ["not a boolean"]),
        ] as [(@Sendable ([PGRow]) throws -> Void, PGDecodingError.Problem, [String])] {
            let error = await #expect(throws: PGDecodingError.self) {
                try await db.run { s in try read(s.query(sql).all) }
            }
            #expect(error?.problem == problem)
            for w in words { #expect(error?.description.contains(w) == true, "\(w) in \(error?.description ?? "")") }
        }
        // NULL is fine where the reader allows it, and the connection is still usable after the errors.
        let label = try await db.run { s in try s.query(sql).all[0].stringOrNull("label") }
        #expect(label == nil)
    }

    @Test("outside a run the table is named by its OID; a statement that must return a row and did not says so")
    func outsideRunAndNoRow() async throws {
        let db = try await Self.probe()
        let rows = try await db.run { s in try s.query("SELECT id, label FROM decode_probe WHERE id = 1").all }
        let e = Self.failure { _ = try rows[0].string("label") }
        #expect(e?.table == nil)
        #expect(e.map { $0.tableOID != 0 } == true)
        #expect(e?.description.contains("table oid") == true)
        let computed = try await db.run { s in try s.query("SELECT NULL::int AS n").all }
        let c = Self.failure { _ = try computed[0].int("n") }
        #expect(c?.description.hasPrefix("column \"n\" is NULL") == true, "\(c?.description ?? "")")
        let none = await #expect(throws: PGDecodingError.self) {
            try await db.run { s in _ = try s.query("SELECT id FROM decode_probe WHERE id = 99").single() }
        }
        #expect(none?.problem == .noRow)
        #expect(none?.description.contains("SELECT id FROM decode_probe WHERE id = 99") == true)
    }

    @Test("queued and pipelined statements carry their own text into the error")
    func pipelined() async throws {
        let db = try await Self.probe()
        let error = await #expect(throws: PGDecodingError.self) {
            try await db.run { s in
                let rs = try s.queries([("SELECT id FROM decode_probe WHERE id = $1", [1]), ("SELECT label FROM decode_probe WHERE id = $1", [1])])
                _ = try rs[0].single().int("id")
                _ = try rs[1].single().string("label")
            }
        }
        #expect(error?.statement == "SELECT label FROM decode_probe WHERE id = $1")
        #expect(error?.table == "decode_probe")
    }
}
