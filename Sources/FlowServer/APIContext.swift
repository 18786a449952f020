public import FlowKit
import Foundation
public import Hummingbird
import HTTPTypes
import Logging
import Scheduler

/// The request context of every API route: Hummingbird's core storage, and who the caller is
/// once `Authenticate` has checked its token.
public struct FlowRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Who made the request (`anonymous` for an open read without a token, and for open routes).
    public var actor: String = "anonymous"

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}

/// Checks the request's token for the role its route declared, puts the caller in the context,
/// and runs the route with it as the actor of the store's audit entries (which the store writes
/// in the write's own transaction).
struct Authenticate: RouterMiddleware {
    typealias Context = FlowRequestContext
    let role: APIConfig.Role
    let auth: TokenAuthenticator

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        context.actor = try await auth.authorize(request, needs: role)
        let ready = context
        return try await WriteActor.$current.withValue(ready.actor) { try await next(request, ready) }
    }
}

/// Turns every error a route throws into the API's JSON error: the API's own, the store's
/// (not found, conflict, bad conf, bad request), Hummingbird's, and — logged, without details
/// for the client — anything else as a 500. Bad input never becomes a 500.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = FlowRequestContext
    let maxBodyBytes: Int
    let logger: Logger

    /// Airflow's API answers errors as FastAPI does: `{"detail": "…"}`.
    static func speaksAirflow(_ path: String) -> Bool { path.hasPrefix("/api/v2/") || path.hasPrefix("/auth/") }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            throw e  // no route: `RouteFallbackMiddleware` answers (404 or 405)
        } catch {
            let e = APIError(error, maxBodyBytes: maxBodyBytes, logger: logger, request: request)
            return Self.speaksAirflow(request.uri.path) ? airflowJSON(["detail": .string(e.message)], status: e.status) : e.json
        }
    }
}

extension APIError: HTTPResponseError {
    public func response(from request: Request, context: some RequestContext) throws -> Response { json }

    /// The JSON error response: `{"error": code, "message": message}`.
    var json: Response { errorJSON(self) }

    /// The API error a thrown error stands for.
    init(_ error: any Error, maxBodyBytes: Int, logger: Logger, request: Request) {
        if let u = ServiceUnavailable(error) { self = APIError(.serviceUnavailable, u.reason.rawValue, u.message); return }
        switch error {
        case let a as APIError: self = a
        case let n as NotFound: self = APIError(.notFound, "not_found", n.message)
        case let c as StateConflict: self = APIError(.conflict, "conflict", c.message)
        case let c as ConfError: self = APIError(.badRequest, "invalid_conf", c.message)
        case let b as BadRequest: self = APIError(.badRequest, "bad_request", b.message)
        case let h as any HTTPResponseError where h.status == .contentTooLarge:
            self = APIError(.contentTooLarge, "payload_too_large", "the request body is larger than \(maxBodyBytes) bytes")
        case let h as any HTTPResponseError:
            self = APIError(h.status, "http_\(h.status.code)", h.status.reasonPhrase)
        default:
            logger.error("unexpected error on \(request.method) \(request.uri.path): \(error)")
            self = APIError(.internalServerError, "internal", "internal error; the server log has the details")
        }
    }
}

/// Who may call a route: an API role (checked by `Authenticate`), or no API token, with why.
enum RouteAccess: Sendable, Equatable {
    case role(APIConfig.Role)
    case open(String)
}

/// The access declared for each route as it is registered, by `METHOD /path`: what the 405
/// answers and the route test read, so that no second table of routes is kept by hand.
final class RouteAccessTable: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: RouteAccess] = [:]
    private var order: [(method: String, path: String)] = []

    func record(_ method: HTTPRequest.Method, _ path: String, _ access: RouteAccess) {
        lock.withLock {
            let key = "\(method.rawValue) \(path)"
            if entries[key] == nil { order.append((method.rawValue, path)) }
            entries[key] = access
        }
    }
    var all: [String: RouteAccess] { lock.withLock { entries } }
    /// Every route, in the order it was declared.
    var routes: [(method: String, path: String)] { lock.withLock { order } }
}

/// Where a resource declares its routes: each states who may call it — `on(…, role:)` for an
/// API role, `open(…, why:)` for a route that needs no API token — and nothing else adds routes.
struct APIRoutes {
    let router: Router<FlowRequestContext>
    let access: RouteAccessTable
    let auth: TokenAuthenticator

    typealias Handler = @Sendable (Request, FlowRequestContext) async throws -> Response

    /// A route for callers with a token of `role` (reads need none while reads are open).
    func on(_ method: HTTPRequest.Method, _ path: String, role: APIConfig.Role, _ handler: @escaping Handler) {
        access.record(method, path, .role(role))
        router.group().add(middleware: Authenticate(role: role, auth: auth)).on(RouterPath(path), method: method, use: handler)
    }

    /// A route that needs no API token, and why (a probe, the dashboard's files, a delivery
    /// checked against a secret of its own).
    func open(_ method: HTTPRequest.Method, _ path: String, why: String, _ handler: @escaping Handler) {
        access.record(method, path, .open(why))
        router.on(RouterPath(path), method: method, use: handler)
    }
}

/// A resource of the API (flows, runs, pools, …): a type that declares its routes.
protocol APIResource {
    func register(_ routes: APIRoutes)
}
