import Foundation

/// How a process ended.
public struct ProcessOutcome: Sendable {
    public let exitCode: Int32
    /// The signal that ended it, if one did.
    public let signal: Int32?
    /// The last non-empty line it wrote to stdout: a shell task's result.
    public let lastStdoutLine: String?
    /// Its last few non-empty lines on stderr (at most `stderrTail`): why it failed, usually.
    public let lastStderrLines: [String]
    public static let stderrTail = 3
    public init(exitCode: Int32, signal: Int32?, lastStdoutLine: String?, lastStderrLines: [String] = []) {
        self.exitCode = exitCode; self.signal = signal; self.lastStdoutLine = lastStdoutLine; self.lastStderrLines = lastStderrLines
    }

    /// A failed command's error: its cause (the last lines of stderr) first, then the status;
    /// the command itself only when it said nothing on stderr, and then its first line, short.
    public func failure(of command: ShellCommand) -> String {
        let how = signal.map { "killed by signal \($0)" } ?? "exit status \(exitCode)"
        if !lastStderrLines.isEmpty {
            return lastStderrLines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "\n") + " (\(how))"
        }
        return "`\(command.summary)` failed with \(how) and wrote nothing on stderr (its log has the output)"
    }
}

extension ShellCommand {
    /// What the command is, for a message: its script's first line (or its argv), at most 80 characters.
    public var summary: String {
        let text = argv.count >= 3 && ["-c", "-lc", "-ec"].contains(argv[argv.count - 2]) ? argv[argv.count - 1] : argv.joined(separator: " ")
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: .whitespaces) }
        var first = lines.first { !$0.isEmpty } ?? text
        if lines.count > 1 { first += " …" }
        return first.count > 80 ? String(first.prefix(79)) + "…" : first
    }
}

/// What runs a task's commands (`ctx.run`). FlowKit itself runs no process: the worker hands
/// every task a runner (`SubprocessCommandRunner`, in ProcessSupport); tests can hand a fake.
public protocol CommandRunner: Sendable {
    func run(_ command: ShellCommand, environment: [String: String], log: TaskLogger,
             isCancelled: @escaping @Sendable () -> Bool) async throws -> ProcessOutcome
}

extension TaskContext {
    /// Upstream results up to this size (compact JSON) also travel as `FLOWKIT_UPSTREAM_<TASK>`;
    /// all of them are always in the file named by `FLOWKIT_UPSTREAM_FILE`.
    public static let maxUpstreamEnvironmentBytes = 4096

    /// The environment a task's process sees: who it is, its dates, every param as
    /// `FLOWKIT_PARAM_<NAME>` (plus all of them as JSON in `FLOWKIT_PARAMS_JSON`), and the
    /// results of its upstream tasks as `FLOWKIT_UPSTREAM_<TASK>` when they are small; in a
    /// mapped instance, `FLOWKIT_MAP_INDEX` and `FLOWKIT_MAP_ITEM`.
    public var processEnvironment: [String: String] {
        var env: [String: String] = [
            "FLOWKIT_FLOW_ID": flowId, "FLOWKIT_RUN_ID": runId, "FLOWKIT_TASK_ID": taskId,
            "FLOWKIT_TRY_NUMBER": String(tryNumber),
            "FLOWKIT_LOGICAL_DATE": Instant.format(logicalDate),
            "FLOWKIT_DATA_INTERVAL_START": Instant.format(dataIntervalStart),
            "FLOWKIT_DATA_INTERVAL_END": Instant.format(dataIntervalEnd),
            "FLOWKIT_PARAMS_JSON": JSONValue.object(params).compactJSON,
        ]
        for (k, v) in params { env["FLOWKIT_PARAM_\(k.uppercased())"] = v.environmentString }
        for (k, v) in connections { env["FLOWKIT_CONN_\(k.uppercased())"] = v }
        for (k, v) in variables { env[TaskNeeds.environmentName(variable: k)] = v }
        for (k, v) in upstream where v.compactJSON.utf8.count <= Self.maxUpstreamEnvironmentBytes {
            // A grouped task's dots and dashes become `_` (a shell cannot name them).
            env["FLOWKIT_UPSTREAM_\(String(k.uppercased().map { $0 == "." || $0 == "-" ? "_" : $0 }))"] = v.environmentString
        }
        if let mapIndex {
            env["FLOWKIT_MAP_INDEX"] = String(mapIndex)
            env["FLOWKIT_MAP_ITEM"] = (mapItem ?? .null).environmentString
        }
        return env
    }

    /// Runs a command as part of this task: its output joins the task's log, a non-zero exit
    /// fails the task, and its last stdout line (parsed as JSON when it is JSON) is returned.
    @discardableResult
    public func run(_ command: ShellCommand) async throws -> JSONValue? {
        guard let runner = commandRunner else {
            throw TaskError("task `\(taskId)` cannot run `\(command.argv.first ?? "")`: this context has no command runner (a FlowKit worker gives every task one)")
        }
        // Every upstream result, whatever its size, as one JSON object in a file of its own.
        let file = FileManager.default.temporaryDirectory
            .appendingPathComponent("flowkit-upstream-\(taskId)-\(tryNumber)-\(UUID().uuidString).json")
        try Data(JSONValue.object(upstream).compactJSON.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        var environment = processEnvironment
        environment["FLOWKIT_UPSTREAM_FILE"] = file.path
        let outcome = try await runner.run(command, environment: environment, log: log, isCancelled: { [self] in isCancelled })
        guard outcome.signal == nil, outcome.exitCode == 0 else { throw TaskError(outcome.failure(of: command)) }
        guard let last = outcome.lastStdoutLine else { return nil }
        return (try? JSONValue.parse(last)) ?? .string(last)
    }
}
