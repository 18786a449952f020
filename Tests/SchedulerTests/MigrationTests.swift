import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Migrations", .serialized)
struct MigrationTests {
    @Test("migrating twice applies nothing the second time, and the schema checks out")
    func idempotent() async throws {
        let url = try await TestServers.freshDatabase()
        let db = PGConnection(url)
        #expect(try await Migrator.migrate(db).isEmpty)
        try await Migrator.checkCurrent(db)
        let n = try await db.run { s in try s.query("SELECT count(*) AS n FROM schema_migrations").single().int("n") }
        #expect(n == Migration.bundled.count)
    }

    @Test("a migration changed after it was applied is refused, naming it")
    func changedChecksum() async throws {
        let url = try await TestServers.freshDatabase()
        let db = PGConnection(url)
        var changed = Migration.bundled
        changed[0] = Migration(version: changed[0].version, name: changed[0].name, sql: changed[0].sql + "\n-- edited")
        do {
            try await Migrator.migrate(db, migrations: changed)
            Issue.record("expected a refusal")
        } catch let e as MigrationError {
            #expect(e.message.contains("migration 0001_core_schema.sql was changed after it was applied"))
        }
    }

    @Test("a database behind the binary says exactly what to run")
    func behind() async throws {
        let admin = ProcessInfo.processInfo.environment["FLOWKIT_TEST_DATABASE_URL"]!
        let name = "t_empty_" + UUID().uuidString.prefix(8).lowercased()
        try await PGConnection(admin).run { s in _ = try s.execute("CREATE DATABASE \(name)") }
        var comps = URLComponents(string: admin)!
        comps.path = "/" + name
        let db = PGConnection(comps.string!)
        do {
            try await Migrator.checkCurrent(db)
            Issue.record("expected an error")
        } catch let e as MigrationError {
            #expect(e.message.contains("run `flowctl migrate`"))
        }
        let more = Migration.bundled + [Migration(version: 9999, name: "9999_future.sql", sql: "SELECT 1")]
        try await Migrator.migrate(db)
        do {
            try await Migrator.checkCurrent(db, migrations: more)
            Issue.record("expected an error")
        } catch let e as MigrationError {
            #expect(e.message == "the database schema is behind this binary (pending: 9999_future.sql): run `flowctl migrate`")
        }
    }

    @Test("the migrations built into the binary are exactly the files in migrations/")
    func embeddedMatchFiles() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files == Migration.bundled.map(\.name), "run scripts/embed_migrations.sh")
        for m in Migration.bundled {
            let text = try String(contentsOf: dir.appendingPathComponent(m.name), encoding: .utf8)
            #expect(text.trimmingCharacters(in: .whitespacesAndNewlines) == m.sql.trimmingCharacters(in: .whitespacesAndNewlines),
                    "\(m.name) differs from the embedded copy: run scripts/embed_migrations.sh")
        }
    }
}
