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

@Suite("Faults", .serialized)
struct FaultTests {
    @Test("a worker killed mid-task: its message is delivered again and the try finishes elsewhere, one success recorded")
    func killedWorker() async throws {
        try await withSystem(workers: 0) { sys in
            let flowctl = try TestServers.flowctlPath()
            // A real worker process, to kill -9.
            let env = ["FLOWKIT_REDIS_URL": "redis://127.0.0.1:\(TestServers.redisPort)/0"]
            let child = try spawn([flowctl, "worker", "--name", "victim", "--heartbeat-interval", "0.3", "--visibility-timeout", "2"], env: env)
            let run = try await sys.trigger("example_sleep", conf: ["seconds": 3])
            try await sys.waitForTask(run, "sleep", state: "running")
            #expect(try await sys.store.taskInstances(runId: run)[0].worker == "victim")
            kill(child, SIGKILL)
            var status: Int32 = 0
            waitpid(child, &status, 0)
            sys.startWorker("survivor")
            #expect(try await sys.waitForRun(run, timeout: 40) == "success")
            let ti = try await sys.store.taskInstances(runId: run)[0]
            #expect(ti.tryNumber == 1)
            #expect(ti.worker == "survivor")
            #expect(try await sys.successes(run) == 1)
        }
    }

    @Test("Redis restarted mid-run (AOF on): the run finishes, nothing lost")
    func redisRestart() async throws {
        try await withSystem(workers: 1) { sys in
            let run = try await sys.trigger("lakehouse_end_to_end", conf: ["orders": 50])
            let slow = try await sys.trigger("example_sleep", conf: ["seconds": 2])
            try await sys.waitForTask(slow, "sleep", state: "running")
            try TestServers.services("restart-redis", "1")
            #expect(try await sys.waitForRun(slow, timeout: 60) == "success")
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
            #expect(try await sys.successes(slow) == 1)
        }
    }

    @Test("Redis flushed mid-run: the scheduler rebuilds the lost messages from PostgreSQL")
    func redisFlushed() async throws {
        try await withSystem(workers: 0) { sys in
            let run = try await sys.trigger("lakehouse_end_to_end", conf: ["orders": 20])
            try await sys.waitForTask(run, "ingest", state: "queued")
            _ = try await sys.redis.command("FLUSHALL")
            sys.startWorker("after-flush")
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
        }
    }
}

func spawn(_ argv: [String], env: [String: String]) throws -> pid_t {
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    let args: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = e.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { args.forEach { free($0) }; envp.forEach { free($0) } }
    // A clean signal state, as a service manager gives: the test process blocks signals (SIGTERM
    // among them) that a child would otherwise inherit, and a Celery worker could then not
    // terminate a revoked task's process.
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t(); sigemptyset(&empty)
    var all = sigset_t(); sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], nil, &attr, args, envp)
    if rc != 0 { throw TaskError("cannot start \(argv[0]): \(rc)") }
    return pid
}

/// The Python of the virtualenv `scripts/celery/venv.sh` makes (make test makes it first).
func celeryPython() throws -> String {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".flowkit/venv-celery/bin/python").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestServers.Missing(variable: "the Celery virtualenv (scripts/celery/venv.sh, which make test runs)")
    }
    return path
}

func repoPath(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(relative).path
}
