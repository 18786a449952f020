import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

/// Store reads decode rows through throwing accessors: a renamed column is an error naming it,
/// not a crash or a silent zero — and no column read in `Store/` force-unwraps.
@Suite("Typed rows", .serialized)
struct TypedRowTests {
    @Test("a run read by a statement that lacks a column, or holds a NULL where one is required, fails naming the column and table")
    func runRecord() async throws {
        let h = try await Harness.make([Flow("typed") { f in _ = noop(f, "a") }])
        let runId = try await h.trigger("typed")
        let db = PGConnection(h.url)
        let good = try await db.run { s in try s.query("SELECT \(RunRecord.columns) FROM runs r WHERE r.run_id = $1", [runId]).decode(RunRecord.self) }
        #expect(good.map(\.runId) == [runId])
        #expect(good.first?.state == "queued" || good.first?.state == "running")
        // The statement of a store that renamed `trigger_kind` to `kind` and forgot the reader.
        let renamed = RunRecord.columns.replacingOccurrences(of: "r.trigger_kind", with: "r.trigger_kind AS kind")
        let missing = await #expect(throws: PGDecodingError.self) {
            try await db.run { s in _ = try s.query("SELECT \(renamed) FROM runs r WHERE r.run_id = $1", [runId]).decode(RunRecord.self) }
        }
        #expect(missing?.column == "trigger_kind")
        #expect(missing?.problem == .missingColumn)
        let nulled = RunRecord.columns.replacingOccurrences(of: "r.logical_date", with: "NULL::timestamptz AS logical_date")
        let null = await #expect(throws: PGDecodingError.self) {
            try await db.run { s in _ = try s.query("SELECT \(nulled) FROM runs r WHERE r.run_id = $1", [runId]).decode(RunRecord.self) }
        }
        #expect(null?.column == "logical_date")
        #expect(null?.problem == .null)
        let wrong = RunRecord.columns.replacingOccurrences(of: "r.flow_version", with: "r.flow_id AS flow_version")
        let type = await #expect(throws: PGDecodingError.self) {
            try await db.run { s in _ = try s.query("SELECT \(wrong) FROM runs r WHERE r.run_id = $1", [runId]).decode(RunRecord.self) }
        }
        #expect(type?.description.contains("column \"flow_version\" of table runs holds \"typed\", not an integer") == true,
                "\(type?.description ?? "")")
    }

    @Test("no column read in Sources/Scheduler/Store force-unwraps (`\")!`), and no result's first row is taken with `first!`")
    func noForceUnwrappedReads() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("Sources/Scheduler/Store")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".swift") }
        #expect(files.count > 10)
        var offenders: [String] = []
        for f in files {
            let text = try String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8)
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where line.contains("\")!") || line.contains(".first!") {
                offenders.append("Store/\(f):\(i + 1): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        #expect(offenders.isEmpty, "force-unwrapped reads:\n\(offenders.joined(separator: "\n"))")
    }
}
