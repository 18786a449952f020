import CHiredis
import ConnectionThread
import Synchronization
import Foundation

/// One Redis connection through hiredis, owned by a thread of its own.
///
/// Every hiredis call happens on the connection's own thread, never on the Swift concurrency
/// pool; `run` hands a synchronous `RedisSession` to a closure, so a pipeline costs one hop.
/// Blocking commands (`BLMOVE`, `XREADGROUP … BLOCK`) belong on a connection of their own.
///
/// ```swift
/// let redis = try RedisConnection(url: "redis://127.0.0.1:6379/0")
/// let n = try await redis.run { try $0.command("LLEN", "default").int }
/// ```
public final class RedisConnection: @unchecked Sendable {
    public let config: RedisConfig
    private let thread: ConnectionThread
    private var context: UnsafeMutablePointer<redisContext>?
    private var failedAttempts = 0
    private var nextAttempt = Date.distantPast
    /// Seconds a reply may take before the connection is considered dead.
    private let readTimeout: Double
    /// With Sentinel: the sentinels in the order to ask them (the last one that answered first,
    /// as Redis's Sentinel client guidelines say), and the master's address found last.
    private var sentinelOrder: [RedisConfig.RedisAddress]
    /// Written on the connection's thread, read from any: behind a lock. The master's address,
    /// and when this connection first reached a master other than the one before (a failover).
    private let master = Mutex<(address: String?, changedAt: ContinuousClock.Instant?)>((nil, nil))
    /// With Sentinel: the `host:port` of the master this connection reached last.
    public var masterAddress: String? { master.withLock { $0.address } }
    /// With Sentinel: when this connection last found the master moved (nil: never).
    public var lastMasterChange: ContinuousClock.Instant? { master.withLock { $0.changedAt } }

    /// With Sentinel: what runs on the connection's thread with the first session on a master
    /// other than the one before (a failover), before any caller's command runs on it.
    private let newMasterHook = Mutex<(@Sendable (RedisSession) -> Void)?>(nil)
    public func onNewMaster(_ hook: @escaping @Sendable (RedisSession) -> Void) { newMasterHook.withLock { $0 = hook } }

