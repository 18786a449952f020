public import Foundation

/// The rows a statement returned, in text format.
public struct PGResult: Sendable {
    public let columns: [String]
    public let rows: [[String?]]
    /// Rows the statement changed (INSERT/UPDATE/DELETE), when it reports them.
    public let affectedRows: Int
    /// Each column's type OID (`pg_type.oid`), for readers that turn text into typed values.
    public let columnTypes: [UInt32]
    /// Each column's table OID (`pg_class.oid`; 0 for a computed column), for errors that name it.
    public let columnTables: [UInt32]
    /// True for a statement that returns rows (a SELECT, `RETURNING`), even none.
    public let returnsRows: Bool
    /// The statement's text, for errors that name it.
    public internal(set) var statement: String = ""
    let index: [String: Int]

    init(columns: [String], rows: [[String?]], affectedRows: Int, columnTypes: [UInt32] = [],
         columnTables: [UInt32] = [], returnsRows: Bool = false) {
        self.columns = columns
        self.rows = rows
        self.affectedRows = affectedRows
        self.columnTypes = columnTypes
        self.columnTables = columnTables
        self.returnsRows = returnsRows
        // Rows of a few columns find them by comparing names (`PGRow.string`); only wide results need a table.
        var idx: [String: Int] = [:]
        if columns.count > PGRow.linearLookupLimit {
            for (i, c) in columns.enumerated() where idx[c] == nil { idx[c] = i }
        }
        self.index = idx
    }

    public var count: Int { rows.count }
    public var isEmpty: Bool { rows.isEmpty }
    public subscript(i: Int) -> PGRow { row(rows[i]) }
    public var all: [PGRow] { rows.map(row) }
    public var first: PGRow? { rows.first.map(row) }

    func row(_ values: [String?]) -> PGRow {
        PGRow(values: values, index: index, columns: columns, tables: columnTables, statement: statement)
    }

    /// The only row of a statement that must return one (`INSERT … RETURNING`, an aggregate):
    /// an error naming the statement when it returned none.
    public func single() throws(PGDecodingError) -> PGRow {
        guard let r = first else {
            throw PGDecodingError(column: "", tableOID: 0, statement: statement, problem: .noRow)
        }
        return r
    }
}

/// A column read that does not fit what the reader requires: a missing column, a NULL where a
/// value is required, or text that is not of the type asked for. It names the column, its table
/// (resolved to a name by `PGConnection.run` when the read happens inside it) and the statement.
public struct PGDecodingError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Problem: Sendable, Equatable {
        case missingColumn
        case null
        case wrongType(expected: String, text: String)
        case noRow
    }
    public let column: String
    public let tableOID: UInt32
    /// The table's name, once resolved (see `PGConnection.run`).
    public internal(set) var table: String?
    public let statement: String
    public let problem: Problem

    public init(column: String, tableOID: UInt32, table: String? = nil, statement: String, problem: Problem) {
        self.column = column
        self.tableOID = tableOID
        self.table = table
        self.statement = statement
        self.problem = problem
    }

    public var description: String {
        let sql = PGConnection.firstLine(statement)
        let shown = sql.count > 160 ? String(sql.prefix(160)) + "…" : sql
        let place: String
        if let table { place = "column \"\(column)\" of table \(table)" } else if tableOID != 0 {
            place = "column \"\(column)\" of table oid \(tableOID)"
        } else { place = "column \"\(column)\"" }
        switch problem {
        case .missingColumn: return "\(place) is not in the result of `\(shown)`"
        case .null: return "\(place) is NULL where a value is required, in `\(shown)`"
        case .wrongType(let expected, let text):
            let t = text.count > 40 ? String(text.prefix(40)) + "…" : text
            return "\(place) holds \"\(t)\", not \(expected), in `\(shown)`"
        case .noRow: return "`\(shown)` returned no row where one is required"
        }
    }
}

/// One row, read by column name. Every read throws `PGDecodingError` when the column is
/// missing or its text is not of the type asked for; `int`, `string`, … also when it is NULL,
/// while `intOrNull`, `stringOrNull`, … return nil for a NULL. Nothing is read with a default.
public struct PGRow: Sendable {
    let values: [String?]
    let index: [String: Int]
    let columns: [String]
    let tables: [UInt32]
    let statement: String

