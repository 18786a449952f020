public import Foundation

/// When a notification is sent.
public enum NotificationEvent: String, Sendable, Codable, CaseIterable {
    case onFailure = "on_failure", onRetry = "on_retry", onSuccess = "on_success"
    case onRunFailure = "on_run_failure", onRunSuccess = "on_run_success", onDeadlineMiss = "on_deadline_miss"
}

/// The signature FlowKit puts on (and checks on) a webhook body: `sha256=<hex HMAC-SHA256 of
/// the body under the secret>`, in the `X-FlowKit-Signature` header.
public enum WebhookSignature {
    public static let header = "X-FlowKit-Signature"
    public static func value(secret: String, body: [UInt8]) -> String {
        "sha256=" + SHA256.hexString(SHA256.hmac(key: Array(secret.utf8), message: body))
    }
}

/// Named connections from an environment (`FLOWKIT_CONN_<NAME>`, names lowercased): what tasks,
/// notifiers and webhook triggers find by name. Workers, schedulers and the API each read their own.
public func namedConnections(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
    var out: [String: String] = [:]
    for (k, v) in environment where k.hasPrefix("FLOWKIT_CONN_") { out[String(k.dropFirst("FLOWKIT_CONN_".count)).lowercased()] = v }
    return out
}

/// Variables from an environment (`FLOWKIT_VAR_<NAME>`, names lowercased): a worker's own,
/// which win over the store's.
public func namedVariables(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
    var out: [String: String] = [:]
    for (k, v) in environment where k.hasPrefix("FLOWKIT_VAR_") { out[String(k.dropFirst("FLOWKIT_VAR_".count)).lowercased()] = v }
    return out
}

/// A notifier named in flow code: its kind and the named connection (or custom notifier name)
/// that holds its address and secrets, so that no secret is ever in code.
public struct NotifierRef: Sendable, Hashable, Codable, CustomStringConvertible {
    public var kind: String
    public var target: String

    public init(kind: String, target: String) { self.kind = kind; self.target = target }

    /// A JSON POST to the URL in `FLOWKIT_CONN_<NAME>`, signed with HMAC-SHA256 of the body
    /// under `FLOWKIT_CONN_<NAME>_SECRET` (header `X-FlowKit-Signature: sha256=<hex>`).
    public static func webhook(_ connection: String) -> NotifierRef { NotifierRef(kind: "webhook", target: connection) }
    /// A Slack incoming webhook (its URL in `FLOWKIT_CONN_<NAME>`).
    public static func slack(_ connection: String) -> NotifierRef { NotifierRef(kind: "slack", target: connection) }
    /// An email over SMTP to the server in `FLOWKIT_CONN_<NAME>`:
    /// `smtp://user:password@host:587?from=alerts@example.com&to=a@example.com,b@example.com`.
    /// `smtp://` upgrades with STARTTLS and refuses a server that does not offer it (`tls=optional`
    /// or `tls=none` to relax that); `smtps://` is TLS from the start. `ca=/path/ca.pem` trusts a
    /// private CA; `FLOWKIT_CONN_<NAME>_PASSWORD` may hold the password instead of the URL.
    public static func email(_ connection: String) -> NotifierRef { NotifierRef(kind: "email", target: connection) }
    /// A notifier written in Swift (`Notifier`), registered under this name with the scheduler.
    public static func custom(_ name: String) -> NotifierRef { NotifierRef(kind: "custom", target: name) }

    public var description: String { "\(kind):\(target)" }
}

/// Who hears about what. On a flow, the defaults; on a task, its own choice for the task
/// events (an event left nil takes the flow's).
public struct Notifications: Sendable, Hashable, Codable {
    public var onFailure: [NotifierRef]?
    public var onRetry: [NotifierRef]?
    public var onSuccess: [NotifierRef]?
    public var onRunFailure: [NotifierRef]?
    public var onRunSuccess: [NotifierRef]?
    public var onDeadlineMiss: [NotifierRef]?

    public init(onFailure: [NotifierRef]? = nil, onRetry: [NotifierRef]? = nil, onSuccess: [NotifierRef]? = nil,
                onRunFailure: [NotifierRef]? = nil, onRunSuccess: [NotifierRef]? = nil, onDeadlineMiss: [NotifierRef]? = nil) {
        self.onFailure = onFailure; self.onRetry = onRetry; self.onSuccess = onSuccess
        self.onRunFailure = onRunFailure; self.onRunSuccess = onRunSuccess; self.onDeadlineMiss = onDeadlineMiss
    }

