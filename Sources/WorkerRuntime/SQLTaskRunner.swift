import FlowKit
import Foundation
import PostgresClient
import Synchronization

/// Runs a SQL task (`FlowBuilder.sql`) on a worker: its statements through libpq on a connection
/// of its own to the named connection, templates bound as parameters, the task's timeout as
/// `statement_timeout`, and a cancel (or the worker's timeout) sent to the server as `PQcancel`.
enum SQLTaskRunner {
    /// Rows a result keeps at most (and within `maxResultBytes`).
    static let maxRows = 1000

    static func run(_ spec: SQLTaskSpec, _ ctx: TaskContext, timeout: Double?) async throws -> JSONValue {
        let url = try ctx.connection(spec.connection)
        let values = SQLScript.values(runId: ctx.runId, logicalDate: ctx.logicalDate, dataIntervalStart: ctx.dataIntervalStart,
                                      dataIntervalEnd: ctx.dataIntervalEnd, params: ctx.params)
        let names = Array(ctx.params.keys)
        // Every template is bound before anything runs: an unknown name fails the try untouched.
        let statements = SQLScript.statements(spec.sql), later = SQLScript.statements(spec.afterCopy ?? "")
        let bound = try statements.map { try SQLScript.bind($0.text, values: values, params: names) }
        let boundLater = try later.map { try SQLScript.bind($0.text, values: values, params: names) }
        let copy = try spec.copy.map { c in (path: ctx.dataPath(try SQLScript.render(c.path, values: values, params: names)), statement: try copyStatement(c)) }

        var options = PGOptions(statementTimeout: timeout, replyTimeout: (timeout ?? 7 * 86_400) + 60)
        options.connectTimeout = 10
        let conn = PGConnection(url, label: "sql-task", options: options)
        defer { conn.close() }
        let source = spec.file.map { " of \($0)" } ?? ""
        ctx.log("SQL on connection `\(spec.connection)`: \(statements.count) statement\(statements.count == 1 ? "" : "s")\(source)"
                + (copy.map { ", then loading \($0.path)" + (later.isEmpty ? "" : " and \(later.count) more") } ?? "")
                + (spec.transaction ? ", in one transaction" : ", each on its own")
                + (timeout.map { ", statement_timeout \($0)s" } ?? ""))
        let flags = Flags()
        defer { flags.finished.store(true, ordering: .relaxed) }
        do {
            return try await withTaskCancellationHandler {
                try await connectRetrying(ctx: ctx, connection: spec.connection, flags: flags) { try await conn.run { s in
                    let body = { () throws -> JSONValue in
                        func execute(_ bound: [SQLScript.Bound], _ statements: [SQLScript.Statement], script: String, file: String?) throws -> PGResult? {
                            var last: PGResult?
                            for (k, b) in bound.enumerated() {
                                if flags.stop.load(ordering: .relaxed) { throw CancellationError() }
                                do {
                                    let r = try s.executeOnce(b.sql, b.values)
                                    ctx.log("statement \(k + 1)\(file.map { " of \($0)" } ?? ""): "
                                            + (r.returnsRows ? "\(r.count) rows" : "\(r.affectedRows) rows affected"))
                                    last = r
                                } catch let e as PGError {
                                    throw SQLTaskError(e, statement: k, of: bound.count, bound: b, script: script,
                                                       offset: statements[k].offset, file: file, timeout: timeout)
                                }
                            }
                            return last
                        }
                        var last = try execute(bound, statements, script: spec.sql, file: spec.file)
                        var copied: Int?
                        if let copy {
                            copied = try copyFile(s, path: copy.path, statement: copy.statement, flags: flags)
                            ctx.log("copied \(copied!) rows from \(copy.path) into \(spec.copy!.table)")
                            last = try execute(boundLater, later, script: spec.afterCopy ?? "", file: "afterCopy") ?? last
                        }
                        return result(last, copied: copied, shape: spec.returning ?? .rows)
                    }
                    return spec.transaction ? try s.transaction(body) : try body()
                } }
            } onCancel: {
                // The statement may not have been sent yet when the cancel comes: ask again
                // until the call returns (a cancel with nothing running does nothing).
                flags.stop.store(true, ordering: .relaxed)
                Task.detached {
                    while !flags.finished.load(ordering: .relaxed) {
                        conn.cancelRunning()
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                }
            }
        } catch let e as SQLTaskError where e.sqlState == "57014" && flags.stop.load(ordering: .relaxed) {
            // Cancelled by us (the run's cancel or the worker's timeout), not by statement_timeout.
            _ = e
            throw CancellationError()
        }
    }

    /// Waits (1, 2, 4, 8 s) between attempts to connect, as dbt-postgres's `retries` does: a
    /// database that restarts or fails over for a few seconds costs the task a wait, not a retry
    /// of the whole try after its delay. Only a failure to connect is tried again: nothing of the
    /// task reached the server then.
    static func connectRetrying<T>(ctx: TaskContext, connection: String, flags: Flags, _ attempt: () async throws -> T) async throws -> T {
        var wait = 1.0
        while true {
            do {
                return try await attempt()
            } catch let e as PGError where e.notConnected && wait <= 8 && !flags.stop.load(ordering: .relaxed) && !ctx.isCancelled {
                ctx.log("could not connect to `\(connection)` (\(e.message.split(separator: "\n").first ?? "")); trying again in \(Int(wait)) s")
                try await Task.sleep(for: .seconds(wait))
                wait *= 2
            }
        }
    }

    /// `COPY table FROM STDIN WITH (…)` for `c`; the table must be a (schema-qualified) name,
    /// optionally with a column list.
    static func copyStatement(_ c: SQLCopy) throws -> String {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "_.\"(), $"))
        guard !c.table.isEmpty, c.table.unicodeScalars.allSatisfy(allowed.contains) else {
            throw TaskError("`into: \(c.table)` is not a table name (schema.table, optionally with a column list)")
        }
        return "COPY \(c.table) FROM STDIN WITH (\(c.format.copyOptions))"
    }

    /// Set by a cancel, and once the statements are done.
    final class Flags: Sendable {
        let stop = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
    }

    static func copyFile(_ s: PGSession, path: String, statement: String, flags: Flags) throws -> Int {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw TaskError("cannot open \(path) to load it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        do {
            return try s.copyIn(statement) { buffer in
                if flags.stop.load(ordering: .relaxed) { throw CancellationError() }
                let n = read(fd, buffer.baseAddress, buffer.count)
                if n < 0 { throw TaskError("reading \(path) failed: \(String(cString: strerror(errno)))") }
                return n
            }
        } catch let e as PGError {
            // COPY's context names the line of the file: "COPY air_quality, line 3, column no2: …".
            let f = e.fields
            var msg = "loading \(path) failed: ERROR \(e.sqlState ?? "?"): \(f?.primary ?? e.message)"
            if let ctx = f?.context { msg += " (\(ctx))" }
            if let d = f?.detail { msg += "; \(d)" }
            throw TaskError(msg)
        }
    }

    /// The task's result from the last statement's: rows (typed, capped) or rows affected; or,
    /// with `.firstRow`, its first row as an object.
    static func result(_ r: PGResult?, copied: Int?, shape: SQLResultShape) -> JSONValue {
        if shape == .firstRow {
            guard let r, let row = r.rows.first else { return .object([:]) }
            return .object(Dictionary(zip(r.columns, zip(row, r.columnTypes).map { typed($0, $1) }), uniquingKeysWith: { a, _ in a }))
        }
        var out: [String: JSONValue] = [:]
        if let copied { out["rowsCopied"] = .int(copied) }
        guard let r else { return .object(out) }
        guard r.returnsRows else {
            out["rowsAffected"] = .int(r.affectedRows)
            return .object(out)
        }
        out["columns"] = .array(r.columns.map { .string($0) })
        out["rowCount"] = .int(r.count)
        // Rows while they fit: at most `maxRows`, and the whole result within the result cap.
        let budget = maxResultBytes - JSONValue.object(out).compactJSON.utf8.count - 64
        var rows: [JSONValue] = [], used = 0
        for row in r.rows.prefix(maxRows) {
            // One type per column (PGResult reads them with the columns).
            let v = JSONValue.array(zip(row, r.columnTypes).map { typed($0, $1) })
            let size = v.compactJSON.utf8.count + 1
            if used + size > budget { break }
            rows.append(v)
            used += size
        }
        out["rows"] = .array(rows)
        out["truncated"] = .bool(rows.count < r.count)
        return .object(out)
    }

    /// A column's text as JSON, by its type: integers, floats and numerics as numbers,
    /// booleans, json/jsonb as JSON, anything else as text.
    static func typed(_ text: String?, _ oid: UInt32) -> JSONValue {
        guard let text else { return .null }
        switch oid {
        case 20, 21, 23, 26: return Int(text).map { .int($0) } ?? .string(text)
        case 700, 701, 1700:
            if let i = Int(text) { return .int(i) }
            if let d = Double(text), d.isFinite { return .double(d) }
            return .string(text)
        case 16: return .bool(text == "t")
        case 114, 3802: return (try? JSONValue.parse(text)) ?? .string(text)
        default: return .string(text)
        }
    }
}

