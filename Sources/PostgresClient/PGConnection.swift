import CLibPQ
import ConnectionThread
import Synchronization
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How a connection bounds its waits and what it asks of the server for every session.
///
/// ```swift
/// var o = PGOptions()
/// o.statementTimeout = 10      // API requests: no statement runs longer than this
/// let db = PGPool(url, size: 8, options: o)
/// ```
public struct PGOptions: Sendable {
    /// Seconds after which PostgreSQL ends a session left idle inside a transaction (the server
    /// logs it; the client's next call fails with the statement it ran last). nil: server default.
    public var idleInTransactionTimeout: Double? = 30
    /// Seconds a statement may run (lock waits included) before the server cancels it. nil: no limit.
    public var statementTimeout: Double?
    /// Seconds the client waits for any answer of the server before it gives the connection up.
    public var replyTimeout: Double = 300
    /// Seconds to establish a connection.
    public var connectTimeout: Int = 10

    public init(idleInTransactionTimeout: Double? = 30, statementTimeout: Double? = nil, replyTimeout: Double = 300) {
        self.idleInTransactionTimeout = idleInTransactionTimeout
        self.statementTimeout = statementTimeout
        self.replyTimeout = replyTimeout
    }

    /// The `SET`s every new session runs.
    var sessionSettings: String {
        var s = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET client_min_messages = 'warning'"
        if let t = idleInTransactionTimeout { s += "; SET idle_in_transaction_session_timeout = \(Int(t * 1000))" }
        if let t = statementTimeout { s += "; SET statement_timeout = \(Int(t * 1000))" }
        return s
    }
}

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
/// connection is re-established on the next `run`, with backoff between failed attempts; a
/// connection the server closed while idle (a restart) is noticed before it is used.
///
/// Liveness: every wait for the server is bounded by `PGOptions.replyTimeout`, and a `run`
/// never returns with a transaction open or statements still queued.
public final class PGConnection: @unchecked Sendable {
    public let conninfo: String
    public let options: PGOptions
    /// What libpq connects to, and whether it is a transaction-mode pooler (`PGEndpoint`).
    private let target: String
    fileprivate let pooled: Bool
    private let thread: ConnectionThread
    private var conn: OpaquePointer?
    private var failedAttempts = 0
    private var nextAttempt = Date.distantPast
    private var listening: [String] = []
    /// Statements prepared on the current session, by SQL text (only touched on the connection's thread).
    fileprivate var prepared: [String: String] = [:]
    /// Statements queued by `PGSession.enqueue`, sent with the next statement that needs a result.
    fileprivate var deferred: [PGStatement] = []
    /// Notifications to send once the open transaction has committed (`PGSession.notifyAfterCommit`),
    /// and those whose transaction has committed, sent when the `run`'s body is done.
    fileprivate var pendingNotifications: [PGNotification] = []
    fileprivate var readyNotifications: [PGNotification] = []
    fileprivate var inTransaction = false
    /// Whether this `run` sent something that may have committed (a COMMIT, or a write outside a
    /// transaction): after a connection loss it must not be run again.
    fileprivate var mayHaveCommitted = false
    /// The last statement sent; its first line names it in error messages (`lastStatement`).
    fileprivate var lastSQL = ""
    fileprivate var lastStatement: String { Self.firstLine(lastSQL) }
    /// Statements sent, when `traceStatements` is on (tests look at what a transaction contains).
    fileprivate var trace: [String]?
    /// Whether the session runs with `plan_cache_mode = force_generic_plan` (see `PGSession.plans`).
    fileprivate var genericPlans = false
    /// Whether this `run` changed the plan mode: after a failure it is reset to the default.
    fileprivate var planModeTouched = false

    /// The current session's cancel handle (`PQgetCancel`), usable from any thread.
    private let canceller = Mutex<CancelHandle?>(nil)

    /// `application_name` in `pg_stat_activity`: the connection's label and the process id, so
    /// that a session seen waiting names the process and the duty behind it.
    private let applicationName: String

    public init(_ conninfo: String, label: String = "pg", options: PGOptions = PGOptions()) {
        self.applicationName = String("flowkit-\(label) pid \(getpid())".prefix(63))
        self.conninfo = conninfo
        self.options = options
        (self.target, self.pooled) = PGEndpoint.resolve(conninfo)
        if pooled { Self.setPooledStartupParameters() }
        self.thread = ConnectionThread(name: "flowkit-\(label)")
    }

