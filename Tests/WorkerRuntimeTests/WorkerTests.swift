import CeleryProtocol
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import ProcessSupport
import RedisClient
import Testing
@testable import WorkerRuntime
import Scheduler

let shellChecks = Flow("shell_checks", params: [Param("city", .string, default: "Lleida")]) { f in
    f.shell("timeout", script: "sleep 30", timeout: .seconds(1))
    f.shell("env", script: "echo \"city=$FLOWKIT_PARAM_CITY\"; printf '{\"len\": %s}\\n' \"${#FLOWKIT_PARAM_CITY}\"")
}

/// A 50-task chain whose last task reads the first one's result lazily, plus the refusals.
let ancestorChain = Flow("ancestor_chain") { f in
    var prev = f.task("t0") { _ in ["origin": "t0"] }
    let src = f.task("src") { _ in [1, 2] }
    let mapped = f.map("m", over: .result(of: src)) { _, x in x }
    let side = f.task("side") { _ in "side" }
    for i in 1..<50 { let t = f.task("t\(i)") { _ in nil }; prev --> t; prev = t }
    let last = f.task("last") { ctx in
        var out: [String: JSONValue] = ["t0": try await ctx.result(of: "t0") ?? .null, "t48": try await ctx.result(of: "t48") ?? .null,
                                        "direct": try await ctx.result(of: "t49") ?? .null]
        do { _ = try await ctx.result(of: "side") } catch { out["notAncestor"] = .string("\(error)") }
        do { _ = try await ctx.result(of: "m") } catch { out["mapped"] = .string("\(error)") }
        return .object(out)
    }
    prev --> last
    mapped --> f.task("after_m") { _ in nil } --> last
}

@Suite("Worker end to end", .serialized)
struct WorkerTests {
    @Test("a flow runs end to end: every task succeeds once, results flow downstream, logs are stored")
    func lakehouse() async throws {
        try await withSystem(workers: 2) { sys in
            let run = try await sys.trigger("lakehouse_end_to_end", conf: ["orders": 200])
            #expect(try await sys.waitForRun(run) == "success")
            let tis = try await sys.store.taskInstances(runId: run)
            #expect(tis.count == 6 && tis.allSatisfy { $0.state == "success" && $0.tryNumber == 1 })
            #expect(tis.first { $0.taskId == "quality" }?.result == ["orders_checked": 200])
            #expect(try await sys.successes(run) == 6)
        }
    }

    @Test("a task reads any ancestor's result by id, loaded only when asked; a task that is not an ancestor, or a mapped one further up, is refused by name")
    func ancestorResults() async throws {
        try await withSystem(flows: allFlows + [ancestorChain]) { sys in
            let run = try await sys.trigger("ancestor_chain")
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
            let last = try #require(try await sys.store.taskInstances(runId: run).first { $0.taskId == "last" }?.result)
            #expect(last["t0"] == ["origin": "t0"] && last["t48"] == .null && last["direct"] == .null)
            #expect(last["notAncestor"] == "task `last` asked for the result of `side`, which is not one of its upstream tasks, direct or indirect")
            #expect(last["mapped"] == "the results of mapped task `m` reach its direct downstream tasks only: make `last` depend on `m`")
        }
    }

    @Test("a failing try is retried and succeeds on try 2; too many failures fail the run")
    func retries() async throws {
        try await withSystem { sys in
            let ok = try await sys.trigger("example_retry")
            #expect(try await sys.waitForRun(ok) == "success")
            let ti = try await sys.store.taskInstances(runId: ok)[0]
            #expect(ti.tries.map(\.state) == ["failed", "success"])
            let logs = try await sys.store.logs(runId: ok, taskId: "flaky", tryNumber: 1, after: 0)
            #expect(logs.lines.contains { $0.line.contains("failing on purpose on try 1") })
            let bad = try await sys.trigger("example_retry", conf: ["fail_tries": 5])
            #expect(try await sys.waitForRun(bad) == "failed")
            #expect(try await sys.store.taskInstances(runId: bad)[0].tries.count == 3)
        }
    }

    @Test("shell tasks: conf reaches them as environment, and a timeout kills the process and fails the try")
    func shellTasks() async throws {
        try await withSystem(flows: [shellChecks]) { sys in
            let run = try await sys.trigger("shell_checks", conf: ["city": "L'Hospitalet; rm -rf /"])
            #expect(try await sys.waitForRun(run) == "failed")
            let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
            #expect(tis["env"]?.state == "success")
            #expect(tis["env"]?.result == ["len": 22])
            #expect(tis["timeout"]?.state == "failed")
            #expect(tis["timeout"]?.error?.contains("timed out") == true)
        }
    }

