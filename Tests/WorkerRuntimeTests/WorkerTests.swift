import CeleryProtocol
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import ProcessSupport
import RedisClient
import Testing
@testable import WorkerRuntime

let shellChecks = Flow("shell_checks", params: [Param("city", .string, default: "Lleida")]) { f in
    f.shell("timeout", script: "sleep 30", timeout: .seconds(1))
    f.shell("env", script: "echo \"city=$FLOWKIT_PARAM_CITY\"; printf '{\"len\": %s}\\n' \"${#FLOWKIT_PARAM_CITY}\"")
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

@Suite("Faults", .serialized)
struct FaultTests {
    @Test("a worker killed mid-task: its message is delivered again and the try finishes elsewhere, one success recorded")
    func killedWorker() async throws {
        try await withSystem(workers: 0) { sys in
            let flowctl = try TestServers.flowctlPath()
            // A real worker process, to kill -9.
            let env = ["FLOWKIT_REDIS_URL": "redis://127.0.0.1:\(TestServers.redisPort)/0"]
            let child = try spawn([flowctl, "worker", "--name", "victim", "--heartbeat-interval", "0.3", "--visibility-timeout", "2"], env: env)
            let run = try await sys.trigger("example_sleep", conf: ["seconds": 3])
            try await sys.waitForTask(run, "sleep", state: "running")
            #expect(try await sys.store.taskInstances(runId: run)[0].worker == "victim")
            kill(child, SIGKILL)
            var status: Int32 = 0
            waitpid(child, &status, 0)
            sys.startWorker("survivor")
            #expect(try await sys.waitForRun(run, timeout: 40) == "success")
            let ti = try await sys.store.taskInstances(runId: run)[0]
            #expect(ti.tryNumber == 1)
            #expect(ti.worker == "survivor")
            #expect(try await sys.successes(run) == 1)
        }
    }

    @Test("Redis restarted mid-run (AOF on): the run finishes, nothing lost")
    func redisRestart() async throws {
        try await withSystem(workers: 1) { sys in
            let run = try await sys.trigger("lakehouse_end_to_end", conf: ["orders": 50])
            let slow = try await sys.trigger("example_sleep", conf: ["seconds": 2])
            try await sys.waitForTask(slow, "sleep", state: "running")
            try TestServers.services("restart-redis", "1")
            #expect(try await sys.waitForRun(slow, timeout: 60) == "success")
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
            #expect(try await sys.successes(slow) == 1)
        }
    }

    @Test("Redis flushed mid-run: the scheduler rebuilds the lost messages from PostgreSQL")
    func redisFlushed() async throws {
        try await withSystem(workers: 0) { sys in
            let run = try await sys.trigger("lakehouse_end_to_end", conf: ["orders": 20])
            try await sys.waitForTask(run, "ingest", state: "queued")
            _ = try await sys.redis.command("FLUSHALL")
            sys.startWorker("after-flush")
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
        }
    }
}

func spawn(_ argv: [String], env: [String: String]) throws -> pid_t {
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    let args: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = e.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { args.forEach { free($0) }; envp.forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], nil, nil, args, envp)
    if rc != 0 { throw TaskError("cannot start \(argv[0]): \(rc)") }
    return pid
}

/// The Python of the virtualenv `scripts/celery/venv.sh` makes (make test makes it first).
func celeryPython() throws -> String {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".flowkit/venv-celery/bin/python").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestServers.Missing(variable: "the Celery virtualenv (scripts/celery/venv.sh, which make test runs)")
    }
    return path
}

func repoPath(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(relative).path
}

@Suite("Real Celery on the other side", .serialized)
struct CeleryInteropTests {
    @Test("a Celery client's send_task is executed by a Swift worker and AsyncResult.get() returns the result")
    func celeryClient() async throws {
        let python = try celeryPython()
        try await withSystem(workers: 1) { sys in
            let (status, out) = try ProcessRunner.runToCompletion(
                ["/usr/bin/env", "REDIS_URL=redis://127.0.0.1:\(TestServers.redisPort)/0", python, repoPath("scripts/celery/client_roundtrip.py"), "default"])
            #expect(status == 0, "\(out)")
            let line = try #require(out.split(separator: "\n").last)
            let v = try JSONValue.parse(String(line))
            #expect(v["status"] == "SUCCESS")
            #expect(v["result"]?["args"] == [2, "dos", ["tres": 3.5]])
            #expect(v["result"]?["kwargs"] == ["city": "Tarragona"])
            _ = sys
        }
    }
}

let pythonFlow = Flow("python_interop", params: [Param("x", .int, default: 6), Param("y", .int, default: 7)]) { f in
    let multiply = f.celery("multiply", name: "flowkit_test.multiply", queue: "python")
    multiply --> f.task("check") { ctx in
        guard ctx.upstream["multiply"]?["product"]?.intValue == 42 else { throw TaskError("python returned \(ctx.upstream)") }
        return ["checked": true]
    }
}
let pythonFailing = Flow("python_failing") { f in
    f.celery("fail", name: "flowkit_test.fail", queue: "python")
}

extension CeleryInteropTests {
    @Test("a flow task declared as an external Celery task runs on a Python Celery worker; its outcome and result reach the run")
    func pythonWorker() async throws {
        let python = try celeryPython()
        let celery = URL(fileURLWithPath: python).deletingLastPathComponent().appendingPathComponent("celery").path
        try await withSystem(flows: [pythonFlow, pythonFailing], workers: 1) { sys in
            let pid = try spawn(["/bin/sh", "-c", "cd \"$0\" && exec \"$1\" -A flowkit_python_tasks worker -Q python --pool solo --loglevel WARNING --without-gossip --without-mingle",
                                 repoPath("scripts/celery"), celery],
                                env: ["REDIS_URL": "redis://127.0.0.1:\(TestServers.redisPort)/0"])
            defer { kill(pid, SIGKILL); var st: Int32 = 0; waitpid(pid, &st, 0) }
            let ok = try await sys.trigger("python_interop")
            #expect(try await sys.waitForRun(ok, timeout: 60) == "success")
            let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: ok).map { ($0.taskId, $0) })
            #expect(tis["multiply"]?.result == ["product": 42, "by": "python"])
            #expect(tis["multiply"]?.worker?.hasPrefix("celery:") == true)
            let bad = try await sys.trigger("python_failing")
            #expect(try await sys.waitForRun(bad, timeout: 60) == "failed")
            #expect(try await sys.store.taskInstances(runId: bad)[0].error?.contains("python says no") == true)
        }
    }
}

/// A process's resident memory in MB (Linux).
func residentMegabytes(pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
    let pages = Int(text.split(separator: " ")[1]) ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / (1 << 20)
}
