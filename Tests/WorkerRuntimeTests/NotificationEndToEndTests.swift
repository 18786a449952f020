import FlowJSON
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import ProcessSupport
import Testing
@testable import WorkerRuntime
@testable import Scheduler

/// The real receiver of `scripts/webhook_receiver.py`, started when the test says.
final class WebhookReceiver {
    let port: Int
    let out: String
    var pid: pid_t = 0

    init() throws {
        port = try freePort()
        out = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-hooks-\(UUID().uuidString).jsonl").path
    }

    /// Spawned directly (Foundation's `Process.waitUntilExit` can spin on Linux).
    func start(status: Int = 200) throws {
        let argv = ["python3", TestServers.repositoryRoot + "/scripts/webhook_receiver.py", String(port), out, "--status", String(status)]
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        guard posix_spawnp(&pid, "python3", nil, nil, &cargs, environ) == 0 else { throw TaskError("could not start the webhook receiver") }
    }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)  // SIGTERM may be ignored: the test process ignores it (signal handling) and children inherit that
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        pid = 0
    }

    var requests: [JSONValue] {
        ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { try? JSONValue.parse(String($0)) }
    }

    deinit { stop(); try? FileManager.default.removeItem(atPath: out) }
}

/// A real SMTP server (`scripts/smtp_receiver.py`, aiosmtpd from PyPI) that requires STARTTLS,
/// with a throwaway certificate, and AUTH as `flowkit` / `p@ss word`.
final class SMTPReceiver {
    let port: Int
    let dir: String
    var pid: pid_t = 0
    static let user = "flowkit", password = "p@ss word"

    init() throws {
        port = try freePort()
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-smtp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", "\(dir)/key.pem", "-out", "\(dir)/cert.pem"])
    }

    var out: String { "\(dir)/mail.jsonl" }
    var caFile: String { "\(dir)/cert.pem" }

