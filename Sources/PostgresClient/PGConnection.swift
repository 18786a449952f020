import CLibPQ
import ConnectionThread
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One PostgreSQL connection through libpq, owned by a thread of its own.
///
/// Every libpq call happens on the connection's own thread, never on the Swift concurrency
/// pool. `run` hands a synchronous `PGSession` to a closure, so several statements — a whole
/// transaction — cost one hop:
///
/// ```swift
/// let db = PGConnection("postgres://flowkit@127.0.0.1/flowkit")
/// let n = try await db.run { s in try s.query("select count(*) as n from runs").first?.int("n") }
/// ```
///
/// `conninfo` is anything libpq accepts: a `postgres://` URL or a keyword string, including
/// several hosts (`host=a,b target_session_attrs=read-write`) for a failover pair. A lost
/// connection is re-established on the next `run`, with backoff between failed attempts.
public final class PGConnection: @unchecked Sendable {
    public let conninfo: String
    private let thread: ConnectionThread
    private var conn: OpaquePointer?
    private var failedAttempts = 0
    private var nextAttempt = Date.distantPast
    private var listening: [String] = []
    /// Statements prepared on the current session, by SQL text (only touched on the connection's thread).
    fileprivate var prepared: [String: String] = [:]

    public init(_ conninfo: String, label: String = "pg") {
        self.conninfo = conninfo
        self.thread = ConnectionThread(name: "flowkit-\(label)")
    }

    deinit {
        if let conn { PQfinish(conn) }
        thread.stop()
    }

    /// Runs `body` on the connection's thread with a live session.
    @discardableResult
    public func run<T: Sendable>(_ body: @escaping @Sendable (PGSession) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            thread.submit {
                do {
                    let session = try self.session()
                    let value = try body(session)
                    cont.resume(returning: value)
                } catch let e as PGError {
                    if e.isConnectionLoss { self.drop() }
                    cont.resume(throwing: e)
                } catch {
                    cont.resume(throwing: error)
                }
            }
        }
    }

    /// Closes the connection (a later `run` opens it again).
    public func close() {
        thread.sync { self.drop() }
    }

    private func drop() {
        if let conn { PQfinish(conn) }
        conn = nil
        prepared = [:]
    }

    private func session() throws -> PGSession {
        if let conn, PQstatus(conn) == CONNECTION_OK { return PGSession(conn: conn, owner: self) }
        drop()
        let now = Date()
        if now < nextAttempt {
            throw PGError(.connection, "waiting \(String(format: "%.1f", nextAttempt.timeIntervalSince(now)))s before reconnecting (\(failedAttempts) failed attempts)")
        }
        guard let c = PQconnectdb(conninfo) else { throw PGError(.connection, "out of memory") }
        if PQstatus(c) != CONNECTION_OK {
            let msg = String(cString: PQerrorMessage(c))
            PQfinish(c)
            failedAttempts += 1
            let backoff = min(5.0, 0.05 * pow(2, Double(min(failedAttempts, 10))))
            nextAttempt = now.addingTimeInterval(backoff)
            throw PGError(.connection, msg)
        }
        failedAttempts = 0
        nextAttempt = .distantPast
        conn = c
        let s = PGSession(conn: c, owner: self)
        _ = try s.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET client_min_messages = 'warning'")
        for channel in listening { _ = try s.execute("LISTEN \(PGSession.quoteIdentifier(channel))") }
        return s
    }

    fileprivate func rememberListen(_ channel: String) {
        if !listening.contains(channel) { listening.append(channel) }
    }
}

/// A notification received through LISTEN.
public struct PGNotification: Sendable {
    public let channel: String
    public let payload: String
}

/// The synchronous face of a connection, valid only inside `PGConnection.run`.
public struct PGSession {
    let conn: OpaquePointer
    fileprivate unowned let owner: PGConnection

    fileprivate init(conn: OpaquePointer, owner: PGConnection) {
        self.conn = conn
        self.owner = owner
    }

    /// Runs one parameterized statement (`$1`, `$2`, … in the SQL). Each distinct SQL text is
    /// prepared once per session, so hot statements are not parsed and planned again.
    @discardableResult
    public func query(_ sql: String, _ params: [any PGEncodable] = []) throws -> PGResult {
        let name: String
        if let n = owner.prepared[sql] {
            name = n
        } else {
            name = "fk\(owner.prepared.count + 1)"
            _ = try consume(PQprepare(conn, name, sql, Int32(params.count), nil))
            owner.prepared[sql] = name
        }
        let texts = params.map { $0.pgText }
        let cStrings = texts.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let pointers: [UnsafePointer<CChar>?] = cStrings.map { $0.map { UnsafePointer($0) } }
        let res = pointers.withUnsafeBufferPointer { buf in
            PQexecPrepared(conn, name, Int32(params.count), buf.baseAddress, nil, nil, 0)
        }
        return try consume(res)
    }

    /// Runs one or more statements without parameters (migrations, `SET`, `LISTEN`).
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        try consume(PQexec(conn, sql))
    }

    private func consume(_ res: OpaquePointer?) throws -> PGResult {
        guard let res else { throw PGError(.connection, String(cString: PQerrorMessage(conn))) }
        defer { PQclear(res) }
        switch PQresultStatus(res) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            let nf = Int(PQnfields(res)), nt = Int(PQntuples(res))
            var columns: [String] = []
            columns.reserveCapacity(nf)
            for f in 0..<nf { columns.append(String(cString: PQfname(res, Int32(f)))) }
            var rows: [[String?]] = []
            rows.reserveCapacity(nt)
            for r in 0..<nt {
                var row: [String?] = []
                row.reserveCapacity(nf)
                for f in 0..<nf {
                    if PQgetisnull(res, Int32(r), Int32(f)) == 1 { row.append(nil) } else {
                        row.append(String(cString: PQgetvalue(res, Int32(r), Int32(f))))
                    }
                }
                rows.append(row)
            }
            let affected = Int(String(cString: PQcmdTuples(res))) ?? 0
            return PGResult(columns: columns, rows: rows, affectedRows: affected)
        default:
            let message = String(cString: PQresultErrorMessage(res))
            let state = PQresultErrorField(res, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            if PQstatus(conn) != CONNECTION_OK { throw PGError(.connection, message, sqlState: state) }
            throw PGError(.query, message, sqlState: state)
        }
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let v = try body()
            try execute("COMMIT")
            return v
        } catch {
            if PQstatus(conn) == CONNECTION_OK { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Subscribes this connection to `channel`; kept across reconnections.
    public func listen(_ channel: String) throws {
        try execute("LISTEN \(Self.quoteIdentifier(channel))")
        owner.rememberListen(channel)
    }

    /// Waits up to `timeout` seconds for notifications on the channels this connection listens to.
    public func waitForNotifications(timeout: Double) throws -> [PGNotification] {
        var out = drainNotifications()
        if !out.isEmpty { return out }
        var pfd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, Int32(timeout * 1000))
        if n > 0 {
            if PQconsumeInput(conn) == 0 { throw PGError(.connection, String(cString: PQerrorMessage(conn))) }
            out = drainNotifications()
        }
        if PQstatus(conn) != CONNECTION_OK { throw PGError(.connection, "connection lost while waiting for notifications") }
        return out
    }

    private func drainNotifications() -> [PGNotification] {
        var out: [PGNotification] = []
        PQconsumeInput(conn)
        while let n = PQnotifies(conn) {
            out.append(PGNotification(channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra)))
            PQfreemem(n)
        }
        return out
    }

    static func quoteIdentifier(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
}
