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
    /// Statements queued by `PGSession.enqueue`, sent with the next statement that needs a result.
    fileprivate var deferred: [PGStatement] = []
    /// Whether the session runs with `plan_cache_mode = force_generic_plan` (see `PGSession.plans`).
    fileprivate var genericPlans = false
    /// Whether this `run` changed the plan mode: after a failure it is reset to the default.
    fileprivate var planModeTouched = false

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
                    self.planModeTouched = false
                    let value: T
                    do {
                        value = try body(session)
                        try session.flush()
                    } catch {
                        self.deferred = []
                        if self.planModeTouched, let conn = self.conn, PQstatus(conn) == CONNECTION_OK, PQtransactionStatus(conn) == PQTRANS_IDLE {
                            _ = try? session.execute("SET plan_cache_mode = auto")
                        }
                        self.genericPlans = false
                        throw error
                    }
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
        deferred = []
        genericPlans = false
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

/// A statement with its parameters in text form.
struct PGStatement {
    var sql: String
    var params: [String?]
    var size: Int { params.reduce(sql.utf8.count) { $0 + ($1?.utf8.count ?? 0) } }
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
    /// prepared once per session, so hot statements are not parsed and planned again. Statements
    /// queued with `enqueue` go first, in the same round trip.
    @discardableResult
    public func query(_ sql: String, _ params: [any PGEncodable] = []) throws -> PGResult {
        try queries([(sql, params)])[0]
    }

    /// Runs several statements in one round trip (libpq's pipeline mode), after any queued ones;
    /// returns their results in order. The first failure is thrown, and later statements do not run.
    public func queries(_ statements: [(String, [any PGEncodable])]) throws -> [PGResult] {
        let mine = statements.map { PGStatement(sql: $0.0, params: $0.1.map(\.pgText)) }
        let queued = owner.deferred
        owner.deferred = []
        let all = queued + mine
        let results: [PGResult]
        if all.count == 1 {
            results = [try single(all[0])]
        } else if all.reduce(0, { $0 + $1.size }) > Self.pipelineByteLimit {
            // Large parameters go one by one: a pipeline whose sends and replies both fill the
            // socket buffers would block both sides (libpq's pipeline-mode caveat).
            results = try all.map(single)
        } else {
            results = try pipeline(all)
        }
        return Array(results.suffix(mine.count))
    }

    /// Queues a statement whose result is not needed: it is sent with the next `query`, or when
    /// the transaction commits, or at the end of `PGConnection.run` — one round trip for all.
    /// Its failure is thrown by whichever of those sends it.
    public func enqueue(_ sql: String, _ params: [any PGEncodable] = []) {
        owner.deferred.append(PGStatement(sql: sql, params: params.map(\.pgText)))
    }

    /// Sends the queued statements now.
    public func flush() throws {
        guard !owner.deferred.isEmpty else { return }
        _ = try queries([])
    }

    static let pipelineByteLimit = 128 * 1024

    /// Runs `body` with generic plans (`generic` true) or PostgreSQL's default choice. A custom
    /// plan is made again at every execution — 70–80 µs for the scheduler's array joins, most of
    /// a statement's cost when it touches one task — while a generic plan, made for unknown array
    /// sizes, is disastrous for ten thousand elements. Callers choose by batch size. The `SET`s
    /// travel in the pipeline, costing no round trip.
    public func plans<T>(generic: Bool, _ body: () throws -> T) rethrows -> T {
        let previous = owner.genericPlans
        if previous != generic {
            owner.planModeTouched = true
            enqueue("SET plan_cache_mode = \(generic ? "force_generic_plan" : "auto")")
            owner.genericPlans = generic
        }
        defer {
            if previous != generic {
                enqueue("SET plan_cache_mode = \(previous ? "force_generic_plan" : "auto")")
                owner.genericPlans = previous
            }
        }
        return try body()
    }

