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
