import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

/// A custom notifier that records what it gets, or fails while `failing` is set.
final class RecordingNotifier: Notifier, @unchecked Sendable {
    let name = "recorder"
    let lock = NSLock()
    var got: [NotificationMessage] = []
    var failing = false
    func deliver(_ message: NotificationMessage, connections: [String: String]) async throws {
        try lock.withLock {
            if failing { throw DeliveryError("receiver down") }
            got.append(message)
        }
    }
}

let alerting = Flow("alerting", notify: Notifications(onRunFailure: [.custom("recorder")], onRunSuccess: [.custom("recorder")]),
                    defaults: TaskOptions(retry: RetryPolicy(retries: 1, delay: .seconds(5)))) { f in
    f.task("t", notify: Notifications(onFailure: [.custom("recorder")], onRetry: [.custom("recorder")])) { _ in nil }
}

@Suite("Notifications", .serialized)
struct NotificationTests {
    func harness(_ notifier: RecordingNotifier, maxAttempts: Int = 4) async throws -> (Harness, NotificationDeliverer) {
        var config = SchedulerConfig(name: "test-scheduler")
        config.notifications.maxAttempts = maxAttempts
        let h = try await Harness.make([alerting], config: config)
        let d = SchedulerDaemon(databaseURL: h.url, redis: try TestServers.redis(), flows: [alerting], config: config, clock: h.clock,
                                notifiers: [notifier], connections: [:])
        return (h, d.notificationDeliverer)
    }

    @Test("task and run events write outbox rows in their transaction; a custom notifier gets each once, with the error; a down receiver is retried with backoff, then given up as failed")
    func outbox() async throws {
        let rec = RecordingNotifier()
        let (h, deliverer) = try await harness(rec)
        let run = try await h.trigger("alerting")
        let m = try await h.take()[0]
        try await h.report(m, .failed, error: "boom 1")
        h.clock.advance(by: 5)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        try await h.report(try await h.take()[0], .failed, error: "boom 2")
        #expect(try await h.runState(run) == "failed")
        let rows = try await h.store.notifications(runId: run)
        #expect(Set(rows.map(\.event)) == ["on_retry", "on_failure", "on_run_failure"] && rows.count == 3)
        _ = try await deliverer.runOnce()
        #expect(rec.got.map(\.event.rawValue).sorted() == ["on_failure", "on_retry", "on_run_failure"])
        #expect(rec.got.first { $0.event == .onFailure }?.error == "boom 2")
        #expect(try await h.store.notifications(runId: run).allSatisfy { $0.status == "delivered" && $0.attempts.count == 1 })

        // A receiver that stays down: attempts 1 s, 2 s, 4 s apart, then `failed` after 4.
        rec.failing = true
        let second = try await h.trigger("alerting")
        try await h.report(try await h.take()[0], .succeeded)
        for (i, wait) in [1.0, 2, 4].enumerated() {
            _ = try await deliverer.runOnce()
            let n = try #require(try await h.store.notifications(runId: second).first)
            #expect(n.status == "pending" && n.attempts.count == i + 1 && n.lastError == "receiver down")
            #expect(n.nextAttemptAt == h.clock.now().addingTimeInterval(wait))
            h.clock.advance(by: wait)
        }
        _ = try await deliverer.runOnce()
        let given = try #require(try await h.store.notifications(runId: second).first)
        #expect(given.event == "on_run_success" && given.status == "failed" && given.attempts.count == 4)
    }

    @Test("a notification to a connection that is not configured, or a webhook without its secret, fails at once with the reason, is not retried, and is listed as a configuration problem")
    func configurationProblemsFailFast() async throws {
        let flow = Flow("misconfigured", notify: Notifications(onRunSuccess: [.webhook("nowhere"), .slack("unset"), .webhook("nosecret")])) { f in
            f.task("t") { _ in nil }
        }
        var config = SchedulerConfig(name: "test-scheduler")
        config.notifications.maxAttempts = 40
        let h = try await Harness.make([flow], config: config)
        let d = SchedulerDaemon(databaseURL: h.url, redis: try TestServers.redis(), flows: [flow], config: config, clock: h.clock,
                                connections: ["nosecret": "http://127.0.0.1:9/hook"])
        let run = try await h.trigger("misconfigured")
        try await h.report(try await h.take()[0], .succeeded)
        _ = try await d.notificationDeliverer.runOnce()
        let rows = try await h.store.notifications(runId: run)
        #expect(rows.count == 3)
        for n in rows {
            #expect(n.status == "failed" && n.attempts.count == 1, "\(n.notifier): \(n.status) after \(n.attempts.count)")
            #expect(n.lastError?.hasPrefix(DeliveryError.configurationPrefix) == true, "\(n.lastError ?? "")")
        }
        #expect(rows.first { $0.notifier == "webhook:nowhere" }?.lastError?.contains("FLOWKIT_CONN_NOWHERE") == true)
        #expect(rows.first { $0.notifier == "webhook:nosecret" }?.lastError?.contains("FLOWKIT_CONN_NOSECRET_SECRET") == true)
        // Nothing is due again: no retry can set a connection.
        #expect(try await h.store.nextNotificationTime() == nil)
        let problems = try await h.store.configurationProblems(now: h.clock.now())
        #expect(Set(problems.map(\.notifier)) == ["webhook:nowhere", "slack:unset", "webhook:nosecret"] && problems.allSatisfy { $0.count == 1 })
    }