    deinit {
        if let conn { PQfinish(conn) }
        thread.stop()
    }

    /// Runs `body` on the connection's thread with a live session. When the connection turns
    /// out to be dead before anything could have committed, `body` runs once more on a fresh one.
    @discardableResult
    public func run<T: Sendable>(_ body: @escaping @Sendable (PGSession) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            thread.submit {
                do {
                    cont.resume(returning: try self.runNow(body, retryOnLoss: true))
                } catch {
                    cont.resume(throwing: error)
                }
            }
        }
    }

    private func runNow<T>(_ body: (PGSession) throws -> T, retryOnLoss: Bool) throws -> T {
        do {
            let session = try self.session()
            planModeTouched = false
            mayHaveCommitted = false
            do {
                let value = try body(session)
                try session.flush()
                try checkClean(session)
                session.sendReadyNotifications()
                return value
            } catch {
                deferred = []
                pendingNotifications = []
                readyNotifications = []
                inTransaction = false
                if let conn, PQstatus(conn) == CONNECTION_OK {
                    if PQtransactionStatus(conn) != PQTRANS_IDLE { _ = try? session.execute("ROLLBACK") }
                    if planModeTouched, PQtransactionStatus(conn) == PQTRANS_IDLE { _ = try? session.execute("SET plan_cache_mode = auto") }
                }
                genericPlans = false
                if var decoding = error as? PGDecodingError, decoding.table == nil, decoding.tableOID != 0 {
                    // Name the table: the error path can afford one catalog read.
                    decoding.table = try? session.query("SELECT relname FROM pg_class WHERE oid = $1", [Int(decoding.tableOID)])
                        .first?.stringOrNull("relname")
                    throw decoding
                }
                throw error
            }
        } catch let e as PGError where e.isConnectionLoss {
            let replay = retryOnLoss && !mayHaveCommitted && conn != nil
            drop()
            if replay { return try runNow(body, retryOnLoss: false) }
            throw e
        }
    }

    /// A `run` must leave the session as it found it: no transaction open, nothing queued.
    /// Anything else is a bug that would hold row locks until the server's idle timeout: the
    /// transaction is rolled back and the call fails with `.misuse`, naming the last statement.
    private func checkClean(_ s: PGSession) throws {
        guard let conn else { return }
        let open = PQtransactionStatus(conn) != PQTRANS_IDLE
        guard open || !deferred.isEmpty || inTransaction else { return }
        let what = open ? "a transaction open" : "statements still queued"
        let last = lastStatement
        deferred = []
        inTransaction = false
        if open { _ = try? s.execute("ROLLBACK") }
        throw PGError(.misuse, "a run returned with \(what) (last statement: \(last)); rolled back")
    }

    /// Closes the connection (a later `run` opens it again).
    public func close() {
        thread.sync { self.drop() }
    }

    /// Checks, on the connection's thread, that an idle connection is still alive, and drops it
    /// when the server has closed it (after a restart): the next `run` then connects at once.
    public func revalidate() {
        thread.submit { self.dropIfClosedByServer() }
    }

    /// Turns recording of sent statements on or off (for tests), returning what was recorded.
    @discardableResult
    public func traceStatements(_ on: Bool) -> [String] {
        thread.sync {
            let out = self.trace ?? []
            self.trace = on ? [] : nil
            return out
        }
    }

    /// Asks the server to cancel what this connection's session is running now (`PQcancel`),
    /// from any thread; the statement then fails with SQLSTATE 57014. Nothing happens when no
    /// session exists or nothing runs.
    public func cancelRunning() {
        canceller.withLock { h in
            guard let c = h?.pointer else { return }
            var err = [CChar](repeating: 0, count: 256)
            _ = PQcancel(c, &err, Int32(err.count))
        }
    }

    private func drop() {
        canceller.withLock { $0 = nil }
        if let conn { PQfinish(conn) }
        conn = nil
        prepared = [:]
        deferred = []
        pendingNotifications = []
        readyNotifications = []
        inTransaction = false
        genericPlans = false
    }

    private func dropIfClosedByServer() {
        guard let conn else { return }
        var pfd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        // Readable while idle: a notification, or the server's goodbye (57P01) and EOF.
        if poll(&pfd, 1, 0) > 0 {
            if PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK { drop() }
        }
    }

    private func session() throws -> PGSession {
        dropIfClosedByServer()
        if let conn, PQstatus(conn) == CONNECTION_OK { return PGSession(conn: conn, owner: self) }
        drop()
        let now = Date()
        if now < nextAttempt {
            throw PGError(.connection, "waiting \(String(format: "%.1f", nextAttempt.timeIntervalSince(now)))s before reconnecting (\(failedAttempts) failed attempts)",
                          notConnected: true)
        }
        // Defaults first: whatever `conninfo` says overrides them.
        let keys = ["connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                    "application_name", "dbname"]
        let values = [String(options.connectTimeout), "1", "30", "10", "3", String(Int(options.replyTimeout * 1000)), applicationName, target]
        let c: OpaquePointer? = withCStrings(keys) { k in withCStrings(values) { v in PQconnectdbParams(k, v, 1) } }
        guard let c else { throw PGError(.connection, "out of memory", notConnected: true) }
        if PQstatus(c) != CONNECTION_OK {
            let msg = String(cString: PQerrorMessage(c))
            PQfinish(c)
            failedAttempts += 1
            let backoff = min(5.0, 0.05 * pow(2, Double(min(failedAttempts, 10))))
            nextAttempt = Date().addingTimeInterval(backoff)
            throw PGError(.connection, msg, notConnected: true)
        }
        failedAttempts = 0
        nextAttempt = .distantPast
        conn = c
        canceller.withLock { $0 = PQgetCancel(c).map(CancelHandle.init) }
        let s = PGSession(conn: c, owner: self)
        // Through a transaction pooler a session SET would land on one server connection of many:
        // the zone and date style went as startup parameters (PgBouncer sets them on whichever
        // server connection it lends); the timeouts go with every transaction (`transaction`).
        if !pooled { _ = try s.execute(options.sessionSettings) }
        for channel in listening { _ = try s.execute("LISTEN \(PGSession.quoteIdentifier(channel))") }
        return s
    }

    /// libpq sends PGTZ and PGDATESTYLE as the startup parameters `timezone` and `datestyle`,
    /// which PgBouncer tracks per client: what `sessionSettings` SETs on a direct session.
    private static let startupParameters: Void = {
        setenv("PGTZ", "UTC", 1)
        setenv("PGDATESTYLE", "ISO", 1)
    }()
    static func setPooledStartupParameters() { _ = startupParameters }

    fileprivate func rememberListen(_ channel: String) {
        if !listening.contains(channel) { listening.append(channel) }
    }

    /// Called for every statement sent: it only keeps a reference to the text (a W2 hop sends
    /// ~15 statements, and cutting out each one's first line cost more than its parameters).
    fileprivate func noteSent(_ sql: String) {
        lastSQL = sql
        if trace != nil { trace?.append(lastStatement) }
    }

    static func firstLine(_ sql: String) -> String {
        let line = sql.split(separator: "\n", maxSplits: 1).first.map { String($0.prefix(160)) } ?? ""
        return line.trimmingCharacters(in: .whitespaces)
    }
}

