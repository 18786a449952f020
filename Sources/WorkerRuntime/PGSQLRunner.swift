public import FlowKit
import Foundation
import PostgresClient

/// The SQL sensor's runner on a worker: one short-lived libpq connection per poke, with a
/// statement timeout, so a sensor never holds a connection between pokes.
public struct PGSQLRunner: SQLRunner {
    var statementTimeout: Double = 30

    public init() {}

    public func rows(connection: String, sql: String, limit: Int) async throws -> [[String: String?]] {
        let conn = PGConnection(connection, label: "sql-sensor", options: PGOptions(statementTimeout: statementTimeout))
        defer { conn.close() }
        let result = try await conn.run { s in try s.execute(sql) }
        return result.rows.prefix(limit).map { values in
            Dictionary(zip(result.columns, values), uniquingKeysWith: { first, _ in first })
        }
    }
}
