import FlowKit
import Foundation
import ProcessSupport
import Testing

@Suite("Shell tasks (processes)")
struct ShellTaskTests {
    func context(params: [String: JSONValue] = [:], log: TaskLogger = .discard) -> TaskContext {
        TaskContext(flowId: "f", runId: "r1", taskId: "t", tryNumber: 1, logicalDate: Date(timeIntervalSince1970: 0),
                    dataIntervalStart: Date(timeIntervalSince1970: 0), dataIntervalEnd: Date(timeIntervalSince1970: 0),
                    params: params, upstream: [:], log: log, commandRunner: SubprocessCommandRunner())
    }

    @Test("conf values reach the command as environment variables, never as script text")
    func noInjection() async throws {
        let evil: JSONValue = "$(touch /tmp/flowkit-pwned); echo owned"
        let result = try await context(params: ["name": evil]).run(.script("printf '%s\\n' \"$FLOWKIT_PARAM_NAME\""))
        #expect(result == .string("$(touch /tmp/flowkit-pwned); echo owned"))
        #expect(!FileManager.default.fileExists(atPath: "/tmp/flowkit-pwned"))
    }

    @Test("stdout and stderr become the log; the last stdout line, as JSON, is the result")
    func outputAndResult() async throws {
        let lines = LineSink()
        let result = try await context(log: TaskLogger { lines.add($0) }).run(.script("echo hello; echo oops >&2; echo '{\"rows\": 3}'"))
        #expect(result == ["rows": 3])
        #expect(lines.all.contains("hello"))
        #expect(lines.all.contains("[stderr] oops"))
    }

    @Test("upstream results reach the process: small ones as FLOWKIT_UPSTREAM_<TASK>, all of them in FLOWKIT_UPSTREAM_FILE")
    func upstreamResults() async throws {
        let big = String(repeating: "x", count: 5000)
        let lines = LineSink()
        let logged = TaskContext(flowId: "f", runId: "r1", taskId: "t", tryNumber: 1, logicalDate: Date(timeIntervalSince1970: 0),
                                 dataIntervalStart: Date(timeIntervalSince1970: 0), dataIntervalEnd: Date(timeIntervalSince1970: 0),
                                 params: [:], upstream: ["extract": ["rows": 3], "label": "north", "blob": .string(big)],
                                 log: TaskLogger { lines.add($0) }, commandRunner: SubprocessCommandRunner())
        let result = try await logged.run(.script("""
            echo "extract=$FLOWKIT_UPSTREAM_EXTRACT label=$FLOWKIT_UPSTREAM_LABEL blob=${FLOWKIT_UPSTREAM_BLOB:-absent}"
            cat "$FLOWKIT_UPSTREAM_FILE"
            """))
        #expect(lines.all.first == #"extract={"rows":3} label=north blob=absent"#)
        #expect(result?["blob"]?.stringValue == big && result?["extract"] == ["rows": 3])
        // The file is gone once the command ended.
        #expect(try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).allSatisfy { !$0.hasPrefix("flowkit-upstream-t-1-") })
    }

    @Test("a non-zero exit fails the try with its cause — the last lines of stderr — and the status, not the script")
    func failure() async {
        do {
            _ = try await context().run(.script("exit 3"))
            Issue.record("expected a failure")
        } catch let e as TaskError {
            #expect(e.message == "`exit 3` failed with exit status 3 and wrote nothing on stderr (its log has the output)", "\(e.message)")
        } catch { Issue.record("unexpected \(error)") }
        let script = """
            echo starting
            echo "a warning" >&2
            echo "first" >&2; echo "second" >&2
            cat /nonexistent/dir/valid.csv
            echo "after" >/dev/null
            """
        do {
            _ = try await context().run(.script(script + "\nexit 2"))
            Issue.record("expected a failure")
        } catch let e as TaskError {
            let lines = e.message.split(separator: "\n").map(String.init)
            #expect(lines.count == 3, "\(e.message)")
            #expect(lines.first == "first" && lines.last?.hasSuffix("(exit status 2)") == true, "\(e.message)")
            #expect(lines.last?.contains("/nonexistent/dir/valid.csv: No such file or directory") == true, "\(e.message)")
            #expect(!e.message.contains("echo"), "the script is not the error: \(e.message)")
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test("cancelling kills the whole process group, children included")
    func killGroup() async throws {
        let marker = "/tmp/flowkit-child-\(UUID().uuidString)"
        let ctx = context()
        let t = Task { try await ctx.run(.script("(sleep 2; touch \(marker)) & sleep 30")) }
        try await Task.sleep(for: .milliseconds(300))
        t.cancel()
        _ = await t.result
        try await Task.sleep(for: .milliseconds(2500))
        #expect(!FileManager.default.fileExists(atPath: marker), "the background child outlived the cancelled task")
    }

    @Test("argv commands run without a shell, in the working directory given")
    func argvAndDirectory() async throws {
        let result = try await context().run(ShellCommand(argv: ["pwd"], workingDirectory: "/tmp"))
        #expect(result == .string("/tmp"))
    }
}

final class LineSink: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ l: String) { lock.withLock { lines.append(l) } }
    var all: [String] { lock.withLock { lines } }
}

