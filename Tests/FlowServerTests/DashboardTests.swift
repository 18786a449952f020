import FlowJSON
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import ProcessSupport
import Testing
@testable import FlowCommands
@testable import FlowServer
@testable import WorkerRuntime
import Scheduler

/// A server-sent-events subscription over a plain socket (`RawConnection`).
func eventStream(port: Int, path: String, token: String?) throws -> RawConnection {
    let c = try RawConnection(port: port)
    c.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n" + (token.map { "Authorization: Bearer \($0)\r\n" } ?? "") + "\r\n")
    return c
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var v = false
    func set() { lock.withLock { v = true } }
    var value: Bool { lock.withLock { v } }
}

@Suite("Dashboard", .serialized)
struct DashboardTests {
    @Test("the dashboard is served from the binary at /, with a same-origin content policy; its files match Sources/FlowServer/UI")
    func servedFromTheBinary() async throws {
        try await withAPI(openReads: false) { api in
            let index = try await api.request("GET", "/")
            #expect(index.status == 200 && index.header("Content-Type")?.hasPrefix("text/html") == true)
            #expect(index.text.contains(#"<script defer src="/ui/app.js">"#))
            #expect(index.header("Content-Security-Policy")?.contains("default-src 'self'") == true)
            let js = try await api.request("GET", "/ui/app.js")
            #expect(js.status == 200 && js.header("Content-Type")?.hasPrefix("text/javascript") == true)
            #expect(try await api.request("GET", "/ui/app.css").status == 200)
            let missing = try await api.request("GET", "/ui/nope.js")
            #expect(missing.status == 404 && missing.json["error"] == "not_found")
            // The page is public; the data behind it follows the API's rules.
            #expect(try await api.request("GET", "/api/v1/flows").status == 401)
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: TestServers.repositoryRoot + "/Sources/FlowServer/UI") {
            let disk = try String(contentsOfFile: TestServers.repositoryRoot + "/Sources/FlowServer/UI/" + name, encoding: .utf8)
            #expect(UIAssets.files[name]?.body == disk, "\(name) differs from the embedded copy: run scripts/embed_ui.sh")
        }
    }