    private func preparedName(_ sql: String, paramCount: Int) throws -> String {
        if let n = owner.prepared[sql] { return n }
        let name = "fk\(owner.prepared.count + 1)"
        _ = try consume(PQprepare(conn, name, sql, Int32(paramCount), nil))
        owner.prepared[sql] = name
        return name
    }

    private func withParams<R>(_ params: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        let cStrings = params.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let pointers: [UnsafePointer<CChar>?] = cStrings.map { $0.map { UnsafePointer($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
    }

    private func single(_ st: PGStatement) throws -> PGResult {
        let name = try preparedName(st.sql, paramCount: st.params.count)
        let res = withParams(st.params) { PQexecPrepared(conn, name, Int32(st.params.count), $0, nil, nil, 0) }
        return try consume(res)
    }

    private func pipeline(_ statements: [PGStatement]) throws -> [PGResult] {
        guard PQenterPipelineMode(conn) == 1 else { throw PGError(.connection, "cannot enter pipeline mode: \(errorText)") }
        defer { PQexitPipelineMode(conn) }
        enum Expect { case prepare(String, String), statement }
        var expected: [Expect] = []
        var preparing: [String: String] = [:]
        for st in statements {
            var name = owner.prepared[st.sql] ?? preparing[st.sql]
            if name == nil {
                let n = "fk\(owner.prepared.count + preparing.count + 1)"
                guard PQsendPrepare(conn, n, st.sql, Int32(st.params.count), nil) == 1 else { throw lostOrFailed("prepare") }
                preparing[st.sql] = n
                expected.append(.prepare(st.sql, n))
                name = n
            }
            let sent = withParams(st.params) { PQsendQueryPrepared(conn, name!, Int32(st.params.count), $0, nil, nil, 0) }
            guard sent == 1 else { throw lostOrFailed("send") }
            expected.append(.statement)
        }
        guard PQpipelineSync(conn) == 1 else { throw lostOrFailed("sync") }
        var results: [PGResult] = []
        var firstError: PGError?
        for e in expected {
            guard let res = PQgetResult(conn) else { throw lostOrFailed("read") }
            let status = PQresultStatus(res)
            if status == PGRES_PIPELINE_ABORTED {
                PQclear(res)
            } else if case .prepare(let sql, let name) = e {
                do { _ = try consume(res); owner.prepared[sql] = name } catch let err as PGError { firstError = firstError ?? err }
            } else {
                do { results.append(try consume(res)) } catch let err as PGError { firstError = firstError ?? err }
            }
            // Each statement's results end with a null result.
            while let extra = PQgetResult(conn) { PQclear(extra) }
        }
        guard let sync = PQgetResult(conn) else { throw lostOrFailed("sync") }
        let syncStatus = PQresultStatus(sync)
        PQclear(sync)
        if let firstError { throw firstError }
        guard syncStatus == PGRES_PIPELINE_SYNC else { throw PGError(.connection, "pipeline did not end with a sync: \(errorText)") }
        return results
    }

    private var errorText: String { String(cString: PQerrorMessage(conn)) }

    /// A pipeline that broke off half-way leaves the session unusable: reported as a connection
    /// loss, so `PGConnection.run` drops it and the next run reconnects.
    private func lostOrFailed(_ step: String) -> PGError {
        PGError(.connection, "pipeline \(step) failed: \(errorText)")
    }

    /// Runs one or more statements without parameters (migrations, `SET`, `LISTEN`).
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        try flush()
        return try consume(PQexec(conn, sql))
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
    /// `BEGIN` travels with the first statement and `COMMIT` with the last queued ones.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try flush()
        enqueue("BEGIN")
        do {
            let v = try body()
            enqueue("COMMIT")
            try flush()
            return v
        } catch {
            owner.deferred = []
            if PQstatus(conn) == CONNECTION_OK, PQtransactionStatus(conn) != PQTRANS_IDLE { _ = try? execute("ROLLBACK") }
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
