import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Scheduler
import Testing

/// A flow whose middle task fails: its downstream is upstream_failed, a cleanup with `allDone` runs anyway.
let failingChain = Flow("failing_chain", defaults: TaskOptions(retry: RetryPolicy(retries: 1, delay: .seconds(30)))) { f in
    let a = f.task("a") { _ in ["n": 1] }
    let b = f.task("b", after: [a]) { ctx in throw TaskError("b breaks on try \(ctx.tryNumber)") }
    f.task("c", after: [b]) { _ in nil }
    f.task("cleanup", after: [b], triggerRule: .allDone) { ctx in ["saw": .string(ctx.upstream.isEmpty ? "nothing" : "something")] }
}

let celeryAndTimeout = Flow("celery_and_timeout") { f in
    f.celery("py", name: "tasks.add")
    f.task("slow", timeout: .milliseconds(300)) { _ in try await Task.sleep(for: .seconds(30)); return nil }
    f.sensor("soft", pokeInterval: .milliseconds(100), timeout: .milliseconds(350), softFail: true) { _ in .notYet("never") }
}

@Suite("In-process test runs (flowctl flows test, FlowTestRun)", .serialized)
struct FlowTestRunTests {
    @Test("example_branch: the chosen side runs, the other is skipped, the join sees only it; a conf that breaks the params is refused before anything runs")
    func branch() async throws {
        let run = try await FlowTestRun.run(exampleBranch, .init(conf: ["pick": "right"]))
        #expect(run.succeeded)
        #expect(run["left"]?.state == .skipped && run["right"]?.state == .success)
        #expect(run.result(of: "join") == ["followed": ["right"]])
        #expect(run.outcomes.map(\.taskId) == ["choose", "left", "right", "join"])
        do {
            _ = try await FlowTestRun.run(exampleBranch, .init(conf: ["pick": 5]))
            Issue.record("a number for a string param was accepted")
        } catch {
            #expect("\(error)".contains("pick"), "\(error)")
        }
    }

    @Test("example_mapping: one instance per element, the list of their results downstream; --task runs a task with its ancestors only")
    func mapping() async throws {
        let run = try await FlowTestRun.run(exampleMapping)
        #expect(run.succeeded)
        #expect(run["double"]?.instances.map(\.result) == [2, 4, 6])
        #expect(run.result(of: "total") == ["sum": 12, "count": 3])
        let only = try await FlowTestRun.run(exampleMapping, .init(conf: ["items": [5]], task: "double"))
        #expect(only.outcomes.map(\.taskId) == ["make_list", "double"])
        #expect(only.result(of: "double") == [10])
        let empty = try await FlowTestRun.run(exampleMapping, .init(conf: ["items": []]))
        #expect(empty["double"]?.state == .skipped)
        do {
            _ = try await FlowTestRun.run(exampleMapping, .init(task: "nope"))
            Issue.record("an unknown task was accepted")
        } catch {
            #expect("\(error)".contains("no task `nope`"))
        }
    }

    @Test("retries: example_retry succeeds on try 2 (no delay); a failure exhausts its tries, downstream is upstream_failed, an all_done task still runs, the run fails")
    func retriesAndFailures() async throws {
        let lines = LinesSeen()
        let retry = try await FlowTestRun.run(exampleRetry, .init(noDelay: true, log: { lines.add($0) }))
        #expect(retry.succeeded && retry["flaky"]?.tries == 2 && retry.result(of: "flaky") == ["try": 2])
        #expect(lines.all.contains("flaky | task failed: failing on purpose on try 1 (fail_tries = 1)"))
        let failed = try await FlowTestRun.run(failingChain, .init(noDelay: true))
        // The 30 s retry delay was skipped (said in the log, not timed).
        #expect(failed["b"]?.log.contains("up for retry in 0.0s") == true)
        #expect(failed.state == .failed)
        #expect(failed["b"]?.state == .failed && failed["b"]?.tries == 2 && failed["b"]?.error == "b breaks on try 2")
        #expect(failed["c"]?.state == .upstreamFailed)
        #expect(failed["cleanup"]?.state == .success)
    }

    @Test("what needs the servers fails as not runnable; a task over its timeout fails; a soft-failing sensor is skipped")
    func limits() async throws {
        let run = try await FlowTestRun.run(celeryAndTimeout, .init(noDelay: true))
        #expect(run.state == .failed)
        #expect(run["py"]?.error?.hasPrefix("not runnable in-process: `py` is a Celery task") == true)
        #expect(run["slow"]?.state == .failed && run["slow"]?.error?.contains("timed out after 0.3s") == true)
        #expect(run["soft"]?.state == .skipped && run["soft"]?.error?.hasPrefix("sensor timed out after 0.35s: never") == true)
    }

    @Test("example_sql against a real PostgreSQL as its warehouse: statements, templates and the result, as on a worker")
    func sqlTask() async throws {
        let url = try await TestServers.freshDatabase()
        let run = try await FlowTestRun.run(exampleSQL, .init(conf: ["n": 4], connections: ["warehouse": url]))
        #expect(run.succeeded, "\(run.outcomes.map { "\($0.taskId): \($0.error ?? "")" })")
        #expect(run.result(of: "total")?["rows"] == [[10]])
    }

    @Test("catalunya_data_pipeline in-process against a real warehouse: extract, validate, COPY, dbt build and the checks, as on workers")
    func catalunya() async throws {
        let url = try await TestServers.freshDatabase()
        let run = try await FlowTestRun.run(catalunyaDataPipeline, .init(noDelay: true, connections: ["warehouse": url]))
        #expect(run.succeeded, "\(run.outcomes.map { "\($0.taskId): \($0.error ?? "")" })")
        #expect(run.result(of: "extract") == ["rows": 5040])
        #expect(run.result(of: "build_marts")?["models"] == 2 && run.result(of: "build_marts")?["daily_station_averages"] == 210)
        #expect(run.result(of: "quality_checks")?["stations"] == 10)
    }

    @Test("flowctl flows test prints each task's log and the outcome table; exits 0 on success, 1 on failure, 1 with a message on a bad conf")
    func command() throws {
        let flowctl = try TestServers.flowctlPath()
        let ok = try runCommand([flowctl, "flows", "test", "example_branch", "--conf", #"{"pick":"right"}"#])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.output.contains("left | skipped: not chosen by branch `choose`"))
        #expect(ok.output.range(of: #"left\s+skipped"#, options: .regularExpression) != nil)
        #expect(ok.output.contains("example_branch: success"))
        let failing = try runCommand([flowctl, "flows", "test", "example_retry", "--conf", #"{"fail_tries": 5}"#, "--no-delay"])
        #expect(failing.status == 1 && failing.output.contains("example_retry: failed"))
        let bad = try runCommand([flowctl, "flows", "test", "example_branch", "--conf", "[1]"])
        #expect(bad.status == 1 && bad.output.contains("--conf must be a JSON object"))
        let unknown = try runCommand([flowctl, "flows", "test", "no_such_flow"])
        #expect(unknown.status == 1 && unknown.output.contains("unknown flow `no_such_flow`"))
    }
}

final class LinesSeen: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ l: String) { lock.withLock { lines.append(l) } }
    var all: [String] { lock.withLock { lines } }
}

/// Runs a command to its end; its exit status and its stdout and stderr together.
func runCommand(_ argv: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0])
    p.arguments = Array(argv.dropFirst())
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
