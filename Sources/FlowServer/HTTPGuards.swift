import FlowKit
import Foundation
import Hummingbird
public import NIOCore
import NIOHTTPTypes

/// Answers what the router does not know with the API's JSON error: 404 for a path no route
/// has, 405 (with `Allow`) for a path that exists under other methods. Hummingbird's own
/// answer is an empty 404 for both. (HEAD of a GET route is the GET without its body: the router
/// generates those endpoints.)
struct RouteFallbackMiddleware: RouterMiddleware {
    typealias Context = FlowRequestContext
    /// The routes as their resources declared them.
    let access: RouteAccessTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            let path = request.uri.path
            let allowed = Self.methods(for: path, in: access.routes)
            // Airflow's API answers in its own shape, `{"detail": …}`.
            let answer: (APIError) -> Response = { e in
                APIErrorMiddleware.speaksAirflow(path) ? airflowJSON(["detail": .string(e.message)], status: e.status) : errorJSON(e)
            }
            if allowed.isEmpty {
                return answer(APIError(.notFound, "not_found",
                                       "no route `\(request.method) \(path)`: the API's routes are listed at /api/v1/openapi.json"))
            }
            var r = answer(APIError(.methodNotAllowed, "method_not_allowed",
                                    "`\(path)` answers \(allowed.joined(separator: ", ")), not \(request.method)"))
            r.headers[.allow] = allowed.joined(separator: ", ")
            return r
        }
    }

    /// The methods routed for `path` (`{name}` in a pattern matches any one segment).
    static func methods(for path: String, in routes: [(method: String, path: String)]) -> [String] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        var found: [String] = []
        for r in routes {
            let pattern = r.path.split(separator: "/", omittingEmptySubsequences: true)
            guard pattern.count == segments.count else { continue }
            if zip(pattern, segments).allSatisfy({ p, s in p.hasPrefix("{") || p == s }), !found.contains(r.method) {
                found.append(r.method)
            }
        }
        if found.contains("GET") && !found.contains("HEAD") { found.append("HEAD") }
        return found
    }
}

/// How long a client may take to send a request, and how many connections one address may hold.
public struct ConnectionLimits: Sendable {
    /// From connecting, or from the end of the previous response, to the end of the request's
    /// headers; also how long an idle keep-alive connection stays open.
    public var headerTimeout: TimeAmount = .seconds(20)
    /// From the end of the headers to the end of the body.
    public var bodyTimeout: TimeAmount = .seconds(60)
    /// Open connections per client IP address; 0 means no limit. Further connections get a 429.
    public var perClient: Int = 256
    public init() {}
}

/// Counts open connections per client address, across all of a server's connections.
final class ClientConnections: @unchecked Sendable {
    private let lock = NSLock()
    private var open: [String: Int] = [:]
    let limit: Int
    init(limit: Int) { self.limit = limit }

    /// Counts a new connection; false when the address already holds `limit`.
    func opened(_ address: String) -> Bool {
        lock.withLock {
            let n = open[address, default: 0]
            if limit > 0 && n >= limit { return false }
            open[address] = n + 1
            return true
        }
    }

    func closed(_ address: String) {
        lock.withLock {
            let n = (open[address] ?? 1) - 1
            open[address] = n > 0 ? n : nil
        }
    }
}

/// Closes a connection whose client sends its headers or body too slowly (a slow-loris holds
/// a connection for ever otherwise), and answers 429 to connections over the per-address limit.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limits: ConnectionLimits
    let clients: ClientConnections
    private var address: String?
    private var counted = false
    private var refused = false
    private var answered = false
    private var timer: Scheduled<Void>?

    init(limits: ConnectionLimits, clients: ClientConnections) {
        self.limits = limits
        self.clients = clients
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { stop() }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard address == nil else { return }
        let a = context.channel.remoteAddress?.ipAddress ?? "unknown"
        address = a
        counted = clients.opened(a)
        refused = !counted
        arm(context, limits.headerTimeout)
    }

    private func stop() {
        timer?.cancel()
        timer = nil
        if counted, let address { clients.closed(address) }
        counted = false
    }

    private func arm(_ context: ChannelHandlerContext, _ after: TimeAmount) {
        timer?.cancel()
        timer = context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: after) {
            self.timer = nil
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if refused {
            if case .head = part { refuse(context) }
            return
        }
        switch part {
        case .head: arm(context, limits.bodyTimeout)
        case .body: break
        case .end: timer?.cancel(); timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context, limits.headerTimeout) }
        context.write(data, promise: promise)
    }

    private func refuse(_ context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        timer?.cancel()
        let body: JSONValue = ["error": "too_many_connections",
                               "message": .string("this address already holds \(clients.limit) connections to the API; close some or reuse them")]
        let bytes = ByteBuffer(string: body.compactJSON)
        var head = HTTPResponse(status: .tooManyRequests)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = String(bytes.readableBytes)
        head.headerFields[.connection] = "close"
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(bytes)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolatedUnsafeUnchecked().whenComplete { _ in context.close(promise: nil) }
    }
}