    func start() throws {
        // The venv with aiosmtpd; made here when missing (a failure to make it fails the test).
        let python = try Self.output([TestServers.repositoryRoot + "/scripts/testvenv.sh"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let argv = [python, TestServers.repositoryRoot + "/scripts/smtp_receiver.py", String(port), out,
                    "\(dir)/cert.pem", "\(dir)/key.pem", Self.user, Self.password]
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        guard posix_spawn(&pid, python, nil, nil, &cargs, environ) == 0 else { throw TaskError("could not start the SMTP receiver") }
    }

    /// Waits until the server accepts connections.
    func waitUntilListening() async throws {
        try await eventually("the SMTP receiver listens on \(port)") { isListening(port: port) }
    }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        pid = 0
    }

    var mails: [JSONValue] {
        ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { try? JSONValue.parse(String($0)) }
    }

    static func run(_ argv: [String]) throws { _ = try output(argv) }

    static func output(_ argv: [String]) throws -> String {
        let r = try ProcessRunner.runToCompletion(argv)
        guard r.status == 0 else { throw TaskError("\(argv[0]) failed (\(r.status)): \(r.output.suffix(500))") }
        return r.output
    }

    deinit { stop(); try? FileManager.default.removeItem(atPath: dir) }
}

@Suite("Notifications end to end", .serialized)
struct NotificationEndToEndTests {
    @Test("example_alert: a retry and a run failure give one signed POST each at a real receiver, also when it comes up late")
    func exampleAlert() async throws {
        let receiver = try WebhookReceiver()
        setenv("FLOWKIT_CONN_ALERTS", "http://127.0.0.1:\(receiver.port)/hooks/flowkit", 1)
        setenv("FLOWKIT_CONN_ALERTS_SECRET", "s3cret", 1)
        try await withSystem { sys in
            let run = try await sys.trigger("example_alert")
            #expect(try await sys.waitForRun(run) == "failed")
            // The receiver is down: both notifications are pending with a failed attempt each.
            try await eventually("attempts against the missing receiver") {
                let n = try await sys.store.notifications(runId: run)
                return n.count == 2 && n.allSatisfy { $0.status == "pending" && !$0.attempts.isEmpty }
            }
            try receiver.start()
            try await eventually("both delivered", timeout: 30) {
                try await sys.store.notifications(runId: run).allSatisfy { $0.status == "delivered" }
            }
            let hits = receiver.requests
            #expect(hits.count == 2)
            var events: [String] = []
            for hit in hits {
                let body = hit["body"]?.stringValue ?? ""
                let headers = Dictionary((hit["headers"]?.objectValue ?? [:]).map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
                #expect(headers["x-flowkit-signature"]?.stringValue == WebhookSignature.value(secret: "s3cret", body: Array(body.utf8)))
                #expect(hit["path"] == "/hooks/flowkit")
                let m = try JSONValue.parse(body)
                #expect(m["runId"]?.stringValue == run && m["flowId"] == "example_alert")
                #expect(headers["x-flowkit-delivery"]?.stringValue == m["deliveryId"]?.stringValue)
                events.append(m["event"]?.stringValue ?? "")
                if m["event"] == "on_retry" {
                    #expect(m["taskId"] == "fail" && m["tryNumber"] == 1 && m["error"] == "example_alert fails on purpose")
                    #expect(m["logTail"]?.arrayValue?.contains("about to fail on purpose (try 1)") == true)
                }
            }
            #expect(events.sorted() == ["on_retry", "on_run_failure"])
        }
        unsetenv("FLOWKIT_CONN_ALERTS")
        unsetenv("FLOWKIT_CONN_ALERTS_SECRET")
    }

    @Test("email: a run failure is one mail over STARTTLS with auth at a real SMTP server; a wrong password is a recorded 535, not a loss")
    func emailOverSMTP() async throws {
        let smtp = try SMTPReceiver()
        let base = "smtp://\(SMTPReceiver.user)@127.0.0.1:\(smtp.port)?from=flowkit@example.com&to=oncall@example.com,data@example.com&ca=\(smtp.caFile)"
        setenv("FLOWKIT_CONN_MAIL", base, 1)
        setenv("FLOWKIT_CONN_MAIL_PASSWORD", SMTPReceiver.password, 1)
        setenv("FLOWKIT_CONN_BADMAIL", "smtp://flowkit:wrong@127.0.0.1:\(smtp.port)?from=flowkit@example.com&to=oncall@example.com&ca=\(smtp.caFile)", 1)
        defer { for v in ["FLOWKIT_CONN_MAIL", "FLOWKIT_CONN_MAIL_PASSWORD", "FLOWKIT_CONN_BADMAIL"] { unsetenv(v) } }
        try smtp.start()
        try await smtp.waitUntilListening()
        let flow = Flow("email_alert_test", notify: Notifications(onFailure: [.email("badmail")], onRunFailure: [.email("mail")])) { f in
            f.task("boom") { ctx in
                ctx.log("the line before the failure: ünïcödé")
                throw TaskError("boom on purpose")
            }
        }
        try await withSystem(flows: allFlows + [flow]) { sys in
            let run = try await sys.trigger("email_alert_test")
            #expect(try await sys.waitForRun(run) == "failed")
            try await eventually("the run failure mailed, the bad login tried", timeout: 30) {
                let n = try await sys.store.notifications(runId: run)
                return n.contains { $0.event == "on_run_failure" && $0.status == "delivered" }
                    && n.contains { $0.event == "on_failure" && !$0.attempts.isEmpty }
            }
            let mails = smtp.mails
            try #require(mails.count == 1)
            let mail = mails[0]
            #expect(mail["tls"] == true && mail["user"]?.stringValue == SMTPReceiver.user)
            #expect(mail["from"]?.stringValue == "flowkit@example.com")
            #expect(mail["to"]?.arrayValue?.compactMap(\.stringValue) == ["oncall@example.com", "data@example.com"])
            let data = mail["data"]?.stringValue ?? ""
            #expect(data.contains("Subject: [FlowKit] email_alert_test: run \(run) is failed"))
            #expect(data.contains("X-FlowKit-Event: on_run_failure"))
            #expect(data.contains("Run:   \(run)"))
            let bad = try #require(try await sys.store.notifications(runId: run).first { $0.event == "on_failure" })
            #expect(bad.status == "pending")
            let attempt = try #require(bad.attempts.first)
            #expect(attempt.statusCode == 535)
            #expect(attempt.error?.contains("Login denied") == true || attempt.error?.contains("535") == true)
        }
    }
}