    public func notifiers(for event: NotificationEvent) -> [NotifierRef] {
        switch event {
        case .onFailure: return onFailure ?? []
        case .onRetry: return onRetry ?? []
        case .onSuccess: return onSuccess ?? []
        case .onRunFailure: return onRunFailure ?? []
        case .onRunSuccess: return onRunSuccess ?? []
        case .onDeadlineMiss: return onDeadlineMiss ?? []
        }
    }

    /// These choices with the gaps filled from `defaults`.
    public func merged(over defaults: Notifications) -> Notifications {
        Notifications(onFailure: onFailure ?? defaults.onFailure, onRetry: onRetry ?? defaults.onRetry,
                      onSuccess: onSuccess ?? defaults.onSuccess, onRunFailure: onRunFailure ?? defaults.onRunFailure,
                      onRunSuccess: onRunSuccess ?? defaults.onRunSuccess, onDeadlineMiss: onDeadlineMiss ?? defaults.onDeadlineMiss)
    }

    public var isEmpty: Bool { NotificationEvent.allCases.allSatisfy { notifiers(for: $0).isEmpty } }
}

/// What a notifier delivers: one event of one run (and task), with the error and the last
/// lines of the try's log.
public struct NotificationMessage: Sendable, Codable, Equatable {
    /// Stable across retries of the delivery: receivers deduplicate on it.
    public var deliveryId: String
    public var event: NotificationEvent
    public var flowId: String
    public var runId: String
    public var taskId: String?
    public var tryNumber: Int?
    public var state: String
    public var error: String?
    public var logTail: [String]
    public var at: Date
    /// Where the run can be seen (`FLOWKIT_PUBLIC_URL` + the API path), when configured.
    public var runURL: String?

    public init(deliveryId: String, event: NotificationEvent, flowId: String, runId: String, taskId: String?, tryNumber: Int?,
                state: String, error: String?, logTail: [String], at: Date, runURL: String?) {
        self.deliveryId = deliveryId; self.event = event; self.flowId = flowId; self.runId = runId; self.taskId = taskId
        self.tryNumber = tryNumber; self.state = state; self.error = error; self.logTail = logTail; self.at = at; self.runURL = runURL
    }

    /// One line for humans: "example_alert: run manual__… failed (task fail, try 2): boom".
    public var summary: String {
        var s = "\(flowId): "
        if let taskId { s += "task `\(taskId)` of run \(runId)" + (tryNumber.map { ", try \($0)," } ?? "") } else { s += "run \(runId)" }
        s += " is \(state)"
        if let error { s += ": \(error)" }
        return s
    }
}

/// A notifier written in Swift: deliver one message or throw (the delivery is retried with
/// backoff and every attempt recorded). Register it with the scheduler under `name` and refer
/// to it in flows as `.custom(name)`. `connections` are the scheduler's named connections.
///
/// ```swift
/// struct PagerNotifier: Notifier {
///     let name = "pager"
///     func deliver(_ m: NotificationMessage, connections: [String: String]) async throws {
///         guard m.event == .onRunFailure else { return }
///         try await page(connections["pager"]!, m.summary)
///     }
/// }
/// ```
public protocol Notifier: Sendable {
    var name: String { get }
    func deliver(_ message: NotificationMessage, connections: [String: String]) async throws
}

/// A run deadline: the run should have ended within `seconds` of its logical date (a daily
/// 02:00 run due by 06:00: `.afterLogicalDate(.seconds(4 * 3600))`) or of its start.
public struct RunDeadline: Sendable, Hashable, Codable {
    public enum Anchor: String, Sendable, Codable { case logicalDate = "logical_date", start }
    public var after: Anchor
    public var seconds: Double

    public static func afterLogicalDate(_ d: Duration) -> RunDeadline { RunDeadline(after: .logicalDate, seconds: d.seconds) }
    public static func afterStart(_ d: Duration) -> RunDeadline { RunDeadline(after: .start, seconds: d.seconds) }
}

/// A flow started by `POST /api/v1/hooks/{flow}`: the JSON body becomes the run's conf (checked
/// against the flow's params), and the request proves itself with the secret in the API's
/// named connection `secret` (`FLOWKIT_CONN_<NAME>`): an `X-FlowKit-Signature: sha256=<HMAC-SHA256
/// of the body>` header, or `Authorization: Bearer <secret>`. An `Idempotency-Key` header makes
/// a repeated delivery return the run it made the first time.
public struct WebhookTrigger: Sendable, Hashable, Codable {
    public var secret: String
    public init(secret: String) { self.secret = secret }
}
