import Foundation

/// Where a connection goes, when a transaction-mode pooler (PgBouncer) stands in front of
/// PostgreSQL: ordinary work through the pooler, and what needs a session of its own — `LISTEN`,
/// session advisory locks (the leader's), migrations — straight to the server.
///
/// `PGEndpoint.pooled(pooler, session: direct)` makes one conninfo string that carries both, so
/// that everything built from `FLOWKIT_DATABASE_URL` finds the session endpoint where it needs one
/// (`PGEndpoint.session(_:)`) without every constructor taking a second URL. A `PGConnection` on
/// a pooled conninfo talks as transaction pooling allows (unnamed statements; no session `SET`:
/// the zone and date style travel as startup parameters, the timeouts as `SET LOCAL` in every
/// transaction) and refuses what it does not (`PGError.misuse` naming the statement).
public enum PGEndpoint {
    static let prefix = "flowkit-pooled:"

    /// A conninfo for `pooler` (transaction pooling) whose sessions go to `session`.
    public static func pooled(_ pooler: String, session: String) -> String {
        let json = try! JSONSerialization.data(withJSONObject: [pooler, session])
        return prefix + json.base64EncodedString()
    }

    /// The conninfo libpq gets and whether it is transaction-pooled.
    static func resolve(_ conninfo: String) -> (conninfo: String, pooled: Bool) {
        guard let parts = parts(conninfo) else { return (conninfo, false) }
        return (parts.pooler, true)
    }

    /// The conninfo of a session of its own: the direct one of a pooled conninfo, else itself.
    public static func session(_ conninfo: String) -> String {
        parts(conninfo)?.session ?? conninfo
    }

    public static func isPooled(_ conninfo: String) -> Bool { parts(conninfo) != nil }

    private static func parts(_ conninfo: String) -> (pooler: String, session: String)? {
        guard conninfo.hasPrefix(prefix), let data = Data(base64Encoded: String(conninfo.dropFirst(prefix.count))),
              let list = try? JSONSerialization.jsonObject(with: data) as? [String], list.count == 2 else { return nil }
        return (list[0], list[1])
    }

    /// Why `sql` cannot run on a transaction-pooled connection, or nil when it can. `inTransaction`:
    /// whether it runs inside BEGIN … COMMIT (where `SET LOCAL` and xact locks are fine).
    static func sessionOnly(_ sql: String, inTransaction: Bool) -> String? {
        let head = sql.drop { $0 == " " || $0 == "\n" || $0 == "\t" }.prefix(40).uppercased()
        if head.hasPrefix("LISTEN") { return "LISTEN needs a session of its own" }
        if head.hasPrefix("PREPARE ") { return "a named prepared statement lives in one session" }
        if head.hasPrefix("SET ") && !head.hasPrefix("SET LOCAL ") && !head.hasPrefix("SET TRANSACTION") {
            return inTransaction ? "a session SET outlives the transaction on a pooled server connection (use SET LOCAL)"
                : "a session SET outside a transaction lands on whichever server connection the pooler lends"
        }
        let lower = sql.lowercased()
        for f in ["pg_advisory_lock(", "pg_try_advisory_lock(", "pg_advisory_lock_shared(", "pg_try_advisory_lock_shared(", "pg_advisory_unlock"]
        where lower.contains(f) {
            return "a session advisory lock (\(f.dropLast())) is held by one server connection, which the pooler lends to others (use pg_advisory_xact_lock)"
        }
        if lower.contains("with hold") && head.hasPrefix("DECLARE") { return "a cursor WITH HOLD outlives its transaction" }
        return nil
    }
}