    static let linearLookupLimit = 16

    private func position(_ column: String) -> Int? {
        // A few columns: comparing short names (stored inline) beats hashing them.
        if columns.count <= Self.linearLookupLimit {
            for i in columns.indices where columns[i] == column { return i }
            return nil
        }
        return index[column]
    }

    private func failure(_ column: String, _ problem: PGDecodingError.Problem) -> PGDecodingError {
        let table = position(column).flatMap { $0 < tables.count ? tables[$0] : nil } ?? 0
        return PGDecodingError(column: column, tableOID: table, statement: statement, problem: problem)
    }

    /// Whether the result has `column` (for readers shared by statements with and without it).
    public func has(_ column: String) -> Bool { position(column) != nil }

    public func stringOrNull(_ column: String) throws(PGDecodingError) -> String? {
        guard let i = position(column) else { throw failure(column, .missingColumn) }
        return values[i]
    }
    public func string(_ column: String) throws(PGDecodingError) -> String {
        guard let v = try stringOrNull(column) else { throw failure(column, .null) }
        return v
    }

    /// The column parsed by `parse`, nil for a NULL; an error naming `expected` when `parse`
    /// returns nil (for types this file does not know: JSON, enums).
    public func parsedOrNull<T>(_ column: String, as expected: String, _ parse: (String) -> T?) throws(PGDecodingError) -> T? {
        try typed(column, expected, parse)
    }
    /// `parsedOrNull`, with NULL an error.
    public func parsed<T>(_ column: String, as expected: String, _ parse: (String) -> T?) throws(PGDecodingError) -> T {
        try required(column, typed(column, expected, parse))
    }

    private func typed<T>(_ column: String, _ expected: String, _ parse: (String) -> T?) throws(PGDecodingError) -> T? {
        guard let text = try stringOrNull(column) else { return nil }
        guard let v = parse(text) else { throw failure(column, .wrongType(expected: expected, text: text)) }
        return v
    }
    private func required<T>(_ column: String, _ value: T?) throws(PGDecodingError) -> T {
        guard let value else { throw failure(column, .null) }
        return value
    }

    public func intOrNull(_ column: String) throws(PGDecodingError) -> Int? { try typed(column, "an integer") { Int($0) } }
    public func int(_ column: String) throws(PGDecodingError) -> Int { try required(column, intOrNull(column)) }
    public func doubleOrNull(_ column: String) throws(PGDecodingError) -> Double? { try typed(column, "a number") { Double($0) } }
    public func double(_ column: String) throws(PGDecodingError) -> Double { try required(column, doubleOrNull(column)) }
    public func boolOrNull(_ column: String) throws(PGDecodingError) -> Bool? {
        try typed(column, "a boolean") { t in
            switch t {
            case "t", "true": return true
            case "f", "false": return false
            default: return nil
            }
        }
    }
    public func bool(_ column: String) throws(PGDecodingError) -> Bool { try required(column, boolOrNull(column)) }
    public func dateOrNull(_ column: String) throws(PGDecodingError) -> Date? { try typed(column, "a timestamp", PGTime.parse) }
    public func date(_ column: String) throws(PGDecodingError) -> Date { try required(column, dateOrNull(column)) }
    /// A `text[]` column; NULL reads as no strings.
    public func strings(_ column: String) throws(PGDecodingError) -> [String] {
        try typed(column, "a text array", Self.parseArray) ?? []
    }

    static func parseArray(_ s: String) -> [String]? {
        guard s.count >= 2, s.first == "{", s.last == "}" else { return nil }
        let inner = s.dropFirst().dropLast()
        if inner.isEmpty { return [] }
        var out: [String] = [], cur = "", quoted = false, escape = false
        for ch in inner {
            if escape { cur.append(ch); escape = false; continue }
            if ch == "\\" { escape = true; continue }
            if ch == "\"" { quoted.toggle(); continue }
            if ch == "," && !quoted { out.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        out.append(cur)
        return out
    }
}
