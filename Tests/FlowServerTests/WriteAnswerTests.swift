import FlowKit
import FlowKitTesting
import FlowServer
import Foundation
import PostgresClient
import ProcessSupport
import RedisClient
import Scheduler
import ServiceLifecycle
import Testing

/// Writes answer the truth: a repeated trigger makes no second run, and a write that committed
/// says so even when the broker could not take its messages.
@Suite("Write answers", .serialized)
struct WriteAnswerTests {
    @Test("a trigger with an Idempotency-Key makes one run however often it is sent, also 20 at once: 201 for the first, 200 with the same run for the rest")
    func idempotentTrigger() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let body = #"{"conf": {"seconds": 0}}"#
            let replies = try await withThrowingTaskGroup(of: LiveAPI.Reply.self) { g in
                for _ in 0..<20 {
                    g.addTask { try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: body,
                                                      headers: ["Idempotency-Key": "ci-job-42"]) }
                }
                return try await g.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.filter { $0.status == 201 }.count == 1, "\(replies.map(\.status))")
            #expect(replies.filter { $0.status == 200 }.count == 19)
            #expect(Set(replies.compactMap { $0.json["runId"]?.stringValue }).count == 1)
            let runs = try await api.request("GET", "/api/v1/runs?flow_id=example_sleep")
            #expect(runs.json["runs"]?.arrayValue?.count == 1)
            // Another key, another run; a key of the wrong size is refused by name.
            let other = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: body,
                                              headers: ["Idempotency-Key": "ci-job-43"])
            #expect(other.status == 201 && other.json["runId"] != replies[0].json["runId"])
            let long = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: body,
                                             headers: ["Idempotency-Key": String(repeating: "k", count: 201)])
            #expect(long.status == 400 && long.text.contains("Idempotency-Key"))
            let audit = try await api.request("GET", "/api/v1/audit?action=trigger", token: LiveAPI.admin)
            #expect(audit.json["entries"]?.arrayValue?.count == 2, "\(audit.text.prefix(400))")
        }
    }

    @Test("a cancel recorded while Redis is away answers 202 with stopRequested false; the stop reaches Redis once it is back; a second cancel is 409")
    func cancelWithBrokerAway() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            let run = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 20}}"#)
            let id = try #require(run.json["runId"]?.stringValue)
            try await eventually("the sleep to run") {
                try await api.request("GET", "/api/v1/runs/\(id)/tasks").json["tasks"]?.arrayValue?.first?["state"] == "running"
            }
            // A second API process whose Redis is not there (yet): same database, a port nothing listens on.
            let redisPort = try freePort()
            let away = FlowAPI(store: SchedulerStore(db: PGPool(api.databaseURL, size: 1)),
                               broker: SchedulerBroker(config: try RedisConfig(url: "redis://127.0.0.1:\(redisPort)/0"), consumer: "api-away"),
                               config: APIConfig(tokens: [(.admin, LiveAPI.admin)], openReads: true))
            let port = try freePort()
            let app = Task { try await away.application(host: "127.0.0.1", port: port).run() }
            defer { app.cancel() }
            let base = "http://127.0.0.1:\(port)"
            try await eventually("the second API up") { (try? await LiveAPI.request(base: base, "GET", "/api/v1/flows"))?.status == 200 }
            let cancel = try await LiveAPI.request(base: base, "POST", "/api/v1/runs/\(id)/cancel", token: LiveAPI.admin)
            #expect(cancel.status == 202, "\(cancel.text)")
            #expect(cancel.json["stopRequested"] == false && cancel.json["state"] == "cancelled", "\(cancel.text)")
            let again = try await LiveAPI.request(base: base, "POST", "/api/v1/runs/\(id)/cancel", token: LiveAPI.admin)
            #expect(again.status == 409)

            // Redis comes up on that port: the background retry delivers the stop.
            let redis = Process()
            redis.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
            redis.arguments = ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            // No inherited output: a server left holding the test runner's pipe would keep it waiting.
            redis.standardOutput = FileHandle.nullDevice
            redis.standardError = FileHandle.nullDevice
            try redis.run()
            // SIGKILL: this test process blocks SIGTERM (service lifecycle), and a child inherits that mask.
            defer { kill(redis.processIdentifier, SIGKILL); redis.waitUntilExit() }
            try await eventually("the stop to reach the Redis that came back", timeout: 30) {
                let keys = try ProcessRunner.runToCompletion(["redis-cli", "-p", String(redisPort), "--scan", "--pattern", "flowkit:cancel:*"])
                return !keys.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            }
            // Through the API with its Redis there, a write that sends answers 200 with the flag true.
            let run2 = try await api.request("POST", "/api/v1/flows/example_sleep/runs", token: LiveAPI.admin, body: #"{"conf": {"seconds": 20}}"#)
            let id2 = try #require(run2.json["runId"]?.stringValue)
            let sent = try await api.request("POST", "/api/v1/runs/\(id2)/cancel", token: LiveAPI.admin)
            #expect(sent.status == 200 && sent.json["stopRequested"] == true, "\(sent.text)")
        }
    }
}