    @Test("cancelling a run stops its running task on the worker")
    func cancel() async throws {
        try await withSystem { sys in
            let run = try await sys.trigger("example_sleep", conf: ["seconds": 60])
            try await sys.waitForTask(run, "sleep", state: "running")
            try await sys.daemon.broker.perform(try await sys.store.cancelRun(runId: run, now: Date()))
            #expect(try await sys.store.run(run).state == "cancelled")
            // The worker notices at its next heartbeat and frees the slot: a new run gets through.
            let next = try await sys.trigger("example_sleep", conf: ["seconds": 0.1])
            let next2 = try await sys.trigger("example_sleep", conf: ["seconds": 0.1])
            #expect(try await sys.waitForRun(next) == "success")
            #expect(try await sys.waitForRun(next2) == "success")
            let unacked = try await sys.redis.command("HLEN", "unacked").int
            #expect(unacked == 0)
        }
    }

    @Test("malformed and unknown messages are dead-lettered and the worker keeps running")
    func malformed() async throws {
        try await withSystem { sys in
            try await sys.redis.run { s in
                _ = try s.pipeline([["LPUSH", "default", "{not json"], ["LPUSH", "default", #"{"properties": {"delivery_tag": "x"}, "headers": {}}"#]]
                                   + KombuLayout.enqueueCommands(CeleryMessage(task: "nobody.knows", queue: "default")))
            }
            let run = try await sys.trigger("example_sleep", conf: ["seconds": 0])
            #expect(try await sys.waitForRun(run) == "success")
            try await eventually("three dead letters") { try await sys.redis.command("LLEN", FlowKitKeys.deadLetter).int == 3 }
            let reasons = try await sys.redis.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).array?.compactMap(\.string) ?? [] }
                .map { try JSONValue.parse($0)["reason"]?.stringValue ?? "" }
            #expect(reasons.contains { $0.contains("unknown task `nobody.knows`") })
            #expect(reasons.contains("a message on `default` is not JSON"))
            #expect(reasons.contains { $0.contains("headers.task is missing") })
            #expect(try await sys.redis.command("HLEN", "unacked").int == 0)
        }
    }

    @Test("example_branch: the branch named by conf.pick runs, the other is skipped; an unknown pick fails, naming the valid ones")
    func branchEndToEnd() async throws {
        try await withSystem { sys in
            for (pick, ran, skipped) in [("left", "left", "right"), ("right", "right", "left")] {
                let run = try await sys.trigger("example_branch", conf: ["pick": .string(pick)])
                #expect(try await sys.waitForRun(run) == "success")
                let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
                #expect(tis["choose"]?.result == [.string(pick)])
                #expect(tis[ran]?.state == "success" && tis[skipped]?.state == "skipped")
                #expect(tis["join"]?.result == ["followed": [.string(ran)]])
            }
            let bad = try await sys.trigger("example_branch", conf: ["pick": "middle"])
            #expect(try await sys.waitForRun(bad) == "failed")
            let choose = try #require(try await sys.store.taskInstances(runId: bad).first { $0.taskId == "choose" })
            #expect(choose.error == "branch `choose` chose `middle`, not a direct downstream task: the valid ones are `left`, `right`")
        }
    }

    @Test("a run past its runTimeout ends failed; its running task is stopped on its worker")
    func runTimeoutEndToEnd() async throws {
        let slow = Flow("slow_run", runTimeout: .seconds(1)) { f in
            f.task("wait") { ctx in
                while true { try ctx.checkCancellation(); try await Task.sleep(for: .milliseconds(50)) }
            }
        }
        try await withSystem(flows: allFlows + [slow]) { sys in
            let run = try await sys.trigger("slow_run")
            #expect(try await sys.waitForRun(run) == "failed")
            let ti = try #require(try await sys.store.taskInstances(runId: run).first)
            #expect(ti.state == "cancelled" && ti.error?.hasPrefix("run timeout:") == true)
            // The worker let go of the try: its slot serves the next run.
            let next = try await sys.trigger("example_sleep", conf: ["seconds": 0])
            #expect(try await sys.waitForRun(next) == "success")
            try await eventually("the worker to drop the cancelled try") { try await sys.redis.command("HLEN", "unacked").int == 0 }
        }
    }

