import Foundation
import Testing
@testable import FlowKit
import Flows

@Suite("JSON form and hash")
struct FlowDefinitionTests {
    func sample(retries: Int = 1) -> Flow {
        Flow("sample", description: "d", tags: ["t"], schedule: .cron("0 6 * * *", timeZone: "Europe/Madrid"),
             params: [Param("n", .int, default: 3)], defaults: TaskOptions(retry: RetryPolicy(retries: retries))) { f in
            let a = f.task("a") { _ in nil }
            let b = f.shell("b", script: "echo $FLOWKIT_PARAM_N", environment: ["X": "1"])
            let c = f.celery("c", name: "tasks.add", queue: "python")
            a --> [b, c]
        }
    }

    @Test("the JSON form round-trips")
    func roundTrip() throws {
        let d = FlowDefinition(sample())
        let back = try FlowDefinition.decode(try d.json())
        #expect(back == d)
        #expect(back.edges == [["a", "b"], ["a", "c"]])
        #expect(back.task("b")?.command?.argv == ["/bin/sh", "-c", "echo $FLOWKIT_PARAM_N"])
        #expect(back.task("c")?.celeryName == "tasks.add")
        #expect(back.task("c")?.queue == "python")
        #expect(back.task("a")?.retry.retries == 1)
    }

    @Test("the hash is stable for the same flow and changes when the flow does")
    func hashStability() throws {
        let h1 = try FlowDefinition(sample()).contentHash()
        let h2 = try FlowDefinition(sample()).contentHash()
        let h3 = try FlowDefinition(sample(retries: 2)).contentHash()
        #expect(h1 == h2)
        #expect(h1 != h3)
        #expect(h1.count == 64)
    }

    @Test("SHA-256 matches the standard test vectors")
    func sha256() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(String(repeating: "a", count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test("every shipped flow validates and serializes")
    func shippedFlows() throws {
        let registry = try FlowRegistry(allFlows)
        #expect(registry.ids == ["catalunya_data_pipeline", "example_hourly", "example_retry", "example_sleep", "lakehouse_end_to_end"])
        for f in allFlows {
            let d = FlowDefinition(f)
            #expect(try FlowDefinition.decode(try d.json()) == d)
        }
        let cat = try registry.flow("catalunya_data_pipeline")
        #expect(cat.schedule == .cron("0 */6 * * *", timeZone: "Europe/Madrid"))
        #expect(cat.tasks.map(\.id) == ["extract", "validate", "load_staging", "build_marts", "quality_checks"])
        let opts = cat.effectiveOptions(cat.task("extract")!)
        #expect(opts.retry?.retries == 2 && opts.retry?.delaySeconds == 300)
        let lake = FlowGraph(FlowDefinition(try registry.flow("lakehouse_end_to_end")))
        #expect(Set(lake.downstream["bronze_to_silver"] ?? []) == ["gold_revenue_by_country", "gold_customer_orders"])
    }
}

@Suite("Commands through the task context")
struct CommandRunnerTests {
    struct Recorder: CommandRunner {
        let seen: LockedBox<[String: String]>
        func run(_ command: ShellCommand, environment: [String: String], log: TaskLogger,
                 isCancelled: @escaping @Sendable () -> Bool) async throws -> ProcessOutcome {
            seen.set(environment)
            return ProcessOutcome(exitCode: 0, signal: nil, lastStdoutLine: #"{"ok": true}"#)
        }
    }

    func context(runner: (any CommandRunner)?) -> TaskContext {
        TaskContext(flowId: "f", runId: "r1", taskId: "t", tryNumber: 2, logicalDate: Date(timeIntervalSince1970: 0),
                    dataIntervalStart: Date(timeIntervalSince1970: 0), dataIntervalEnd: Date(timeIntervalSince1970: 0),
                    params: ["rows": 3], upstream: [:], connections: ["warehouse": "postgres://w"], log: .discard, commandRunner: runner)
    }

    @Test("the runner gets the task's environment; the last stdout line, as JSON, is the result")
    func environment() async throws {
        let box = LockedBox<[String: String]>([:])
        #expect(try await context(runner: Recorder(seen: box)).run(.script("true")) == ["ok": true])
        let env = box.get()
        #expect(env["FLOWKIT_TRY_NUMBER"] == "2" && env["FLOWKIT_PARAM_ROWS"] == "3" && env["FLOWKIT_CONN_WAREHOUSE"] == "postgres://w")
    }

    @Test("without a runner, running a command is a clear error, not a crash")
    func noRunner() async {
        do {
            _ = try await context(runner: nil).run(.script("true"))
            Issue.record("ran without a runner")
        } catch {
            #expect("\(error)".contains("no command runner"))
        }
    }
}

final class LockedBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ v: T) { value = v }
    func set(_ v: T) { lock.withLock { value = v } }
    func get() -> T { lock.withLock { value } }
}

@Suite("ISO-8601 instants")
struct InstantTests {
    @Test("formats UTC instants with 0, 3 or 6 fraction digits, and parses what it formats")
    func roundTrip() {
        let d = Date(timeIntervalSince1970: 1_795_327_200.125)  // 2026-11-22T06:00:00.125Z
        #expect(Instant.format(d) == "2026-11-22T06:00:00Z")
        #expect(Instant.format(d, fractionDigits: 3) == "2026-11-22T06:00:00.125Z")
        #expect(Instant.format(d, fractionDigits: 6) == "2026-11-22T06:00:00.125000Z")
        #expect(Instant.parse("2026-11-22T06:00:00.125Z") == d)
        #expect(Instant.parse("2026-11-22T07:00:00+01:00") == Date(timeIntervalSince1970: 1_795_327_200))
        #expect(Instant.format(Date(timeIntervalSince1970: 0.9996), fractionDigits: 3) == "1970-01-01T00:00:01.000Z")
    }

    @Test("refuses what is not an instant", arguments: ["yesterday", "2026-11-22", "2026-13-01T00:00:00Z", "2026-11-22T06:00:00", "2026-11-22T06:00:00Zjunk"])
    func invalid(_ s: String) {
        #expect(Instant.parse(s) == nil)
    }
}
