import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Testing
@testable import WorkerRuntime
import Scheduler

/// The Python files of these tests, written once per test process.
let pythonTestFiles: URL = {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-python-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let checks = """
        import os, time

        def returns_set(context):
            return {1, 2}

        def leaks(context):
            secret = os.environ["FLOWKIT_CONN_WAREHOUSE"]
            print("connecting to", secret)
            raise RuntimeError("could not reach " + secret)

        def sleeps(context):
            with open(context.params["pidfile"], "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)

        def uses_six(context):
            import six
            return {"six": six.__version__, "task": context.task_id}
        """
    try? Data(checks.utf8).write(to: dir.appendingPathComponent("checks.py"))
    return dir
}()

let pythonChecks = Flow("python_checks", params: [Param("pidfile", .string, default: "/dev/null")]) { f in
    f.python("not_json", file: "checks.py", function: "returns_set", resources: pythonTestFiles)
    f.python("leaks", file: "checks.py", function: "leaks", resources: pythonTestFiles)
}
let pythonSlow = Flow("python_slow", params: [Param("pidfile", .string, default: "/dev/null")]) { f in
    f.python("sleeps", file: "checks.py", function: "sleeps", resources: pythonTestFiles)
}
let pythonVenv = Flow("python_venv") { f in
    f.python("a", file: "checks.py", function: "uses_six", resources: pythonTestFiles, requirements: ["six==1.17.0"])
    f.python("b", file: "checks.py", function: "uses_six", resources: pythonTestFiles, requirements: ["six==1.17.0"])
}
let pythonBadVenv = Flow("python_bad_venv") { f in
    f.python("missing", file: "checks.py", function: "uses_six", resources: pythonTestFiles, requirements: ["flowkit-no-such-package-0000==1.0"])
}

@Suite("Python tasks end to end", .serialized)
struct PythonTaskEndToEndTests {
    func withPython(_ body: (LiveSystem) async throws -> Void) async throws {
        try await withSystem(flows: allFlows + [pythonChecks, pythonSlow, pythonVenv, pythonBadVenv], workers: 0) { sys in
            // A home of this test's own: the virtualenvs are built here, fresh.
            let home = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-python-home-\(UUID().uuidString)")
            setenv("FLOWKIT_HOME", home.path, 1)
            setenv("FLOWKIT_CONN_WAREHOUSE", "postgres://etl:py-secret-4242@db.example:5432/warehouse", 1)
            defer { unsetenv("FLOWKIT_HOME"); try? FileManager.default.removeItem(at: home) }
            sys.startWorker("w1")
            sys.startWorker("w2")
            try await body(sys)
        }
    }

    func tasks(_ sys: LiveSystem, _ run: String) async throws -> [String: TaskInstanceRecord] {
        Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
    }

    func log(_ sys: LiveSystem, _ run: String, _ task: String) async throws -> String {
        try await sys.store.logs(runId: run, taskId: task, tryNumber: 1, after: 0).lines.map(\.line).joined(separator: "\n")
    }

    @Test("example_python: stats and a report read from the context; an exception is the error, its traceback in the log")
    func examplePython() async throws {
        try await withPython { sys in
            let run = try await sys.trigger("example_python")
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
            let t = try await tasks(sys, run)
            #expect(t["stats"]?.result?["count"] == 3 && t["stats"]?.result?["mean"]?.doubleValue == 2.0)
            #expect(t["report"]?.result == ["summary": "count=3 mean=2.0"])
            let statsLog = try await log(sys, run, "stats")
            #expect(statsLog.contains("3 values for run \(run)") && statsLog.contains("computing the mean"))

            let other = try await sys.trigger("example_python", conf: ["values": [2, 4, 9, 1]])
            #expect(try await sys.waitForRun(other, timeout: 60) == "success")
            #expect(try await tasks(sys, other)["report"]?.result == ["summary": "count=4 mean=4.0"])

            let failing = try await sys.trigger("example_python", conf: ["fail": true])
            #expect(try await sys.waitForRun(failing, timeout: 60) == "failed")
            let f = try await tasks(sys, failing)
            #expect(f["stats"]?.error == "ValueError: asked to fail")
            #expect(f["report"]?.state == "upstream_failed")
            let trace = try await log(sys, failing, "stats")
            #expect(trace.contains("Traceback (most recent call last)") && trace.contains("raise ValueError(\"asked to fail\")"))
        }
    }

    @Test("a value that is not JSON fails saying so; a connection's password is masked in the output and the error")
    func notJSONAndMasking() async throws {
        try await withPython { sys in
            let run = try await sys.trigger("python_checks")
            #expect(try await sys.waitForRun(run, timeout: 60) == "failed")
            let t = try await tasks(sys, run)
            #expect(t["not_json"]?.error?.contains("`returns_set` returned a value that is not JSON (set)") == true)
            let leaked = try #require(t["leaks"]?.error)
            #expect(leaked.hasPrefix("RuntimeError: could not reach") && !leaked.contains("py-secret-4242"))
            let output = try await log(sys, run, "leaks")
            #expect(output.contains("connecting to") && !output.contains("py-secret-4242"))
        }
    }

    @Test("cancelling a run kills the Python process within 2 s")
    func cancel() async throws {
        try await withPython { sys in
            let pidfile = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-py-pid-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: pidfile) }
            let run = try await sys.trigger("python_slow", conf: ["pidfile": .string(pidfile.path)])
            var pid: pid_t = 0
            try await eventually("the function to start", timeout: 30) {
                pid = pid_t((try? String(contentsOf: pidfile, encoding: .utf8)).flatMap { Int32($0) } ?? 0)
                return pid > 0
            }
            #expect(kill(pid, 0) == 0)
            let t0 = Date()
            try await sys.daemon.broker.perform(try await sys.store.cancelRun(runId: run, now: Date()))
            try await eventually("the process gone", timeout: 10) { kill(pid, 0) != 0 }
            let took = Date().timeIntervalSince(t0)
            #expect(took < 2.5, "the Python process lived \(took)s after the cancel")
        }
    }

    @Test("two tries needing the same virtualenv at once build it once; a requirement that does not exist fails with pip's error")
    func virtualenvs() async throws {
        try await withPython { sys in
            let run = try await sys.trigger("python_venv")
            #expect(try await sys.waitForRun(run, timeout: 240) == "success")
            let t = try await tasks(sys, run)
            #expect(t["a"]?.result == ["six": "1.17.0", "task": "a"] && t["b"]?.result == ["six": "1.17.0", "task": "b"])
            let logs = [try await log(sys, run, "a"), try await log(sys, run, "b")]
            #expect(logs.filter { $0.contains("building a virtualenv for six==1.17.0") }.count == 1)
            #expect(logs.filter { $0.contains("using the virtualenv another try built") }.count == 1)

            let bad = try await sys.trigger("python_bad_venv")
            #expect(try await sys.waitForRun(bad, timeout: 240) == "failed")
            let error = try #require(try await tasks(sys, bad)["missing"]?.error)
            #expect(error.contains("building the virtualenv for flowkit-no-such-package-0000==1.0 failed"))
            #expect(error.contains("flowkit-no-such-package-0000"))
        }
    }
}
