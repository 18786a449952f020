
public import FlowKit
public import Foundation

/// Runs a Python task (`FlowBuilder.python`) on a worker: the flow's source written to a
/// directory of the try, FlowKit's runner (`PythonTaskRunner.runnerSource`, standard library
/// only) started through the task's command runner — so output is logged live and a cancel or
/// timeout kills the process group — and the result and error read from files the runner writes.
enum PythonTaskRunner {
    static func run(_ spec: PythonTaskSpec, _ ctx: TaskContext, home: String) async throws -> JSONValue? {
        guard let runner = ctx.commandRunner else { throw TaskError("task `\(ctx.taskId)` cannot start Python here: no command runner") }
        let interpreter: String
        if let reqs = spec.requirements, !reqs.isEmpty {
            interpreter = try await Virtualenvs(root: URL(fileURLWithPath: home).appendingPathComponent("venvs")).python(for: reqs, ctx: ctx, runner: runner)
        } else {
            interpreter = spec.python ?? "python3"
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-python-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let module = dir.appendingPathComponent((spec.file as NSString).lastPathComponent.isEmpty ? "task.py" : (spec.file as NSString).lastPathComponent)
        let files = (runner: dir.appendingPathComponent("flowkit_runner.py"), context: dir.appendingPathComponent("context.json"),
                     result: dir.appendingPathComponent("result.json"), error: dir.appendingPathComponent("error.txt"))
        try Data(spec.source.utf8).write(to: module)
        try Data(runnerSource.utf8).write(to: files.runner)
        try Data(context(ctx).compactJSON.utf8).write(to: files.context)

        ctx.log("python: \(spec.function)() of \(spec.file) with \(interpreter)")
        let command = ShellCommand(argv: [interpreter, "-u", files.runner.path, module.path, spec.function, files.context.path, files.result.path, files.error.path])
        var environment = ctx.processEnvironment
        environment["PYTHONUNBUFFERED"] = "1"
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        let outcome: ProcessOutcome
        do {
            outcome = try await runner.run(command, environment: environment, log: ctx.log, isCancelled: { ctx.isCancelled })
        } catch let e as TaskError where e.message.contains("No such file") || e.message.contains("not found") {
            throw TaskError("cannot start Python interpreter `\(interpreter)`: \(e.message)")
        }
        if let sig = outcome.signal { throw TaskError("the Python process was killed by signal \(sig)") }
        guard outcome.exitCode == 0 else {
            let reason = (try? String(contentsOf: files.error, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            if outcome.exitCode == 127 && reason == nil { throw TaskError("cannot start Python interpreter `\(interpreter)` (exit status 127)") }
            throw TaskError(reason.flatMap { $0.isEmpty ? nil : $0 } ?? "the Python process exited with status \(outcome.exitCode) (its log has the output)")
        }
        guard let text = try? String(contentsOf: files.result, encoding: .utf8) else {
            throw TaskError("the Python runner ended without writing a result (its log has the output)")
        }
        let value = try JSONValue.parse(text)
        return value == .null ? nil : value
    }

    /// What `context` holds, as JSON for the runner.
    static func context(_ ctx: TaskContext) -> JSONValue {
        var c: [String: JSONValue] = [
            "run_id": .string(ctx.runId), "flow_id": .string(ctx.flowId), "task_id": .string(ctx.taskId), "try_number": .int(ctx.tryNumber),
            "logical_date": .string(Instant.format(ctx.logicalDate)), "data_interval_start": .string(Instant.format(ctx.dataIntervalStart)),
            "data_interval_end": .string(Instant.format(ctx.dataIntervalEnd)), "params": .object(ctx.params), "upstream": .object(ctx.upstream),
        ]
        if let i = ctx.mapIndex { c["map_index"] = .int(i); c["map_item"] = ctx.mapItem ?? .null }
        return .object(c)
    }

    /// FlowKit's runner: imports the file, calls the function with the context, writes the
    /// value as JSON (or the exception's last line) to the files it is given.
    static let runnerSource = #"""
    # FlowKit's Python task runner (standard library only), written by the worker for each try.
    # usage: flowkit_runner.py MODULE_PATH FUNCTION CONTEXT_JSON RESULT_FILE ERROR_FILE
    import datetime, importlib.util, json, os, sys, traceback

    class Context(dict):
        """The try's context: run_id, flow_id, task_id, try_number, logical_date, ds, ds_nodash,
        data_interval_start, data_interval_end (UTC datetimes), params, upstream (the direct
        upstream tasks' results, by task id); context.log(...) writes a line to the task's log."""
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

        def log(self, *args):
            print(*args, file=sys.stderr, flush=True)

    def when(text):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))

    def fail(error_file, message):
        with open(error_file, "w") as f:
            f.write(message)
        sys.exit(1)

    def main():
        path, function, context_file, result_file, error_file = sys.argv[1:6]
        with open(context_file) as f:
            ctx = Context(json.load(f))
        for key in ("logical_date", "data_interval_start", "data_interval_end"):
            ctx[key] = when(ctx[key])
        ctx["ds"] = ctx["logical_date"].strftime("%Y-%m-%d")
        ctx["ds_nodash"] = ctx["logical_date"].strftime("%Y%m%d")
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        try:
            spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            fn = getattr(module, function, None)
            if not callable(fn):
                fail(error_file, f"{os.path.basename(path)} has no function `{function}`")
            value = fn(ctx)
        except SystemExit as e:
            if e.code in (None, 0):
                value = None
            else:
                traceback.print_exc()
                fail(error_file, f"SystemExit: {e.code}")
        except BaseException as e:
            traceback.print_exc()
            fail(error_file, traceback.format_exception_only(type(e), e)[-1].strip())
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            fail(error_file, f"`{function}` returned a value that is not JSON ({type(value).__name__}): {e}")
        with open(result_file, "w") as f:
            f.write(text)

    main()
    """#
}

/// Virtualenvs a worker builds for Python tasks, one per distinct requirement set (keyed by its
/// hash), each built once: under an exclusive lock (`flock`) so that two tries — on this worker or
/// another sharing the home — never build it twice, and marked complete only when pip succeeded.
public struct Virtualenvs: Sendable {
    let root: URL

    /// The virtualenvs under `home`'s `venvs/` (a worker's `WorkerConfig.home`).
    public init(home: String) { root = URL(fileURLWithPath: home).appendingPathComponent("venvs") }
    init(root: URL) { self.root = root }

    func python(for requirements: [String], ctx: TaskContext, runner: any CommandRunner) async throws -> String {
        try await python(for: requirements, log: ctx.log, runner: runner, isCancelled: { ctx.isCancelled })
    }

    /// The interpreter of the virtualenv for `requirements`, built first when it is not there yet
    /// (what `flowctl venv` does ahead of the first task, where PyPI is reachable).
    public func python(for requirements: [String], log taskLog: TaskLogger, runner: any CommandRunner,
                       isCancelled: @escaping @Sendable () -> Bool) async throws -> String {
        let lines = requirements.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let key = String(SHA256.hex(Data(lines.sorted().joined(separator: "\n").utf8)).prefix(16))
        let dir = root.appendingPathComponent(key), marker = dir.appendingPathComponent(".flowkit-complete")
        let python = dir.appendingPathComponent("bin/python").path
        if FileManager.default.fileExists(atPath: marker.path) { return python }
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let lock = try await FileLock.acquire(root.appendingPathComponent(key + ".lock").path, isCancelled: isCancelled)
        defer { lock.release() }
        if FileManager.default.fileExists(atPath: marker.path) {
            taskLog("python: using the virtualenv another try built for \(lines.joined(separator: ", "))")
            return python
        }
        try? FileManager.default.removeItem(at: dir)   // a build that did not finish
        taskLog("python: building a virtualenv for \(lines.joined(separator: ", ")) in \(dir.path) (once per requirement set)")
        let reqFile = root.appendingPathComponent(key + ".requirements.txt")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: reqFile)
        let tail = LogTail()
        let log = TaskLogger { line in tail.add(line); taskLog(line) }
        for (what, argv) in [("python3 -m venv", ["python3", "-m", "venv", dir.path]),
                             ("pip install", [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r", reqFile.path])] {
            let outcome = try await runner.run(ShellCommand(argv: argv), environment: ["PIP_NO_INPUT": "1"], log: log, isCancelled: isCancelled)
            guard outcome.exitCode == 0, outcome.signal == nil else {
                try? FileManager.default.removeItem(at: dir)
                let cause = tail.lines.last { $0.contains("ERROR") || $0.contains("Error") } ?? tail.lines.last ?? "no output"
                throw TaskError("building the virtualenv for \(lines.joined(separator: ", ")) failed: `\(what)` exited with status \(outcome.exitCode): \(cause)")
            }
        }
        try Data().write(to: marker)
        return python
    }
}

/// The last lines a logger was given (pip's error is among them).
final class LogTail: @unchecked Sendable {
    private let lock = NSLock()
    private var kept: [String] = []
    func add(_ line: String) { lock.withLock { kept.append(line); if kept.count > 40 { kept.removeFirst(kept.count - 40) } } }
    var lines: [String] { lock.withLock { kept } }
}

/// An exclusive `flock` on a file, waited for without blocking a thread of the pool.
struct FileLock {
    let fd: Int32

    static func acquire(_ path: String, isCancelled: @escaping @Sendable () -> Bool) async throws -> FileLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TaskError("cannot open the lock file \(path): \(String(cString: strerror(errno)))") }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                close(fd)
                throw TaskError("cannot lock \(path): \(String(cString: strerror(errno)))")
            }
            if isCancelled() { close(fd); throw CancellationError() }
            try await Task.sleep(for: .milliseconds(100))
        }
        return FileLock(fd: fd)
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
