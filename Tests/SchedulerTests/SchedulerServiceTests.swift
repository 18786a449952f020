import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import Testing
@testable import Scheduler
import PostgresClient
import RedisClient

/// Each scheduler duty through its `runOnce()`, with a manual clock: one bounded batch, and the
/// pause it asks for.
@Suite("Scheduler services", .serialized)
struct SchedulerServiceTests {
    static let retrying = Flow("r", defaults: TaskOptions(retry: RetryPolicy(retries: 1, delay: .seconds(10)))) { f in _ = noop(f, "t") }

    func event(_ kind: WorkerEvent.Kind, _ m: CeleryMessage, _ h: Harness, worker: String = "w1") throws -> WorkerEvent {
        let inv = try h.invocation(m)
        return WorkerEvent(kind: kind, worker: worker, at: h.clock.now(), messageId: m.id, runId: inv.runId, taskId: inv.taskId, tryNumber: inv.tryNumber)
    }

    @Test("the run starter starts queued runs and sends their first tasks")
    func runStarter() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.store.createRun(flowId: "diamond", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now())
        #expect(try await h.queued().isEmpty)
        #expect(try await h.daemon.runStarter.runOnce() == 0)
        #expect(try await h.runState(run.runId) == "running")
        #expect(try await h.queued().map { try h.invocation($0).taskId } == ["a"])
    }

    @Test("the event consumer applies a batch and sends the next tasks; the acknowledger acknowledges it once durable")
    func eventConsumerAndAcknowledger() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try await h.take()[0]
        _ = try await h.redis.run { s in try s.command(["XGROUP", "CREATE", FlowKitKeys.events, FlowKitKeys.eventsGroup, "0", "MKSTREAM"]).orThrow() }
        for kind in [WorkerEvent.Kind.started, .succeeded] {
            _ = try await h.redis.run { s in try s.command(try event(kind, a, h).xaddCommand()).orThrow() }
        }
        _ = try await h.daemon.eventConsumer.runOnce()
        #expect(try await h.states(run)["a"] == "success")
        #expect(Set(try await h.queued().map { try h.invocation($0).taskId }) == ["b", "c"])
        let pending = { try await h.redis.run { s in try s.command(["XPENDING", FlowKitKeys.events, FlowKitKeys.eventsGroup]).array?.first?.int } }
        #expect(try await pending() == 2)  // applied, not yet acknowledged
        #expect(try await h.daemon.eventAcknowledger.runOnce() == 0)
        #expect(try await pending() == 0)
    }

    @Test("the retry timer queues a retry once its delay has passed, and otherwise waits until it is due")
    func retryTimer() async throws {
        let h = try await Harness.make([Self.retrying])
        let run = try await h.trigger("r")
        try await h.report(try await h.take()[0], .failed, error: "boom")
        #expect(try await h.states(run)["t"] == "up_for_retry")
        let wait = try await h.daemon.retryTimer.runOnce()
        #expect(wait > 0 && wait <= 1)  // due in 10 s; it looks again within a second
        #expect(try await h.queued().isEmpty)
        h.clock.advance(by: 10)
        #expect(try await h.daemon.retryTimer.runOnce() == 0)
        #expect(try h.invocation(try await h.take()[0]).tryNumber == 2)
    }

    @Test("the cron ticker makes the due tick's run, once")
    func cronTicker() async throws {
        let h = try await Harness.make([hourly("h")])
        #expect(try await h.daemon.cronTicker.runOnce() > 0)
        h.clock.advance(by: 3600)
        #expect(try await h.daemon.cronTicker.runOnce() == 0)
        _ = try await h.daemon.cronTicker.runOnce()
        #expect(try await h.sql("SELECT count(*) AS n FROM runs WHERE trigger_kind = 'scheduled'").first?.intOrNull("n") == 1)
    }

    @Test("the reaper fails a try whose worker went silent, per its retry policy")
    func reaper() async throws {
        let h = try await Harness.make([Self.retrying])
        let run = try await h.trigger("r")
        try await h.report(try await h.take()[0], .started, worker: "silent")
        #expect(try await h.daemon.reaper.runOnce() == h.daemon.reaper.config.interval)
        #expect(try await h.states(run)["t"] == "running")
        h.clock.advance(by: 31)
        _ = try await h.daemon.reaper.runOnce()
        #expect(try await h.states(run)["t"] == "up_for_retry")
    }

    @Test("the unacked restorer puts back a message claimed past the visibility timeout")
    func unackedRestorer() async throws {
        let h = try await Harness.make([diamond])
        _ = try await h.trigger("diamond")
        let claim = KombuLayout.claimCommand(queues: ["default"], count: 1, now: h.clock.now().timeIntervalSince1970)
        let claimed = try await h.redis.run { s in KombuLayout.claimed(try s.command(claim).orThrow()) }
        #expect(claimed.messages.count == 1)
        _ = try await h.daemon.unackedRestorer.runOnce()
        #expect(try await h.queued().isEmpty)  // not yet: the claim is fresh
        h.clock.advance(by: 301)
        _ = try await h.daemon.unackedRestorer.runOnce()
        #expect(try await h.queued().count == 1)
    }

    @Test("the lost-message rescuer sends again a message the broker lost")
    func lostMessageRescuer() async throws {
        let h = try await Harness.make([diamond])
        _ = try await h.trigger("diamond")
        let lost = try await h.take()[0]
        _ = try await h.daemon.lostMessageRescuer.runOnce()
        #expect(try await h.queued().isEmpty)  // queued for less than 30 s
        h.clock.advance(by: 31)
        _ = try await h.daemon.lostMessageRescuer.runOnce()
        #expect(try await h.queued().map(\.id) == [lost.id])
    }

    @Test("after a Redis failover the rescuer looks at every try queued before it, once the settle window ends, and wakes when it ends")
    func lostMessageRescuerPlan() {
        let plan = { (since: Double?) in LostMessageRescuer.plan(sinceMasterChange: since, after: 30, interval: 2) }
        #expect(plan(nil) == (30, 2))     // no failover: tries queued 30 s
        #expect(plan(45) == (30, 2))      // a failover longer ago than `after` changes nothing
        #expect(plan(0.5).olderThan == 30) // within the window the retries may still land
        #expect(abs(plan(0.5).next - 2) < 1e-9)
        #expect(abs(plan(4).next - 1.01) < 1e-9)  // the window ends in 1 s: look then, not 2 s later
        #expect(plan(7) == (7, 2))        // settled: everything queued before the failover
    }

    @Test("the abandoned-event claimer applies what a dead scheduler read and never acknowledged")
    func abandonedEvents() async throws {
        var config = SchedulerConfig(name: "survivor")
        config.zombieThreshold = 1
        let h = try await Harness.make([diamond], config: config)
        let run = try await h.trigger("diamond")
        let a = try await h.take()[0]
        _ = try await h.redis.run { s in try s.command(try event(.succeeded, a, h).xaddCommand()).orThrow() }
        // Another scheduler reads the event and dies before applying it.
        let dead = SchedulerBroker(config: try TestServers.redis(), consumer: "dead-scheduler")
        #expect(try await dead.readEvents(count: 10, blockMillis: 100, pendingFirst: false).count == 1)
        try await Task.sleep(for: .milliseconds(1100))  // idle past the threshold (Redis's clock)
        _ = try await h.daemon.abandonedEventClaimer.runOnce()
        #expect(try await h.states(run)["a"] == "success")
    }

    @Test("the Celery result collector applies an outcome a Celery worker wrote to the result backend")
    func celeryResults() async throws {
        let viaCelery = Flow("py") { f in f.celery("t", name: "tasks.add") }
        let h = try await Harness.make([viaCelery])
        let run = try await h.trigger("py")
        let m = try await h.take()[0]
        try await h.redis.run { s in
            for c in CeleryResult.commands(taskId: m.id, meta: CeleryResult.success(taskId: m.id, result: 3)) { try s.command(c).orThrow() }
        }
        _ = try await h.daemon.celeryResultCollector.runOnce()
        #expect(try await h.states(run)["t"] == "success")
    }

    @Test("the run timeout enforcer fails a run past its flow's runTimeout, cancels its tasks and stops its running try")
    func runTimeout() async throws {
        let flow = Flow("slow", runTimeout: .seconds(60)) { f in
            let a = noop(f, "a")
            noop(f, "b", after: [a])
        }
        let h = try await Harness.make([flow])
        let run = try await h.trigger("slow")
        let a = try await h.take()[0]
        try await h.report(a, .started)
        h.clock.advance(by: 59)
        #expect(try await h.daemon.runTimeoutEnforcer.runOnce() > 0)
        #expect(try await h.runState(run) == "running")
        h.clock.advance(by: 2)
        #expect(try await h.daemon.runTimeoutEnforcer.runOnce() == 0)
        #expect(try await h.runState(run) == "failed")
        let tis = try await h.store.taskInstances(runId: run)
        #expect(tis.map(\.state) == ["cancelled", "cancelled"])
        #expect(tis.first { $0.taskId == "a" }?.error == "run timeout: the run was still unfinished 60s after it started")
        // The running try is told to stop; a flow without a timeout is never touched.
        #expect(try await h.redis.command("EXISTS", FlowKitKeys.cancel(a.id)).int == 1)
        #expect(try await h.sql("SELECT count(*) AS n FROM task_history WHERE detail LIKE 'run timeout:%'").first?.intOrNull("n") == 2)
    }

    @Test("leader-only duties wait while another scheduler leads; the rest run everywhere")
    func leaderOnly() async throws {
        let h = try await Harness.make([diamond])
        let leaderOnly = h.daemon.duties.filter(\.leaderOnly).map(\.name)
        #expect(Set(leaderOnly) == ["reaper", "unacked restorer", "lost-message rescuer", "abandoned-event claimer", "Celery result collector",
                                    "run timeout enforcer", "notification deliverer", "retention cleaner", "version watch"])
        let other = SchedulerDaemon(databaseURL: h.url, redis: try TestServers.redis(), flows: [diamond],
                                    config: SchedulerConfig(name: "other"))
        #expect(try await other.isLeader())
        #expect(try await h.daemon.isLeader() == false)
        // A follower's reaper loop does not reap: the zombie stays running until the leader's turn.
        let run = try await h.trigger("diamond")
        try await h.report(try await h.take()[0], .started, worker: "silent")
        h.clock.advance(by: 31)
        let reaper = try #require(h.daemon.services().first { $0.duty is Reaper })
        let loop = Task { await reaper.loop() }
        try await Task.sleep(for: .milliseconds(300))
        loop.cancel()
        _ = await loop.value
        #expect(try await h.states(run)["a"] == "running")
        other.leader.connection.close()
        try await eventually("this scheduler to lead", timeout: 10) { try await h.daemon.isLeader() }
    }

    @Test("a configuration that cannot work is refused, naming the duty")
    func validation() throws {
        var c = SchedulerConfig(name: "x")
        c.zombieThreshold = 0
        #expect(throws: SchedulerConfigError.self) { try c.validate() }
        do { try c.validate() } catch { #expect("\(error)".contains("reaper")) }
        c = SchedulerConfig(name: "x")
        c.eventBatch = 0
        do { try c.validate(); Issue.record("accepted eventBatch 0") } catch { #expect("\(error)".contains("event consumer")) }
        try SchedulerConfig(name: "x").validate()
    }
}

@Suite("Worker states from events")
struct WorkerStateTests {
    @Test("a heartbeat processed after the worker's offline event (sent before it) does not bring the worker back online")
    func lateHeartbeat() async throws {
        let h = try await Harness.make([])
        let t0 = Harness.start.timeIntervalSince1970
        func ev(_ kind: WorkerEvent.Kind, _ at: Double) -> WorkerEvent {
            var e = WorkerEvent(kind: kind, worker: "w1", info: ["host": "h", "queues": ["default"], "concurrency": 2])
            e.at = at
            return e
        }
        _ = try await h.store.applyEvents([ev(.workerOnline, t0)], now: Harness.start)
        _ = try await h.store.applyEvents([ev(.workerOffline, t0 + 2)], now: Harness.start)
        _ = try await h.store.applyEvents([ev(.heartbeat, t0 + 1.9)], now: Harness.start)
        #expect(try await h.store.workers(now: Harness.start).first?.state == "offline")
        // A later heartbeat (a worker of that name started again) is online.
        _ = try await h.store.applyEvents([ev(.heartbeat, t0 + 5)], now: Harness.start)
        #expect(try await h.store.workers(now: Harness.start).first?.state == "online")
        // Killed without an offline event: online until its heartbeat is 30 s old, then lost.
        #expect(try await h.store.workers(now: Harness.start.addingTimeInterval(34)).first?.state == "online")
        #expect(try await h.store.workers(now: Harness.start.addingTimeInterval(36)).first?.state == "lost")
    }
}
