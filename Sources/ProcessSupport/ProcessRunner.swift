public import FlowKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs a command in its own process group, streaming stdout and stderr line by line to a
/// logger. Cancelling the calling task, or `isCancelled` turning true, kills the whole group.
///
/// Reading and waiting happen on a thread of its own, never on the Swift concurrency pool.
public enum ProcessRunner {
    public static func run(_ command: ShellCommand, environment: [String: String], log: TaskLogger,
                           isCancelled: @escaping @Sendable () -> Bool = { false }) async throws -> ProcessOutcome {
        var command = command
        if let wd = command.workingDirectory {
            // Change directory through a tiny shell; the directory and argv travel as arguments.
            command.argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", wd] + command.argv
        }
        guard let executable = command.argv.first else { throw TaskError("empty command") }
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw TaskError("pipe() failed: \(String(cString: strerror(errno)))") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        for fd in [outPipe[0], outPipe[1], errPipe[0], errPipe[1]] { posix_spawn_file_actions_addclose(&actions, fd) }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attr, 0)
        var emptyMask = sigset_t(); sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attr, &emptyMask)
        var defaults = sigset_t(); sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attr, &defaults)

        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        for (k, v) in command.environment { env[k] = v }
        let argvC: [UnsafeMutablePointer<CChar>?] = command.argv.map { strdup($0) } + [nil]
        let envC: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argvC.forEach { free($0) }; envC.forEach { free($0) } }

        var pid: pid_t = 0
        let rc: Int32
        if executable.contains("/") {
            rc = posix_spawn(&pid, executable, &actions, &attr, argvC, envC)
        } else {
            rc = posix_spawnp(&pid, executable, &actions, &attr, argvC, envC)
        }
        close(outPipe[1]); close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw TaskError("cannot start `\(executable)`: \(String(cString: strerror(rc)))")
        }
        let child = pid
        let reader = ProcessReader(pid: child, out: outPipe[0], err: errPipe[0], log: log, isCancelled: isCancelled)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (cont: CheckedContinuation<ProcessOutcome, Never>) in
                let thread = Thread { cont.resume(returning: reader.pump()) }
                thread.name = "flowkit-process-\(child)"
                thread.start()
            }
        } onCancel: {
            reader.kill()
        }
    }
}

extension ProcessRunner {
    /// Runs a command on the calling thread until it exits; returns its status and output.
    ///
    /// For tools and tests, not tasks. The output goes through a file, not a pipe: daemons the
    /// command starts (`pg_ctl start`, `redis-server --daemonize yes`) would hold a pipe open.
    /// Signal dispositions are reset, so servers it starts do not inherit ignored signals.
    public static func runToCompletion(_ argv: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
        let outPath = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-sh-\(UUID().uuidString)").path
        defer { unlink(outPath) }
        let pid = try spawn(argv, environment: environment ?? ProcessInfo.processInfo.environment, outputPath: outPath)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, text)
    }
}

extension ProcessRunner {
    /// Starts `argv` and returns its pid without waiting: standard input from `stdinFD` (or
    /// /dev/null), output and errors to `outputPath` (or /dev/null), signal dispositions and mask
    /// reset to the defaults (a child of a service-lifecycle process would inherit them blocked),
    /// optionally in a process group of its own. The caller reaps it.
    public static func spawn(_ argv: [String], environment: [String: String], stdinFD: Int32? = nil, outputPath: String? = nil,
                             ownProcessGroup: Bool = false) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let fd = stdinFD { posix_spawn_file_actions_adddup2(&actions, fd, 0) } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var all = sigset_t(); sigfillset(&all)
        var none = sigset_t(); sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        var flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
        if ownProcessGroup { flags |= POSIX_SPAWN_SETPGROUP; posix_spawnattr_setpgroup(&attr, 0) }
        posix_spawnattr_setflags(&attr, Int16(flags))
        let args: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { args.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attr, args, envp)
        guard rc == 0 else { throw TaskError("cannot start `\(argv[0])`: \(String(cString: strerror(rc)))") }
        return pid
    }
}

/// The thread-side half of `ProcessRunner`: reads both pipes until they close, then reaps.
final class ProcessReader: @unchecked Sendable {
    let pid: pid_t
    let fds: [Int32]
    let log: TaskLogger
    let isCancelled: @Sendable () -> Bool
    private let lock = NSLock()
    private var killed = false

    init(pid: pid_t, out: Int32, err: Int32, log: TaskLogger, isCancelled: @escaping @Sendable () -> Bool) {
        self.pid = pid; self.fds = [out, err]; self.log = log; self.isCancelled = isCancelled
    }

    func kill() {
        lock.lock(); defer { lock.unlock() }
        guard !killed else { return }
        killed = true
        Glibc.kill(-pid, SIGKILL)
    }

    func pump() -> ProcessOutcome {
        var buffers: [[UInt8]] = [[], []]
        var open = [true, true]
        var lastOut: String?
        var lastErr: [String] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        func emit(_ stream: Int, _ bytes: ArraySlice<UInt8>) {
            let line = String(decoding: bytes, as: UTF8.self)
            if stream == 0 {
                if !line.trimmingCharacters(in: .whitespaces).isEmpty { lastOut = line }
                log(line)
            } else {
                log("[stderr] \(line)")
                if !line.trimmingCharacters(in: .whitespaces).isEmpty {
                    lastErr.append(line.count > 500 ? String(line.prefix(499)) + "…" : line)
                    if lastErr.count > ProcessOutcome.stderrTail { lastErr.removeFirst() }
                }
            }
        }
        while open[0] || open[1] {
            if isCancelled() { kill() }
            var pfds = [pollfd]()
            var map: [Int] = []
            for i in 0..<2 where open[i] { pfds.append(pollfd(fd: fds[i], events: Int16(POLLIN), revents: 0)); map.append(i) }
            let n = poll(&pfds, nfds_t(pfds.count), 200)
            if n <= 0 { continue }
            for (k, p) in pfds.enumerated() where p.revents != 0 {
                let i = map[k]
                let r = read(fds[i], &chunk, chunk.count)
                if r <= 0 { open[i] = false; continue }
                buffers[i].append(contentsOf: chunk[0..<r])
                while let nl = buffers[i].firstIndex(of: 10) {
                    emit(i, buffers[i][..<nl])
                    buffers[i].removeSubrange(...nl)
                }
            }
        }
        for i in 0..<2 where !buffers[i].isEmpty { emit(i, buffers[i][...]) }
        close(fds[0]); close(fds[1])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        // Kill what the command left behind in its group (background children).
        Glibc.kill(-pid, SIGKILL)
        let termSig = status & 0x7f
        if termSig != 0 { return ProcessOutcome(exitCode: 128 + termSig, signal: termSig, lastStdoutLine: lastOut, lastStderrLines: lastErr) }
        return ProcessOutcome(exitCode: (status >> 8) & 0xff, signal: nil, lastStdoutLine: lastOut, lastStderrLines: lastErr)
    }
}

/// Runs a task's commands (`ctx.run`) in processes: what a worker gives every task.
public struct SubprocessCommandRunner: CommandRunner {
    public init() {}
    public func run(_ command: ShellCommand, environment: [String: String], log: TaskLogger,
                    isCancelled: @escaping @Sendable () -> Bool) async throws -> ProcessOutcome {
        try await ProcessRunner.run(command, environment: environment, log: log, isCancelled: isCancelled)
    }
}