    /// Seconds since any of these connections found the master moved (nil: none has). A process
    /// holds several connections to one Redis; whichever saw the failover first tells.
    public static func secondsSinceMasterChange(_ connections: [RedisConnection]) -> Double? {
        guard let last = connections.compactMap(\.lastMasterChange).max() else { return nil }
        let d = ContinuousClock.now - last
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    public init(_ config: RedisConfig, label: String = "redis", readTimeout: Double = 30) {
        self.config = config
        self.thread = ConnectionThread(name: "flowkit-\(label)")
        self.readTimeout = readTimeout
        self.sentinelOrder = config.sentinels
        self.watch = config.masterName == nil ? nil : SentinelWatch.shared(for: config)
    }

    /// With Sentinel: where the sentinels say the master is now (asked twice a second by one
    /// thread per process), and the master this connection is on (its thread's own).
    private let watch: SentinelWatch?
    private var connectedTo: String?

    public convenience init(url: String, label: String = "redis", readTimeout: Double = 30) throws {
        self.init(try RedisConfig(url: url), label: label, readTimeout: readTimeout)
    }

    deinit {
        if let context { redisFree(context) }
        thread.stop()
    }

    @discardableResult
    public func run<T: Sendable>(_ body: @escaping @Sendable (RedisSession) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, any Error>) in
            thread.submit {
                do {
                    let s = try self.session()
                    cont.resume(returning: try body(s))
                } catch let e as RedisError {
                    // A master demoted by a failover answers writes with -READONLY: find the new one.
                    if e.kind != .reply || e.isReadOnly { self.drop() }
                    cont.resume(throwing: e)
                } catch {
                    cont.resume(throwing: error)
                }
            }
        }
    }

    /// Shorthand for one command.
    @discardableResult
    public func command(_ args: String...) async throws -> RedisValue {
        let a = args
        return try await run { try $0.command(a) }
    }

    public func close() { thread.sync { self.drop() } }

    private func drop() {
        if let context { redisFree(context) }
        context = nil
    }

    private func session() throws -> RedisSession {
        if let context, context.pointee.err == 0 {
            // The sentinels name another master: leave this one now. After a `SENTINEL FAILOVER`
            // the old master still answers, and takes writes it discards once the sentinels
            // demote it (up to 10 s later) — an error would come too late.
            guard let named = watch?.master, let connectedTo, named != connectedTo else {
                return RedisSession(context: context, replicas: config.waitReplicas)
            }
        }
        drop()
        let now = Date()
        if now < nextAttempt {
            throw RedisError(.connection, "\(config.displayName): waiting before reconnecting (\(failedAttempts) failed attempts)")
        }
        func failed(_ msg: String) -> RedisError {
            failedAttempts += 1
            // With Sentinel a failover is seconds long: retry sooner and more steadily.
            let cap = config.masterName == nil ? 5.0 : 0.5
            nextAttempt = now.addingTimeInterval(min(cap, 0.05 * pow(2, Double(min(failedAttempts, 10)))))
            return RedisError(.connection, "\(config.displayName): \(msg)")
        }
        var host = config.host, port = config.port
        if config.masterName != nil {
            do { (host, port) = try discoverMaster() } catch let e as RedisError { throw failed(e.message) }
        }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        let c: UnsafeMutablePointer<redisContext>? = config.unixSocket.map { redisConnectUnixWithTimeout($0, tv) }
            ?? redisConnectWithTimeout(host, Int32(port), tv)
        guard let c, c.pointee.err == 0 else {
            let msg = c.map { errorString($0) } ?? "cannot allocate a context"
            if let c { redisFree(c) }
            throw failed(config.masterName == nil ? msg : "master \(host):\(port): \(msg)")
        }
        tv = timeval(tv_sec: Int(readTimeout), tv_usec: 0)
        redisSetTimeout(c, tv)
        redisEnableKeepAlive(c)
        context = c
        let s = RedisSession(context: c, replicas: config.waitReplicas)
        var moved = false
        do {
            if let password = config.password {
                if let user = config.username { try s.command(["AUTH", user, password]).orThrow() } else {
                    try s.command(["AUTH", password]).orThrow()
                }
            }
            if config.database != 0 { try s.command(["SELECT", String(config.database)]).orThrow() }
            if config.masterName != nil {
                // The sentinels' view may be a moment old: the address must really be a master.
                let role = try s.command(["ROLE"]).orThrow()
                var what = "?"
                if case .array(let parts) = role { what = parts.first?.string ?? "?" }
                guard what == "master" else {
                    throw RedisError(.connection, "\(host):\(port) is not a master (ROLE: \(what)): asking the sentinels again")
                }
                let address = "\(host):\(port)"
                connectedTo = address
                moved = master.withLock { m in
                    defer { m.address = address }
                    guard let before = m.address, before != address else { return false }
                    m.changedAt = .now
                    return true
                }
            }
        } catch let e as RedisError {
            drop()
            throw e.kind == .connection ? failed(e.message) : e
        }
        failedAttempts = 0
        if moved, let hook = newMasterHook.withLock({ $0 }) { hook(s) }
        return s
    }

    private func discoverMaster() throws -> (String, Int) {
        guard let name = config.masterName else { return (config.host, config.port) }
        return try Self.askSentinels(&sentinelOrder, name: name, password: config.sentinelPassword)
    }

    /// Asks the sentinels, in order, for the master's address (`SENTINEL get-master-addr-by-name`);
    /// the first that answers moves to the front of the list.
    static func askSentinels(_ sentinelOrder: inout [RedisConfig.RedisAddress], name: String, password: String?) throws -> (String, Int) {
        var problems: [String] = []
        for (i, sentinel) in sentinelOrder.enumerated() {
            let tv = timeval(tv_sec: 0, tv_usec: 500_000)
            guard let c = redisConnectWithTimeout(sentinel.host, Int32(sentinel.port), tv) else { continue }
            defer { redisFree(c) }
            guard c.pointee.err == 0 else { problems.append("\(sentinel): \(errorString(c))"); continue }
            redisSetTimeout(c, tv)
            let s = RedisSession(context: c, replicas: nil)
            do {
                if let p = password { try s.command(["AUTH", p]).orThrow() }
                let reply = try s.command(["SENTINEL", "get-master-addr-by-name", name]).orThrow()
                guard case .array(let parts) = reply, parts.count == 2, let host = parts[0].string, let port = parts[1].string.flatMap({ Int($0) }) else {
                    problems.append("\(sentinel): does not know master `\(name)`")
                    continue
                }
                if i > 0 { sentinelOrder.remove(at: i); sentinelOrder.insert(sentinel, at: 0) }
                return (host, port)
            } catch {
                problems.append("\(sentinel): \(error)")
            }
        }
        throw RedisError(.connection, "no sentinel answered for master `\(name)` (\(problems.joined(separator: "; ")))")
    }
}

/// Where the sentinels say the master is, asked every half second by one thread per process and
/// Sentinel configuration, for every connection of that configuration to compare with its own.
final class SentinelWatch: Sendable {
    private static let all = Mutex<[String: SentinelWatch]>([:])
    static let interval = 0.5

    static func shared(for config: RedisConfig) -> SentinelWatch {
        let key = config.sentinels.map(\.description).joined(separator: ",") + "/" + (config.masterName ?? "")
        return all.withLock { watches in
            if let w = watches[key] { return w }
            let w = SentinelWatch()
            w.start(config)
            watches[key] = w
            return w
        }
    }

    private let named = Mutex<String?>(nil)
    /// The `host:port` the sentinels named last; nil until one answered.
    var master: String? { named.withLock { $0 } }

