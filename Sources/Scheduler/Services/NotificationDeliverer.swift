import FlowKit
import Foundation
import Logging

/// Delivers the notification outbox (leader only): claims due notifications under a lease,
/// sends each through its notifier (webhook, Slack, email, or a custom `Notifier`), and records every
/// attempt. A failure is retried with exponential backoff (1 s doubling to `maxDelay`) until
/// `maxAttempts`, then the notification ends `failed`, visible in the API. Delivery is at least
/// once: a leader that dies between sending and recording leaves the notification to the next
/// leader after its lease, with the same delivery id for the receiver to deduplicate.
public struct NotificationDeliverer: SchedulerDuty {
    public struct Config: Sendable {
        /// Seconds a claimed notification is reserved for this deliverer.
        public var lease: Double = 30
        /// Seconds one delivery may take.
        public var timeout: Double = 10
        /// The longest pause between attempts of one notification.
        public var maxDelay: Double = 60
        /// Attempts before a notification is given up (`failed`): about 35 minutes of retries.
        public var maxAttempts: Int = 40
        /// The longest sleep when nothing is due.
        public var interval: Double = 1
        public init() {}
        public func validate() throws {
            try requirePositive("notification deliverer", ["lease": lease, "timeout": timeout, "maxDelay": maxDelay,
                                                           "maxAttempts": Double(maxAttempts), "interval": interval])
            if timeout >= lease { throw SchedulerConfigError("notification deliverer: timeout (\(timeout)) must be shorter than lease (\(lease))") }
        }
    }

    public let name = "notification deliverer"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config
    let notifiers: [String: any Notifier]
    let connections: [String: String]

    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        let due = try await context.store.claimNotifications(now: now, lease: config.lease)
        await withTaskGroup(of: Void.self) { g in
            for d in due { g.addTask { await self.deliver(d.notifier, attempt: d.attempt, d.message) } }
        }
        if !due.isEmpty { return 0 }
        return pause(until: try await context.store.nextNotificationTime(), now: context.clock.now(), maxWait: config.interval)
    }

    func deliver(_ notifier: String, attempt: Int, _ m: NotificationMessage) async {
        let t0 = Date()
        var status: Int?, failure: String?, permanent = false
        do {
            status = try await send(notifier, m)
        } catch let e as DeliveryError {
            status = e.statusCode; failure = e.description; permanent = e.isConfiguration
        } catch {
            failure = "\(error)"
        }
        let seconds = Date().timeIntervalSince(t0)
        let now = context.clock.now()
        // A configuration problem fails at once: retrying cannot set a missing connection.
        let retryAt: Date? = failure == nil || permanent || attempt >= config.maxAttempts
            ? nil : now.addingTimeInterval(min(config.maxDelay, pow(2, Double(attempt - 1))))
        if let failure { context.logger.warning("notification \(m.deliveryId) to \(notifier), attempt \(attempt): \(failure)") }
        do {
            try await context.store.recordDelivery(deliveryKey: m.deliveryId, ok: failure == nil, statusCode: status, error: failure,
                                                   seconds: seconds, retryAt: retryAt, now: now)
        } catch {
            // Not recorded: the lease runs out and the notification is sent again (same delivery id).
            context.logger.warning("notification \(m.deliveryId): could not record the attempt: \(error)")
        }
    }

    func send(_ notifier: String, _ m: NotificationMessage) async throws -> Int? {
        let parts = notifier.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { throw DeliveryError(configuration: "unknown notifier `\(notifier)`") }
        switch parts[0] {
        case "webhook": return try await WebhookNotifier(connection: parts[1]).deliver(m, connections: connections, timeout: config.timeout)
        case "slack": return try await SlackNotifier(connection: parts[1]).deliver(m, connections: connections, timeout: config.timeout)
        case "email": return try await EmailNotifier(connection: parts[1]).deliver(m, connections: connections, timeout: config.timeout)
        case "custom":
            guard let n = notifiers[parts[1]] else {
                throw DeliveryError(configuration: "no notifier named `\(parts[1])` is registered with this scheduler (SchedulerDaemon notifiers:)")
            }
            try await n.deliver(m, connections: connections)
            return nil
        default: throw DeliveryError(configuration: "unknown notifier kind `\(parts[0])`")
        }
    }
}