/// A SQL task's statement failed: PostgreSQL's message, SQLSTATE and where in the script —
/// never the statement's text (it may be long, and the log has it).
struct SQLTaskError: Error, CustomStringConvertible {
    let description: String
    let sqlState: String?

    init(_ e: PGError, statement k: Int, of n: Int, bound: SQLScript.Bound, script: String, offset: Int, file: String?, timeout: Double?) {
        sqlState = e.sqlState
        guard let f = e.fields else {
            description = "statement \(k + 1) of \(n): \(e)"
            return
        }
        var place = "statement \(k + 1) of \(n)"
        if let p = f.position, p >= 1 {
            let inStatement = p - 1 < bound.origin.count ? bound.origin[p - 1] : (bound.origin.last ?? 0)
            let (line, column) = SQLScript.lineAndColumn(script, offset: offset + inStatement)
            place += ", line \(line) column \(column)"
        }
        if let file { place += " of \(file)" }
        var msg = "\(place): ERROR \(e.sqlState ?? "?"): \(f.primary)"
        if e.sqlState == "57014", let timeout, f.primary.contains("statement timeout") {
            msg = "\(place): timed out after \(timeout)s (statement_timeout): \(f.primary)"
        }
        if let d = f.detail { msg += "; \(d)" }
        if let h = f.hint { msg += " (hint: \(h))" }
        description = msg
    }
}