    @Test("a deliverer that dies after sending leaves the notification to the next after its lease, with the same delivery id; two deliverers never claim one row together")
    func leaseAndConcurrency() async throws {
        let rec = RecordingNotifier()
        let (h, deliverer) = try await harness(rec)
        for _ in 0..<20 {
            _ = try await h.trigger("alerting")
            try await h.report(try await h.take()[0], .succeeded)
        }
        // Claimed and never recorded (the deliverer died): not due again before the lease ends.
        let claimed = try await h.store.claimNotifications(now: h.clock.now(), lease: 30, limit: 1)
        #expect(claimed.count == 1)
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        async let a = h.store.claimNotifications(now: h.clock.now(), lease: 30, limit: 50)
        async let b = other.claimNotifications(now: h.clock.now(), lease: 30, limit: 50)
        let (x, y) = try await (a, b)
        let ids = (x + y).map(\.message.deliveryId)
        #expect(ids.count == 19 && Set(ids).count == 19 && !ids.contains(claimed[0].message.deliveryId))
        h.clock.advance(by: 31)
        _ = try await deliverer.runOnce()
        let delivered = rec.got.map(\.deliveryId)
        #expect(delivered.count == 20 && Set(delivered).count == 20 && delivered.contains(claimed[0].message.deliveryId))
    }
}

@Suite("Email notifier: connection and message")
struct EmailNotifierUnitTests {
    @Test("the SMTP connection: defaults, the password from its own variable, and errors that name the variable")
    func connection() throws {
        let c = try SMTPConnection(name: "mail", connections: [
            "mail": "smtp://ops%40example.com:url-pass@mail.example.com?from=flowkit@example.com&to=a@example.com,%20b@example.com",
            "mail_password": "from-env",
        ])
        #expect(c.url == "smtp://mail.example.com:587" && c.user == "ops@example.com" && c.password == "from-env")
        #expect(c.to == ["a@example.com", "b@example.com"] && c.tls == .required && c.caFile == nil)
        let s = try SMTPConnection(name: "s", connections: ["s": "smtps://h?from=x@y&to=z@w&tls=optional"])
        #expect(s.url == "smtps://h:465" && s.tls == .optional && s.password == "")
        func error(_ url: String?) -> String {
            do { _ = try SMTPConnection(name: "mail", connections: url.map { ["mail": $0] } ?? [:]); return "" } catch { return "\(error)" }
        }
        #expect(error(nil).contains("FLOWKIT_CONN_MAIL"))
        #expect(error("http://h?from=a@b&to=c@d").contains("FLOWKIT_CONN_MAIL is not an SMTP URL"))
        #expect(error("smtp://h?to=c@d").contains("needs ?from="))
        #expect(error("smtp://h?from=a@b").contains("needs &to="))
        #expect(error("smtp://h?from=a@b&to=c@d&tls=maybe").contains("tls=maybe"))
    }

    @Test("the mail: headers, a stable Message-ID, an encoded non-ASCII subject, no line break smuggled from a log line")
    func message() {
        let m = NotificationMessage(deliveryId: "r1/t/2/on_failure/email:mail", event: .onFailure, flowId: "fl", runId: "r1",
                                    taskId: "tâche", tryNumber: 2, state: "failed", error: "bad\r\nBcc: evil@example.com",
                                    logTail: ["one", "two\nthree"], at: Date(timeIntervalSince1970: 0), runURL: "http://x/runs/r1")
        let text = String(decoding: EmailNotifier.message(m, from: "f@example.com", to: ["a@example.com"]), as: UTF8.self)
        let lines = text.components(separatedBy: "\r\n")
        #expect(lines.contains("Message-ID: <r1/t/2/on_failure/email:mail@flowkit>"))
        #expect(lines.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000"))
        #expect(lines.contains { $0.hasPrefix("Subject: =?UTF-8?B?") })
        #expect(!lines.contains { $0.hasPrefix("Bcc:") })
        #expect(lines.contains("  two three") && lines.contains("The run: http://x/runs/r1"))
        #expect(!text.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
    }
}
