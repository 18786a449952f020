import CeleryProtocol
import FlowJSON
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import RedisClient
import Testing
@testable import Scheduler
@testable import WorkerRuntime

/// Two builds of one flow that differ in one task's code (and say so in `version`).
func versioned(_ v: String, sleep: Double = 0, maxActiveRuns: Int = 16) -> Flow {
    Flow("versioned", version: v, maxActiveRuns: maxActiveRuns) { f in
        f.task("step") { _ in
            if sleep > 0 { try await Task.sleep(for: .milliseconds(Int(sleep * 1000))) }
            return .string("code of version \(v)")
        }
    }
}

@Suite("Version-safe execution", .serialized)
struct VersionSafetyTests {
    @Test("a worker without the run's flow version hands the message back, no try counted; the run is flagged stalled naming the version; a worker with it then runs it once")
    func handBack() async throws {
        try await withSystem(flows: [versioned("1")], workers: 0) { sys in
            sys.startWorker("old-binary", flows: [versioned("2")])
            let run = try await sys.trigger("versioned")
            try await eventually("the run flagged stalled", timeout: 20) {
                try await sys.store.run(run).stalledReason?.contains("no live worker has version 1 of flow `versioned`") == true
            }
            let reason = try await sys.store.run(run).stalledReason ?? ""
            #expect(reason.contains("the workers on queue `default` carry an unregistered version"), "\(reason)")
            let ti = try #require(try await sys.store.taskInstances(runId: run).first)
            #expect(ti.state == "queued" && ti.tryNumber == 1 && ti.startedAt == nil && ti.worker == nil)
            let handBacks = try await sys.redis.command("GET", FlowKitKeys.handBacks(ti.tries.first?.messageId ?? "")).string.flatMap { Int($0) } ?? 0
            #expect(handBacks >= 2, "handed back \(handBacks) times")
            let log = try await sys.store.logs(runId: run, taskId: "step", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(log.contains { $0.contains("worker `old-binary` carries another version of flow `versioned`") && $0.contains("not counted as a try") }, "\(log)")

            sys.startWorker("new-binary")
            #expect(try await sys.waitForRun(run) == "success")
            let done = try #require(try await sys.store.taskInstances(runId: run).first)
            #expect(done.result == "code of version 1" && done.worker == "new-binary" && done.tryNumber == 1 && done.tries.count == 1)
            try await eventually("the stalled flag cleared") { try await sys.store.run(run).stalledReason == nil }
            #expect(try await sys.successes(run) == 1)
            // Which worker can run what, as the API shows it.
            let workers = try await sys.store.workers(now: Date())
            #expect(workers.first { $0.name == "new-binary" }?.flows == [WorkerFlow(flowId: "versioned", version: 1, hash: try FlowDefinition(versioned("1")).contentHash())])
            #expect(workers.first { $0.name == "old-binary" }?.flows?.first?.version == nil)
        }
    }

    @Test("a switch of version with runs in flight: each run runs the code of the version it started with, on the workers that carry it")
    func switchInFlight() async throws {
        try await withSystem(flows: [versioned("1", sleep: 0.3)], workers: 0) { sys in
            sys.startWorker("v1-a", concurrency: 2)
            var old: [String] = []
            for _ in 0..<6 { old.append(try await sys.trigger("versioned")) }
            // The new scheduler registers version 2 while version 1's runs are in flight; its workers join the same queue.
            try await sys.store.registerFlows([versioned("2", sleep: 0.3)], reportedBy: "new-scheduler", now: Date())
            #expect(try await sys.store.flow("versioned").version == 2)
            sys.startWorker("v2-a", concurrency: 2, flows: [versioned("2", sleep: 0.3)])
            sys.startWorker("v2-b", concurrency: 2, flows: [versioned("2", sleep: 0.3)])
            var new: [String] = []
            for _ in 0..<6 { new.append(try await sys.trigger("versioned")) }
            for (runs, version, workers) in [(old, "1", ["v1-a"]), (new, "2", ["v2-a", "v2-b"])] {
                for run in runs {
                    #expect(try await sys.waitForRun(run) == "success")
                    let ti = try #require(try await sys.store.taskInstances(runId: run).first)
                    #expect(ti.result == .string("code of version \(version)") && workers.contains(ti.worker ?? ""), "\(run): \(String(describing: ti.result)) on \(ti.worker ?? "?")")
                    let successes = try await sys.successes(run)
                    #expect(ti.tries.count == 1 && successes == 1)
                }
            }
        }
    }

    @Test("a flood of messages no live worker can run does not starve a run it can: they wait to be handed back without their slots")
    func floodDoesNotStarve() async throws {
        let other = Flow("runnable") { f in f.task("t") { _ in "ran" } }
        try await withSystem(flows: [versioned("1", maxActiveRuns: 200), other], workers: 0) { sys in
            sys.startWorker("old-binary", concurrency: 2, flows: [versioned("2", maxActiveRuns: 200), other])
            var stuck: [String] = []
            for _ in 0..<150 { stuck.append(try await sys.trigger("versioned")) }
            try await eventually("the flood handed back at least once", timeout: 30) {
                (try await sys.redis.command("KEYS", "flowkit:handback:*").array?.count ?? 0) >= 100
            }
            let run = try await sys.trigger("runnable")
            #expect(try await sys.waitForRun(run, timeout: 30) == "success")
            // None of the flood ran or counted a try.
            let started = try await PGConnection(sys.url, label: "t").run { s in
                try s.query("SELECT count(*) AS n FROM task_instances t JOIN runs r ON r.id = t.run_pk WHERE r.flow_id = 'versioned' AND t.started_at IS NOT NULL")
                    .single().int("n")
            }
            #expect(started == 0)
            for r in stuck.prefix(3) { #expect(try await sys.store.run(r).state == "running") }
        }
    }

    @Test("a worker stopped while it hands messages back leaves none of them claimed: each goes back to its queue before the process ends")
    func stopWhileHandingBack() async throws {
        try await withSystem(flows: [versioned("1", maxActiveRuns: 100)], workers: 0) { sys in
            var runs: [String] = []
            for _ in 0..<40 { runs.append(try await sys.trigger("versioned")) }
            // Stopped at different moments of its churn: claiming, handing back, waiting to.
            for round in 0..<6 {
                let old = Worker(redis: sys.redisConfig, flows: [versioned("2", maxActiveRuns: 100)],
                                 config: LiveSystem.workerConfig("old-binary-\(round)", concurrency: 4))
                let running = Task { try await old.run() }
                try await Task.sleep(for: .milliseconds(150 + 97 * round))
                old.shutdown()
                _ = try await running.value
                // Nothing this worker claimed is still claimed (the scheduler restores stale
                // claims only after the visibility timeout, so nobody else emptied it).
                let claimed = try await sys.redis.command("ZCARD", KombuLayout.unackedIndex).int ?? -1
                #expect(claimed == 0, "round \(round): \(claimed) messages left claimed by a stopped worker")
            }
            sys.startWorker("new-binary", concurrency: 4)
            for r in runs { #expect(try await sys.waitForRun(r, timeout: 60) == "success") }
        }
    }
}