    @Test("messages for unknown runs, and oversized ones, are dead-lettered before they run; the worker stays small")
    func brokerEdges() async throws {
        try await withSystem { sys in
            func forged(_ runId: String, header: Bool) -> CeleryMessage {
                let now = Date()
                let inv = FlowTaskInvocation(flowId: "example_sleep", runId: runId, taskId: "sleep", tryNumber: 1, logicalDate: now,
                                             dataIntervalStart: now, dataIntervalEnd: now, params: ["seconds": 0], upstream: [:],
                                             timeoutSeconds: nil)
                var m = CeleryMessage(task: FlowTaskInvocation.taskName(flow: "example_sleep", task: "sleep"),
                                      kwargs: [FlowTaskInvocation.kwarg: inv.jsonValue], queue: "default")
                if header { m.extraHeaders[FlowKitKeys.runHeader] = .string(runId) }
                return m
            }
            let withHeader = forged("manual__forged-1", header: true), bare = forged("manual__forged-2", header: false)
            // 9 MB: over the default limit of 8 MiB.
            let huge = CeleryMessage(task: "flowkit.echo", args: [.string(String(repeating: "x", count: 9 << 20))], queue: "default")
            let cmds = [withHeader, bare, huge].flatMap(KombuLayout.enqueueCommands)
            try await sys.redis.run { s in _ = try s.pipeline(cmds) }
            try await eventually("three dead letters") { try await sys.redis.command("LLEN", FlowKitKeys.deadLetter).int == 3 }
            let dead = try await sys.redis.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).array?.compactMap(\.string) ?? [] }
                .map { try JSONValue.parse($0) }
            let reasons = dead.compactMap { $0["reason"]?.stringValue }
            #expect(reasons.contains("task `flowkit.example_sleep.sleep` of unknown run `manual__forged-1`: no scheduler of this Redis dispatched it"))
            #expect(reasons.contains("task `flowkit.example_sleep.sleep` of unknown run `manual__forged-2`: no scheduler of this Redis dispatched it"))
            #expect(reasons.contains { $0.hasPrefix("a message of ") && $0.hasSuffix("bytes on `default` is over the limit of \(8 << 20) bytes") })
            // The copy kept of the big one is cut.
            #expect(dead.allSatisfy { ($0.compactJSON.utf8.count) < DeadLetter.maxPayloadBytes + 4096 })
            // None of them ran: no outcome, no Celery result, nothing left claimed.
            for m in [withHeader, bare, huge] { #expect(try await sys.redis.command("EXISTS", CeleryResult.key(m.id)).int == 0) }
            #expect(try await sys.redis.command("HLEN", "unacked").int == 0)
            // Real runs go on, their messages carry their run's key.
            let run = try await sys.trigger("example_sleep", conf: ["seconds": 0])
            #expect(try await sys.waitForRun(run) == "success")
            #expect(try await sys.redis.command("EXISTS", FlowKitKeys.run(run)).int == 1)
        }
    }

    @Test("a worker process stays small after a 28 MB message (it went from 47 to 203 MB and stayed)")
    func oversizedMessageMemory() async throws {
        let redis = try await TestServers.freshRedis()
        let r = RedisConnection(redis)
        let worker = Process()
        worker.executableURL = URL(fileURLWithPath: try TestServers.flowctlPath())
        worker.arguments = ["worker", "--queues", "edge", "--concurrency", "2", "--hostname", "memtest"]
        worker.environment = ProcessInfo.processInfo.environment.merging(["FLOWKIT_REDIS_URL": try TestServers.env("FLOWKIT_TEST_REDIS_URL")]) { $1 }
        worker.standardOutput = FileHandle.nullDevice
        worker.standardError = FileHandle.nullDevice
        try worker.run()
        defer { worker.terminate(); worker.waitUntilExit() }
        try await eventually("the worker to be up") { (try await r.command("HLEN", FlowKitKeys.workers).int ?? 0) > 0 }
        try await Task.sleep(for: .seconds(1))
        let before = residentMegabytes(pid: worker.processIdentifier)
        let huge = CeleryMessage(task: "flowkit.echo", args: [.string(String(repeating: "x", count: 21 << 20))], queue: "edge")
        #expect(huge.encoded().utf8.count > 28_000_000)
        let cmds = KombuLayout.enqueueCommands(huge) + KombuLayout.enqueueCommands(CeleryMessage(task: "flowkit.echo", args: [1], queue: "edge"))
        try await r.run { s in _ = try s.pipeline(cmds) }
        try await eventually("the big message dead-lettered, the small one answered") {
            let dead = try await r.command("LLEN", FlowKitKeys.deadLetter).int
            let waiting = try await r.command("LLEN", "edge").int
            let claimed = try await r.command("HLEN", "unacked").int
            return dead == 1 && waiting == 0 && claimed == 0
        }
        try await Task.sleep(for: .seconds(1))
        let after = residentMegabytes(pid: worker.processIdentifier)
        #expect(after - before < 40, "the worker's RSS went from \(before) MB to \(after) MB")
    }

    @Test("a Celery-format message for flowkit.echo gets a result a Celery client can read")
    func echoFromCelery() async throws {
        try await withSystem { sys in
            let captured = try capturedMessages().first { $0.raw.contains("flowkit.echo") }!
            let msg = try CeleryMessage.decode(captured.raw)
            // Route the captured envelope to the worker's queue unchanged but for the routing key.
            let raw = captured.raw.replacingOccurrences(of: "\"routing_key\": \"fixtures\"", with: "\"routing_key\": \"default\"")
            _ = try await sys.redis.command("LPUSH", "default", raw)
            var meta: JSONValue = nil
            try await eventually("celery-task-meta") {
                guard let s = try await sys.redis.command("GET", CeleryResult.key(msg.id)).string else { return false }
                meta = try JSONValue.parse(s)
                return true
            }
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"]?["args"] == ["é ñ ç", ["nested": [1, 2]]])
            #expect(meta["task_id"]?.stringValue == msg.id)
            #expect(try await sys.redis.command("HEXISTS", "unacked", msg.deliveryTag).int == 0)
        }
    }
}
