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
}
