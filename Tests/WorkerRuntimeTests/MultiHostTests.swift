import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import ProcessSupport
import RedisClient
import Testing
import Scheduler

/// Workers on two "hosts" — network namespaces with their own addresses — against PostgreSQL
/// and Redis in the root namespace. Needs root and iproute2 (CI has both); without them the
/// test fails and says why, it never skips.
@Suite("Several hosts", .serialized)
struct MultiHostTests {
    func sh(_ argv: [String]) throws {
        let (status, out) = try ProcessRunner.runToCompletion(argv)
        if status != 0 { throw TaskError("`\(argv.joined(separator: " "))` failed: \(out)") }
    }

    @Test("a host whose link is cut mid-task: its task is delivered again and finishes on the other host, one success recorded")
    func cutLink() async throws {
        guard geteuid() == 0 else { throw TaskError("this test needs root to create network namespaces (ip netns)") }
        let netns = repoPath("scripts/netns.sh")
        try sh([netns, "up"])
        var workers: [String: pid_t] = [:]
        try await withSystem(workers: 0) { sys in
            defer {
                for pid in workers.values { kill(pid, SIGKILL); var st: Int32 = 0; waitpid(pid, &st, 0) }
                _ = try? ProcessRunner.runToCompletion([netns, "down"])
            }
            // Redis answers on the hosts' links too, for the length of the test.
            let admin = RedisConnection(sys.redisConfig)
            _ = try await admin.command("CONFIG", "SET", "bind", "127.0.0.1 10.77.1.1 10.77.2.1")
            _ = try await admin.command("CONFIG", "SET", "protected-mode", "no")
            defer { Task { _ = try? await admin.command("CONFIG", "SET", "bind", "127.0.0.1"); _ = try? await admin.command("CONFIG", "SET", "protected-mode", "yes") } }
            let flowctl = try TestServers.flowctlPath()
            for (host, ip) in [("A", "10.77.1.1"), ("B", "10.77.2.1")] {
                workers[host] = try spawn(["/usr/sbin/ip", "netns", "exec", "fk\(host)", flowctl, "worker", "--name", "host\(host)",
                                           "--hostname", "host\(host)", "--concurrency", "1", "--heartbeat-interval", "0.3",
                                           "--visibility-timeout", "2"],
                                          env: ["FLOWKIT_REDIS_URL": "redis://\(ip):\(TestServers.redisPort)/0", "FLOWKIT_LOG_LEVEL": "warning"])
            }
            try await eventually("both hosts' workers online", timeout: 20) {
                try await sys.store.workers(now: Date()).filter { $0.state == "online" }.count == 2
            }
            let run = try await sys.trigger("example_sleep", conf: ["seconds": 3])
            try await sys.waitForTask(run, "sleep", state: "running")
            let first = try #require(try await sys.store.taskInstances(runId: run)[0].worker)
            let cut = first == "hostA" ? "A" : "B"
            try sh([netns, "cut", cut])
            #expect(try await sys.waitForRun(run, timeout: 60) == "success")
            let ti = try await sys.store.taskInstances(runId: run)[0]
            #expect(ti.worker != first, "the task finished on the host whose link was cut")
            #expect(ti.tryNumber == 1)
            // The cut host comes back and reports its now stale outcome: still one success.
            try sh([netns, "restore", cut])
            try await Task.sleep(for: .seconds(4))
            #expect(try await sys.successes(run) == 1)
            #expect(try await sys.store.run(run).state == "success")
        }
    }
}