/// libpq's cancel object, freed with it.
private final class CancelHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ p: OpaquePointer) { pointer = p }
    deinit { PQfreeCancel(pointer) }
}

/// NULL-terminated C string arrays for libpq's `…Params` calls.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let c = strings.map { strdup($0) }
    defer { c.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = c.map { $0.map { UnsafePointer($0) } } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// A statement with its parameters in text form.
struct PGStatement {
    var sql: String
    var params: [String?]
    /// Called with the statement's result, for queued statements whose result matters only sometimes.
    var onResult: ((PGResult) throws -> Void)?
    var size: Int { params.reduce(sql.utf8.count) { $0 + ($1?.utf8.count ?? 0) } }
}

/// A notification received through LISTEN, or one to send.
public struct PGNotification: Sendable, Equatable {
    public let channel: String
    public let payload: String
    public init(channel: String, payload: String) {
        self.channel = channel
        self.payload = payload
    }
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
        try queries(statements, tail: [])
    }

    /// `queries`, with `tail` sent in the same round trip after them, its failures ignored.
    private func queries(_ statements: [(String, [any PGEncodable])], tail: [PGStatement]) throws -> [PGResult] {
        let mine = statements.map { PGStatement(sql: $0.0, params: $0.1.map(\.pgText), onResult: nil) }
        let queued = owner.deferred
        owner.deferred = []
        let all = queued + mine
        try noteSending(all)
        if !tail.isEmpty { try noteSending(tail) }
        let results: [PGResult]
        if all.reduce(0, { $0 + $1.size }) > Self.pipelineByteLimit {
            // Large parameters go one by one: a pipeline whose sends and replies both fill the
            // socket buffers would block both sides (libpq's pipeline-mode caveat).
            results = try all.map(single)
            if !tail.isEmpty { _ = try? pipeline(tail) }
        } else if all.count == 1 && tail.isEmpty {
            results = [try single(all[0])]
        } else {
            results = try pipeline(all, tail: tail)
        }
        var named: [PGResult] = []
        named.reserveCapacity(results.count)
        for (st, r) in zip(all, results) {
            var r = r
            r.statement = st.sql
            try st.onResult?(r)
            named.append(r)
        }
        return Array(named.suffix(mine.count))
    }

    /// Queues a statement whose result is not needed: it is sent with the next `query`, or when
    /// the transaction commits, or at the end of `PGConnection.run` — one round trip for all.
    /// Its failure is thrown by whichever of those sends it.
    /// `onResult`, when given, sees the statement's result once it arrives (no extra round trip).
    public func enqueue(_ sql: String, _ params: [any PGEncodable] = [], onResult: ((PGResult) throws -> Void)? = nil) {
        owner.deferred.append(PGStatement(sql: sql, params: params.map(\.pgText), onResult: onResult))
    }

    /// Sends the queued statements now.
    public func flush() throws {
        guard !owner.deferred.isEmpty else { return }
        _ = try queries([])
    }

    /// Sends `NOTIFY channel, payload` once the current transaction has committed (at once
    /// outside a transaction), in a transaction of its own that does not wait for the WAL flush.
    ///
    /// PostgreSQL serialises every committing transaction that notified on one global lock, held
    /// until its commit — WAL flush included — is over. A NOTIFY inside a write transaction thus
    /// lines up every trigger, finalisation and cancel behind each other's disk flushes, and the
    /// row locks they hold behind that. A wake-up is a hint (the listeners also poll), so it
    /// travels apart from the data and may be lost in a crash; duplicates are folded.
    public func notifyAfterCommit(_ channel: String, _ payload: String) {
        let n = PGNotification(channel: channel, payload: payload)
        if owner.inTransaction {
            if !owner.pendingNotifications.contains(n) { owner.pendingNotifications.append(n) }
        } else if !owner.readyNotifications.contains(n) {
            owner.readyNotifications.append(n)
        }
    }

    /// Sends the notifications whose transactions committed. A failure here changes nothing
    /// that was committed, so it is not the caller's failure: the listeners' polling covers it.
    /// `NOTIFY` for each of `list`, in a transaction that does not wait for the WAL flush.
    static func notifyStatements(_ list: [PGNotification]) -> [PGStatement] {
        [PGStatement(sql: "BEGIN", params: [], onResult: nil),
         PGStatement(sql: "SET LOCAL synchronous_commit = off", params: [], onResult: nil),
         PGStatement(sql: "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS u(c, p)",
                     params: [list.map(\.channel).pgText, list.map(\.payload).pgText], onResult: nil),
         PGStatement(sql: "COMMIT", params: [], onResult: nil)]
    }

    func sendReadyNotifications() {
        let list = owner.readyNotifications
        guard !list.isEmpty else { return }
        owner.readyNotifications = []
        do {
            let statements = Self.notifyStatements(list)
            try noteSending(statements)
            _ = try pipeline(statements)
        } catch {
            owner.deferred = []
            if PQstatus(conn) == CONNECTION_OK, PQtransactionStatus(conn) != PQTRANS_IDLE { _ = try? execute("ROLLBACK") }
        }
    }

    static let pipelineByteLimit = 128 * 1024

    /// Runs `body` with generic plans (`generic` true) or PostgreSQL's default choice. A custom
    /// plan is made again at every execution — 70–80 µs for the scheduler's array joins, most of
    /// a statement's cost when it touches one task — while a generic plan, made for unknown array
    /// sizes, is disastrous for ten thousand elements. Callers choose by batch size. The `SET`s
    /// travel in the pipeline, costing no round trip.
    public func plans<T>(generic: Bool, _ body: () throws -> T) rethrows -> T {
        // Unnamed statements (a pooled connection's) are planned at each bind: nothing to choose.
        if owner.pooled { return try body() }
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

    /// Records what is about to be sent: whether it may commit something (then a lost
    /// connection must not replay the run), and the statement for error messages.
    private func noteSending(_ statements: [PGStatement]) throws {
        var inBlock = PQtransactionStatus(conn) != PQTRANS_IDLE
        if owner.pooled {
            var block = inBlock || owner.inTransaction
            for st in statements {
                if Self.starts(st.sql, "BEGIN") { block = true } else if Self.starts(st.sql, "COMMIT") || Self.starts(st.sql, "ROLLBACK") { block = false }
                if let why = PGEndpoint.sessionOnly(st.sql, inTransaction: block) {
                    throw PGError(.misuse, "`\(PGConnection.firstLine(st.sql))` cannot run through a transaction pooler: \(why); "
                                  + "what needs a session goes over FLOWKIT_DATABASE_DIRECT_URL")
                }
            }
        }
        for st in statements {
            owner.noteSent(st.sql)
            let sql = st.sql
            if Self.starts(sql, "BEGIN") { inBlock = true; continue }
            if Self.starts(sql, "COMMIT") { owner.mayHaveCommitted = true; inBlock = false; continue }
            if !inBlock && !(Self.starts(sql, "SELECT") || Self.starts(sql, "SET") || Self.starts(sql, "LISTEN") || Self.starts(sql, "SHOW")) {
                owner.mayHaveCommitted = true
            }
        }
    }

    /// Whether `sql` starts with the keyword `upper` (ASCII, any case), without Foundation.
    static func starts(_ sql: String, _ upper: StaticString) -> Bool {
        var it = sql.utf8.makeIterator()
        let n = upper.utf8CodeUnitCount
        return upper.withUTF8Buffer { k in
            for i in 0..<n {
                guard let b = it.next(), b & 0xDF == k[i] else { return false }
            }
            return true
        }
    }

    private func preparedName(_ sql: String, paramCount: Int) throws -> String {
        if let n = owner.prepared[sql] { return n }
        let name = "fk\(owner.prepared.count + 1)"
        guard PQsendPrepare(conn, name, sql, Int32(paramCount), nil) == 1 else { throw PGError(.connection, errorText) }
        _ = try collect()
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
        let sent: Int32
        if owner.pooled {
            // A pooler lends another server connection to the next transaction: no named statement survives.
            sent = withParams(st.params) { PQsendQueryParams(conn, st.sql, Int32(st.params.count), nil, $0, nil, nil, 0) }
        } else {
            let name = try preparedName(st.sql, paramCount: st.params.count)
            sent = withParams(st.params) { PQsendQueryPrepared(conn, name, Int32(st.params.count), $0, nil, nil, 0) }
        }
        guard sent == 1 else { throw PGError(.connection, errorText) }
        RoundTrips.postgres.add(1, ordering: .relaxed)
        return try collect()
    }

    /// Waits, at most the connection's `replyTimeout`, until libpq has a result to hand out.
    /// libpq's own calls would wait forever for a server that never answers.
    private func awaitResult() throws {
        // A monotonic clock: a step of the wall clock (NTP, a resumed VM) must not end the wait early.
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(owner.options.replyTimeout * 1000)))
        while PQisBusy(conn) == 1 {
            let remaining = ContinuousClock.now.duration(to: deadline).components
            let left = Double(remaining.seconds) + Double(remaining.attoseconds) / 1e18
            if left <= 0 {
                throw PGError(.timeout, "no answer within \(Int(owner.options.replyTimeout))s to `\(owner.lastStatement)`")
            }
            var pfd = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
            let n = poll(&pfd, 1, Int32(min(left, 1) * 1000))
            if n < 0 && errno != EINTR { throw PGError(.connection, "poll failed: \(String(cString: strerror(errno)))") }
            if n > 0, PQconsumeInput(conn) == 0 { throw PGError(.connection, errorText) }
        }
    }

    private func nextResult() throws -> OpaquePointer? {
        try awaitResult()
        return PQgetResult(conn)
    }

    /// Reads every result of the statement sent last; returns the last one, or throws the first error.
    private func collect() throws -> PGResult {
        var last: PGResult?
        var firstError: PGError?
        while let res = try nextResult() {
            do { last = try consume(res) } catch let e as PGError { firstError = firstError ?? e }
        }
        if let firstError { throw firstError }
        if PQstatus(conn) != CONNECTION_OK { throw PGError(.connection, errorText) }
        return last ?? PGResult(columns: [], rows: [], affectedRows: 0)
    }

    /// Sends `statements`, then — after a sync, so that nothing of theirs can abort it — `tail`,
    /// in one round trip. The results and the first failure are `statements`'; the tail's
    /// failures are ignored (it carries hints: the notifications of a commit in the same trip).
    private func pipeline(_ statements: [PGStatement], tail: [PGStatement] = []) throws -> [PGResult] {
        guard PQenterPipelineMode(conn) == 1 else { throw PGError(.connection, "cannot enter pipeline mode: \(errorText)") }
        RoundTrips.postgres.add(1, ordering: .relaxed)
        enum Expect { case prepare(String, String), statement }
        var preparing: [String: String] = [:]
        func send(_ list: [PGStatement]) throws -> [Expect] {
            var expected: [Expect] = []
            for st in list {
                if owner.pooled {
                    guard withParams(st.params, { PQsendQueryParams(conn, st.sql, Int32(st.params.count), nil, $0, nil, nil, 0) }) == 1 else {
                        throw lostOrFailed("send")
                    }
                    expected.append(.statement)
                    continue
                }
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
            return expected
        }
        let segments = [try send(statements)] + (tail.isEmpty ? [] : [try send(tail)])
        var results: [PGResult] = []
        var firstError: PGError?
        var syncStatus = PGRES_PIPELINE_SYNC
        for (index, expected) in segments.enumerated() {
            for e in expected {
                guard let res = try nextResult() else { throw lostOrFailed("read") }
                let status = PQresultStatus(res)
                if status == PGRES_PIPELINE_ABORTED {
                    PQclear(res)
                } else if case .prepare(let sql, let name) = e {
                    do { _ = try consume(res); owner.prepared[sql] = name } catch let err as PGError where index == 0 { firstError = firstError ?? err } catch {}
                } else {
                    do {
                        let r = try consume(res)
                        if index == 0 { results.append(r) }
                    } catch let err as PGError where index == 0 { firstError = firstError ?? err } catch {}
                }
                // Each statement's results end with a null result.
                while let extra = try nextResult() { PQclear(extra) }
            }
            guard let sync = try nextResult() else { throw lostOrFailed("sync") }
            if index == 0 { syncStatus = PQresultStatus(sync) }
            PQclear(sync)
        }
        // A pipeline still busy cannot be left: the session is then unusable (reported as lost).
        guard PQexitPipelineMode(conn) == 1 else { throw lostOrFailed("exit") }
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
        try noteSending([PGStatement(sql: sql, params: [], onResult: nil)])
        guard PQsendQuery(conn, sql) == 1 else { throw PGError(.connection, errorText) }
        RoundTrips.postgres.add(1, ordering: .relaxed)
        var result = try collect()
        result.statement = sql
        return result
    }

    /// Runs one statement with text parameters as an unnamed statement, not prepared and
    /// remembered: for statements a user wrote (a SQL task's), which run once.
    @discardableResult
    public func executeOnce(_ sql: String, _ params: [String?]) throws -> PGResult {
        try flush()
        try noteSending([PGStatement(sql: sql, params: params, onResult: nil)])
        let sent = withParams(params) { PQsendQueryParams(conn, sql, Int32(params.count), nil, $0, nil, nil, 0) }
        guard sent == 1 else { throw PGError(.connection, errorText) }
        RoundTrips.postgres.add(1, ordering: .relaxed)
        var result = try collect()
        result.statement = sql
        return result
    }

    /// `COPY … FROM STDIN` (`sql`), its data read from `read` (which fills the buffer it is
    /// given and returns the bytes it put there, 0 at the end). Returns the rows copied.
    public func copyIn(_ sql: String, read: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        try flush()
        try noteSending([PGStatement(sql: sql, params: [], onResult: nil)])
        guard PQsendQueryParams(conn, sql, 0, nil, nil, nil, nil, 0) == 1 else { throw PGError(.connection, errorText) }
        RoundTrips.postgres.add(1, ordering: .relaxed)
        guard let first = try nextResult() else { throw PGError(.connection, errorText) }
        guard PQresultStatus(first) == PGRES_COPY_IN else {
            // Refused before any data (no such table, a bad option): the error, then the end.
            var failure: (any Error)?
            do { _ = try consume(first) } catch { failure = error }
            while let more = try nextResult() { PQclear(more) }
            if let failure { throw failure }
            throw PGError(.query, "`\(PGConnection.firstLine(sql))` did not start a COPY FROM STDIN")
        }
        PQclear(first)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var readError: (any Error)?
        while true {
            let n: Int
            do { n = try buffer.withUnsafeMutableBytes { try read($0) } } catch { readError = error; break }
            if n == 0 { break }
            let put = buffer.withUnsafeBytes { PQputCopyData(conn, $0.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(n)) }
            guard put == 1 else { throw PGError(.connection, errorText) }
        }
        let reason = readError.map { "reading the data failed: \($0)" }
        guard PQputCopyEnd(conn, reason) == 1 else { throw PGError(.connection, errorText) }
        let result = try collect()
        if let readError { throw readError }
        return result.affectedRows
    }

    private func consume(_ res: OpaquePointer) throws -> PGResult {
        defer { PQclear(res) }
        switch PQresultStatus(res) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            let nf = Int(PQnfields(res)), nt = Int(PQntuples(res))
            var columns: [String] = [], types: [UInt32] = [], tables: [UInt32] = []
            columns.reserveCapacity(nf)
            types.reserveCapacity(nf)
            tables.reserveCapacity(nf)
            for f in 0..<nf {
                columns.append(String(cString: PQfname(res, Int32(f))))
                types.append(UInt32(PQftype(res, Int32(f))))
                tables.append(UInt32(PQftable(res, Int32(f))))
            }
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
            return PGResult(columns: columns, rows: rows, affectedRows: affected, columnTypes: types,
                            columnTables: tables, returnsRows: PQresultStatus(res) == PGRES_TUPLES_OK)
        default:
            var message = String(cString: PQresultErrorMessage(res))
            func field(_ code: Character) -> String? {
                PQresultErrorField(res, Int32(code.asciiValue!)).map { String(cString: $0) }
            }
            let state = field("C")
            let fields = field("M").map {
                PGError.Fields(primary: $0, detail: field("D"), hint: field("H"), context: field("W"), position: field("P").flatMap { Int($0) })
            }
            if state == "25P03" || state == "57014" {
                // Say which statement the server gave up on (or was left waiting after).
                message += " (last statement: `\(owner.lastStatement)`)"
            }
            if PQstatus(conn) != CONNECTION_OK { throw PGError(.connection, message, sqlState: state, fields: fields) }
            throw PGError(.query, message, sqlState: state, fields: fields)
        }
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    /// `BEGIN` travels with the first statement and `COMMIT` with the last queued ones;
    /// notifications asked for inside it follow the commit (`notifyAfterCommit`).
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        precondition(!owner.inTransaction, "PGSession.transaction does not nest")
        try flush()
        enqueue("BEGIN")
        owner.inTransaction = true
        if owner.pooled {
            if let t = owner.options.statementTimeout { enqueue("SET LOCAL statement_timeout = \(Int(t * 1000))") }
            if let t = owner.options.idleInTransactionTimeout { enqueue("SET LOCAL idle_in_transaction_session_timeout = \(Int(t * 1000))") }
        }
        do {
            let v = try body()
            enqueue("COMMIT")
            // The notifications asked for so far travel in the commit's round trip, in a
            // transaction of their own after it (see `notifyAfterCommit`); those the commit's
            // own results ask for follow at the end of the run.
            let early = owner.pendingNotifications
            owner.pendingNotifications = []
            _ = try queries([], tail: early.isEmpty ? [] : Self.notifyStatements(early))
            owner.inTransaction = false
            owner.readyNotifications += owner.pendingNotifications.filter { n in !early.contains(n) && !owner.readyNotifications.contains(n) }
            owner.pendingNotifications = []
            return v
        } catch {
            owner.deferred = []
            owner.pendingNotifications = []
            owner.inTransaction = false
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
