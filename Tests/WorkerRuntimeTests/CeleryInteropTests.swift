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
    multiply --> f.celery("describe", name: "flowkit_test.describe", context: true, queue: "python")
}
let pythonFailing = Flow("python_failing") { f in
    f.celery("fail", name: "flowkit_test.fail", queue: "python")
}
let pythonLong = Flow("python_long", params: [Param("pidfile", .string, default: "/dev/null")]) { f in
    f.celery("sleep_long", name: "flowkit_test.sleep_long", queue: "python")
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
            // Opted in with `context: true`: the run, task, try, dates and upstream results.
            let described = try #require(tis["describe"]?.result)
            #expect(described["run_id"]?.stringValue == ok && described["task_id"] == "describe" && described["try_number"] == 1)
            #expect(described["product_upstream"] == 42 && described["x"] == 6)
            #expect(described["logical_date"]?.stringValue?.hasSuffix("Z") == true)
            let bad = try await sys.trigger("python_failing")
            #expect(try await sys.waitForRun(bad, timeout: 60) == "failed")
            #expect(try await sys.store.taskInstances(runId: bad)[0].error?.contains("python says no") == true)
        }
    }
}

extension CeleryInteropTests {
    @Test("cancelling a run revokes its running Celery task with terminate: the prefork child running it is killed")
    func revokeOnCancel() async throws {
        let python = try celeryPython()
        let celery = URL(fileURLWithPath: python).deletingLastPathComponent().appendingPathComponent("celery").path
        try await withSystem(flows: [pythonLong], workers: 1) { sys in
            let pid = try spawn(["/bin/sh", "-c", "cd \"$0\" && exec \"$1\" -A flowkit_python_tasks worker -Q python --pool prefork --concurrency 1 --loglevel INFO --without-gossip --without-mingle",
                                 repoPath("scripts/celery"), celery],
                                env: ["REDIS_URL": "redis://127.0.0.1:\(TestServers.redisPort)/0"])
            defer { kill(pid, SIGKILL); var st: Int32 = 0; waitpid(pid, &st, 0) }
            let pidfile = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-celery-pid-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: pidfile) }
            let run = try await sys.trigger("python_long", conf: ["pidfile": .string(pidfile.path)])
            var child: pid_t = 0
            try await eventually("the Celery task to start", timeout: 60) {
                child = pid_t((try? String(contentsOf: pidfile, encoding: .utf8)).flatMap { Int32($0) } ?? 0)
                return child > 0
            }
            #expect(kill(child, 0) == 0)
            try await sys.daemon.broker.perform(try await sys.store.cancelRun(runId: run, now: Date()))
            #expect(try await sys.store.run(run).state == "cancelled")
            // The prefork child that ran it gets SIGTERM (Celery replaces it with a fresh one).
            try await eventually("the Celery child running the task killed", timeout: 15) { !processRuns(child) }
        }
    }
}

/// Whether `pid` is a process that has not ended (a zombie, ended but not yet reaped by its
/// parent, has ended).
func processRuns(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
    return !status.contains("State:\tZ")
}

/// A process's resident memory in MB (Linux).
func residentMegabytes(pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
    let pages = Int(text.split(separator: " ")[1]) ?? 0
    return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / (1 << 20)
}

/// Messages captured from a real Celery 5 client (the fixture of CeleryProtocolTests).
struct CapturedMessage: Decodable { let list: String; let raw: String }
func capturedMessages() throws -> [CapturedMessage] {
    struct Captured: Decodable { let messages: [CapturedMessage] }
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("CeleryProtocolTests/Fixtures/celery5_messages.json")
    return try JSONDecoder().decode(Captured.self, from: Data(contentsOf: url)).messages
}