    @Test("the grid: tasks in declaration order × the last runs, with states, tries and durations in one call; bad parameters are 400s")
    func grid() async throws {
        try await withAPI { api in
            var runs: [String] = []
            for _ in 0..<3 {
                let r = try await api.request("POST", "/api/v1/flows/example_branch/runs", token: LiveAPI.admin, body: #"{"conf": {"pick": "right"}}"#)
                runs.append(try #require(r.json["runId"]?.stringValue))
            }
            try await eventually("three runs to end") {
                let g = try await api.request("GET", "/api/v1/flows/example_branch/grid?runs=3").json
                return g["runs"]?.arrayValue?.allSatisfy { $0["state"] == "success" } == true && g["runs"]?.arrayValue?.count == 3
            }
            let g = try await api.request("GET", "/api/v1/flows/example_branch/grid?runs=2").json
            #expect(g["tasks"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == ["choose", "left", "right", "join"])
            #expect(g["runs"]?.arrayValue?.compactMap { $0["runId"]?.stringValue } == [runs[2], runs[1]])
            let cells = try #require(g["cells"]?[runs[2]])
            #expect(cells["left"]?["state"] == "skipped" && cells["right"]?["state"] == "success" && cells["join"]?["tryNumber"] == 1)
            #expect(cells["right"]?["seconds"]?.doubleValue != nil)
            #expect(try await api.request("GET", "/api/v1/flows/example_branch/grid?state=failed").json["runs"] == [])
            #expect(try await api.request("GET", "/api/v1/flows/example_branch/grid?runs=0").status == 400)
            #expect(try await api.request("GET", "/api/v1/flows/example_branch/grid?state=green").status == 400)
            let unknown = try await api.request("GET", "/api/v1/flows/example_brnch/grid")
            #expect(unknown.status == 404 && unknown.text.contains("did you mean `example_branch`"))
            let flows = try await api.request("GET", "/api/v1/flows").json["flows"]?.arrayValue ?? []
            let recent = flows.first { $0["flowId"] == "example_branch" }?["recentRuns"]?.arrayValue ?? []
            #expect(recent.compactMap { $0["runId"]?.stringValue } == runs.reversed())
        }
    }

    @Test("the live stream: a trigger and its tasks' changes reach a subscriber within seconds; readers need a token where reads are closed")
    func liveStream() async throws {
        try await withAPI(openReads: false) { api in
            let refused = try eventStream(port: api.port, path: "/api/v1/events/stream", token: nil)
            #expect(refused.read(until: 5) { $0.contains("\r\n\r\n") } && refused.received.hasPrefix("HTTP/1.1 401"))
            let sse = try eventStream(port: api.port, path: "/api/v1/events/stream?maxSeconds=20", token: LiveAPI.reader)
            #expect(sse.read(until: 5) { $0.contains(": connected") })
            #expect(sse.received.contains("text/event-stream"))
            let r = try await api.request("POST", "/api/v1/flows/example_retry/runs", token: LiveAPI.admin).json
            let runId = try #require(r["runId"]?.stringValue), pk = try #require(r["id"]?.intValue)
            #expect(sse.read(until: 15) { $0.contains(#"{"channel":"flowkit_runs","payload":"\#(runId)"}"#) })
            #expect(sse.read(until: 15) { $0.contains(#"{"channel":"flowkit_changes","payload":"\#(pk)"}"#) })
            #expect(try await api.request("GET", "/api/v1/events/stream?maxSeconds=0", token: LiveAPI.reader).status == 400)
        }
    }

    @Test("a cancelled worker service stops consuming and returns (another service of its group failed)")
    func cancelledWorkerReturns() async throws {
        let redis = try await TestServers.freshRedis()
        var wc = WorkerConfig(name: "cancel-test", queues: ["default"], concurrency: 1)
        wc.shutdownGrace = 0.5
        let service = WorkerService(worker: Worker(redis: redis, flows: [], config: wc))
        let returned = Flag()
        let task = Task { try? await service.run(); returned.set() }
        try await Task.sleep(for: .milliseconds(500))
        #expect(!returned.value)
        task.cancel()
        try await eventually("the cancelled worker service to return", timeout: 20) { returned.value }
    }

    @Test("standalone on a port in use says so and exits 1, before starting anything")
    func portInUse() throws {
        let (port, fd) = try listeningPort()
        defer { close(fd) }
        let r = try flowctl(["standalone", "--port", String(port)], api: nil)
        #expect(r.status == 1)
        #expect(r.output.contains("cannot listen on 127.0.0.1:\(port): address already in use"))
    }
}

@Suite("Import errors", .serialized)
struct ImportErrorTests {
    static let goodCron = Flow("cron_flow", schedule: Schedule(cron: "0 3 * * *")) { f in f.task("t") { _ in ["ok": true] } }
    static let badCron = Flow("cron_flow", schedule: Schedule(cron: "0 25 * * *")) { f in f.task("t") { _ in ["ok": true] } }

    @Test("one broken flow stops no other: it is set aside with its message, and so is a flow that starts it")
    func admitting() {
        let cycle = Flow("cyclic") { f in
            let a = f.task("a") { _ in nil }, b = f.task("b") { _ in nil }
            a --> b; b --> a
        }
        let starter = Flow("starter") { f in f.triggerFlow("go", flow: "cyclic") }
        let fine = Flow("fine") { f in f.task("t") { _ in nil } }
        let r = FlowRegistry(admitting: [Self.badCron, cycle, starter, fine, fine])
        #expect(r.flows.map(\.id) == ["fine"])
        #expect(r.importErrors.map(\.flowId) == ["cron_flow", "cyclic", "fine", "starter"])
        #expect(r.importErrors[0].message.contains("hour") && r.importErrors[0].message.contains("25"))
        #expect(r.importErrors[1].message.contains("has a cycle"))
        #expect(r.importErrors[2].message == "flow `fine` is registered twice")
        #expect(r.importErrors[3].message.contains("`cyclic`, which could not be registered"))
        #expect(throws: FlowValidationError.self) { try FlowRegistry([Self.badCron, fine]) }
    }

    @Test("import errors show in /api/v1/flows, /health and flowctl flows list; a worker whose copy is broken hands its tasks back, and the run is flagged stalled saying why")
    func shownAndRefused() async throws {
        let admitted = FlowRegistry(admitting: allFlows + [Flow("broken_flow", schedule: Schedule(cron: "61 * * * *")) { f in f.task("t") { _ in nil } }])
        let workerSide = FlowRegistry(admitting: allFlows + [Self.badCron])
        let api = try await LiveAPI(flows: admitted.flows + [Self.goodCron], importErrors: admitted.importErrors,
                                    workerFlows: workerSide.flows, workerImportErrors: workerSide.importErrors)
        do {
            let flows = try await api.request("GET", "/api/v1/flows").json
            let errors = flows["importErrors"]?.arrayValue ?? []
            #expect(errors.count == 1 && errors.first?["flowId"] == "broken_flow" && errors.first?["reportedBy"] == "api-test-scheduler")
            #expect(errors.first?["message"]?.stringValue?.contains("61") == true)
            #expect(flows["flows"]?.arrayValue?.contains { $0["flowId"] == "catalunya_data_pipeline" } == true)
            let health = try await api.request("GET", "/health")
            #expect(health.status == 200 && health.json["importErrors"]?.arrayValue?.first?["flowId"] == "broken_flow")
            let listed = try flowctl(["flows", "list"], api: api)
            #expect(listed.status == 0 && listed.output.contains("1 flow could not be registered (import errors):")
                    && listed.output.contains("broken_flow: "), "\(listed.output)")

            let run = try #require(try await api.request("POST", "/api/v1/flows/cron_flow/runs", token: LiveAPI.admin).json["runId"]?.stringValue)
            try await eventually("the run flagged stalled", timeout: 20) { try await api.store.run(run).stalledReason != nil }
            let reason = try await api.store.run(run).stalledReason ?? ""
            #expect(reason.contains("no live worker has version 1 of flow `cron_flow`") && reason.contains("on worker `api-test-worker` it could not be loaded: ")
                    && reason.contains("25"), "\(reason)")
            let ti = try #require(try await api.store.taskInstances(runId: run).first)
            #expect(ti.state == "queued" && ti.startedAt == nil)
            let log = try await api.store.logs(runId: run, taskId: "t", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(log.first?.hasPrefix("flow `cron_flow` could not be loaded on worker `api-test-worker`: ") == true, "\(log)")
            let shown = try flowctl(["runs", "show", run], api: api)
            #expect(shown.output.contains("stalled: no live worker has version 1 of flow `cron_flow`"), "\(shown.output)")
        } catch { await api.stop(); throw error }
        await api.stop()
    }
}
