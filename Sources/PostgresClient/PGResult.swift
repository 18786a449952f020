public import Foundation

/// The rows a statement returned, in text format.
public struct PGResult: Sendable {
    public let columns: [String]
    public let rows: [[String?]]
    /// Rows the statement changed (INSERT/UPDATE/DELETE), when it reports them.
    public let affectedRows: Int
    /// Each column's type OID (`pg_type.oid`), for readers that turn text into typed values.
    public let columnTypes: [UInt32]
    /// True for a statement that returns rows (a SELECT, `RETURNING`), even none.
    public let returnsRows: Bool
    let index: [String: Int]

    init(columns: [String], rows: [[String?]], affectedRows: Int, columnTypes: [UInt32] = [], returnsRows: Bool = false) {
        self.columns = columns
        self.rows = rows
        self.affectedRows = affectedRows
        self.columnTypes = columnTypes
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
    public subscript(i: Int) -> PGRow { PGRow(values: rows[i], index: index, columns: columns) }
    public var all: [PGRow] { rows.map { PGRow(values: $0, index: index, columns: columns) } }
    public var first: PGRow? { rows.first.map { PGRow(values: $0, index: index, columns: columns) } }
}

/// One row, read by column name with typed accessors.
public struct PGRow: Sendable {
    let values: [String?]
    let index: [String: Int]
    let columns: [String]

    static let linearLookupLimit = 16

    public func string(_ column: String) -> String? {
        // A few columns: comparing short names (stored inline) beats hashing them.
        if columns.count <= Self.linearLookupLimit {
            for i in columns.indices where columns[i] == column { return values[i] }
            return nil
        }
        guard let i = index[column] else { return nil }
        return values[i]
    }
    public func int(_ column: String) -> Int? { string(column).flatMap { Int($0) } }
    public func double(_ column: String) -> Double? { string(column).flatMap { Double($0) } }
    public func bool(_ column: String) -> Bool? { string(column).map { $0 == "t" || $0 == "true" } }
    public func date(_ column: String) -> Date? { string(column).flatMap(PGTime.parse) }
    /// A `text[]` column.
    public func strings(_ column: String) -> [String] {
        guard let s = string(column), s.count >= 2 else { return [] }
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
