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

    public init(_ config: RedisConfig, label: String = "redis", readTimeout: Double = 30) {
        self.config = config
        self.thread = ConnectionThread(name: "flowkit-\(label)")
        self.readTimeout = readTimeout
    }

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
                    if e.kind != .reply { self.drop() }
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
        if let context, context.pointee.err == 0 { return RedisSession(context: context) }
        drop()
        let now = Date()
        if now < nextAttempt {
            throw RedisError(.connection, "\(config.displayName): waiting before reconnecting (\(failedAttempts) failed attempts)")
        }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        let c: UnsafeMutablePointer<redisContext>? = config.unixSocket.map { redisConnectUnixWithTimeout($0, tv) }
            ?? redisConnectWithTimeout(config.host, Int32(config.port), tv)
        guard let c, c.pointee.err == 0 else {
            let msg = c.map { errorString($0) } ?? "cannot allocate a context"
            if let c { redisFree(c) }
            failedAttempts += 1
            nextAttempt = now.addingTimeInterval(min(5.0, 0.05 * pow(2, Double(min(failedAttempts, 10)))))
            throw RedisError(.connection, "\(config.displayName): \(msg)")
        }
        tv = timeval(tv_sec: Int(readTimeout), tv_usec: 0)
        redisSetTimeout(c, tv)
        redisEnableKeepAlive(c)
        context = c
        let s = RedisSession(context: c)
        do {
            if let password = config.password {
                if let user = config.username { try s.command(["AUTH", user, password]).orThrow() } else {
                    try s.command(["AUTH", password]).orThrow()
                }
            }
            if config.database != 0 { try s.command(["SELECT", String(config.database)]).orThrow() }
        } catch {
            drop()
            throw error
        }
        failedAttempts = 0
        return s
    }
}

func errorString(_ c: UnsafeMutablePointer<redisContext>) -> String {
    withUnsafeBytes(of: c.pointee.errstr) { raw in
        String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// The synchronous face of a connection, valid only inside `RedisConnection.run`.
public struct RedisSession {
    let context: UnsafeMutablePointer<redisContext>

    /// Sends one command and reads its reply; an error reply comes back as `.error`.
    public func command(_ args: [String]) throws -> RedisValue {
        try append(args)
        RoundTrips.redis.add(1, ordering: .relaxed)
        return try readReply()
    }

    public func command(_ args: String...) throws -> RedisValue { try command(args) }

    /// Sends every command, then reads every reply: one round trip.
    public func pipeline(_ commands: [[String]]) throws -> [RedisValue] {
        for c in commands { try append(c) }
        RoundTrips.redis.add(1, ordering: .relaxed)
        return try commands.map { _ in try readReply() }
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