    private func start(_ config: RedisConfig) {
        let name = config.masterName ?? "", password = config.sentinelPassword, sentinels = config.sentinels
        let thread = Thread { [self] in
            var order = sentinels
            while true {
                if let (host, port) = try? RedisConnection.askSentinels(&order, name: name, password: password) {
                    named.withLock { $0 = "\(host):\(port)" }
                }
                Thread.sleep(forTimeInterval: Self.interval)
            }
        }
        thread.name = "flowkit-sentinel-watch"
        thread.start()
    }
}

extension RedisError {
    /// A write sent to a replica — after a failover, to the demoted master.
    public var isReadOnly: Bool { kind == .reply && message.hasPrefix("READONLY") }
}

func errorString(_ c: UnsafeMutablePointer<redisContext>) -> String {
    withUnsafeBytes(of: c.pointee.errstr) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// The synchronous face of a connection, valid only inside `RedisConnection.run`.
public struct RedisSession {
    let context: UnsafeMutablePointer<redisContext>
    /// With Sentinel: every call ends with `WAIT replicas.count replicas.millis` in the same round
    /// trip, so that what Redis acknowledged is on a replica too before the caller goes on (a
    /// failover promotes the replica furthest ahead: an acknowledged claim, event or ack survives).
    /// A call that wrote nothing returns at once.
    var replicas: RedisConfig.ReplicaWait? = nil

    /// Sends one command and reads its reply; an error reply comes back as `.error`.
    public func command(_ args: [String]) throws -> RedisValue {
        try append(args)
        try appendWait()
        RoundTrips.redis.add(1, ordering: .relaxed)
        let reply = try readReply()
        try readWait()
        return reply
    }

    private func appendWait() throws {
        if let r = replicas { try append(["WAIT", String(r.count), String(r.millis)]) }
    }

    /// WAIT's answer: the replicas that have the writes; fewer than asked, or an error, fails the
    /// call (Sentinel mode trades availability for not losing what was acknowledged, as Redis's
    /// `min-replicas-to-write` does). An error means this server is a replica now — a master demoted
    /// by a failover, whose data may be mid-resync: nothing read in this call is trusted, and the
    /// connection asks the sentinels again.
    private func readWait() throws {
        guard let r = replicas else { return }
        let reply = try readReply()
        if case .error(let m) = reply {
            throw RedisError(.connection, "the server stopped being the master (\(m)): asking the sentinels again")
        }
        // Fewer replicas than asked: the writes may be on this server alone — a master that a
        // failover is leaving behind, whose writes vanish when it is demoted. Not acknowledged:
        // the caller tries again, on the master the sentinels name by then.
        if case .integer(let n) = reply, n < r.count {
            throw RedisError(.connection, "only \(n) of \(r.count) replicas had this call's writes within \(r.millis) ms: not acknowledged, asking the sentinels again")
        }
    }

    public func command(_ args: String...) throws -> RedisValue { try command(args) }

    /// Sends every command, then reads every reply: one round trip.
    public func pipeline(_ commands: [[String]]) throws -> [RedisValue] {
        for c in commands { try append(c) }
        try appendWait()
        RoundTrips.redis.add(1, ordering: .relaxed)
        let replies = try commands.map { _ in try readReply() }
        try readWait()
        return replies
    }

    private func append(_ args: [String]) throws {
        let datas = args.map { Array($0.utf8) }
        var lengths = datas.map { Int($0.count) }
        let pointers = datas.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            bytes.withUnsafeBufferPointer { b in
                if let base = b.baseAddress { p.withMemoryRebound(to: UInt8.self, capacity: bytes.count) { $0.update(from: base, count: bytes.count) } }
            }
            return p
        }
        defer { pointers.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = pointers.map { UnsafePointer($0) }
        let rc = redisAppendCommandArgv(context, Int32(args.count), &argv, &lengths)
        if rc != REDIS_OK { throw RedisError(.connection, errorString(context)) }
    }

    private func readReply() throws -> RedisValue {
        var raw: UnsafeMutableRawPointer?
        if redisGetReply(context, &raw) != REDIS_OK || raw == nil {
            throw RedisError(.connection, errorString(context))
        }
        let reply = raw!.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return convert(reply)
    }

    private func convert(_ r: UnsafeMutablePointer<redisReply>) -> RedisValue {
        let p = r.pointee
        switch p.type {
        case REDIS_REPLY_STRING: return .string(text(p))
        case REDIS_REPLY_STATUS: return .status(text(p))
        case REDIS_REPLY_ERROR: return .error(text(p))
        case REDIS_REPLY_INTEGER: return .integer(Int(p.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            var out: [RedisValue] = []
            out.reserveCapacity(Int(p.elements))
            for i in 0..<Int(p.elements) { out.append(convert(p.element[i]!)) }
            return .array(out)
        default: return .null
        }
    }

    private func text(_ p: redisReply) -> String {
        guard let s = p.str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: s, count: Int(p.len)), as: UTF8.self)
    }
}

extension RedisValue {
    /// Throws when the reply is an error reply.
    @discardableResult
    public func orThrow() throws -> RedisValue {
        if case .error(let m) = self { throw RedisError(.reply, m) }
        return self
    }
}
