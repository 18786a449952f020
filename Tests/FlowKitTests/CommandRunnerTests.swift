import Foundation
import Testing
@testable import FlowKit
import Flows

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
