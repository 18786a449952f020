import ArgumentParser
import ConnectionThread
import Synchronization
import FlowKit
import FlowServer
import Foundation
import ProcessSupport
import Logging
import PostgresClient
import RedisClient
import Scheduler
import WorkerRuntime
import ServiceLifecycle

/// With `FLOWKIT_BENCH_JOURNAL=PATH`, a bench task body appends `RUN TASK MAP_INDEX TRY` to PATH as
/// it completes, before its worker reports anything: one `write` with O_APPEND per line, so the
/// workers of one host can share the file. `make faults` counts from it the bodies that completed
/// twice, including those whose outcome a failover lost and that PostgreSQL therefore never saw.
enum BenchJournal {
    static let fd: Int32 = {
        guard let path = ProcessInfo.processInfo.environment["FLOWKIT_BENCH_JOURNAL"], !path.isEmpty else { return -1 }
        return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    }()

    static func completed(_ ctx: TaskContext) -> JSONValue? {
        guard fd >= 0 else { return nil }
        var line = "\(ctx.runId) \(ctx.taskId) \(ctx.mapIndex ?? -1) \(ctx.tryNumber)\n"
        _ = line.withUTF8 { write(fd, $0.baseAddress, $0.count) }
        return nil
    }
}

/// The flows of `docs/benchmarks.md`, built into flowctl for `flowctl bench`.
enum BenchFlows {
    static let w1Tasks = Int(ProcessInfo.processInfo.environment["W1_N"] ?? "") ?? 10_000
    static let w2Tasks = Int(ProcessInfo.processInfo.environment["W2_N"] ?? "") ?? 100
    static let w3Tasks = Int(ProcessInfo.processInfo.environment["W3_N"] ?? "") ?? 500
    static let w8Items = Int(ProcessInfo.processInfo.environment["W8_N"] ?? "") ?? 10_000

    /// W1: independent no-op tasks, all ready at once, in one run.
    static let w1 = Flow("bench_w1", maxActiveRuns: 1) { f in
        for i in 0..<w1Tasks { f.task("t\(i)") { _ in nil } }
    }
    /// W2: a chain of no-op tasks.
    static let w2 = Flow("bench_w2", maxActiveRuns: 1) { f in
        var prev = f.task("t0") { _ in nil }
        for i in 1..<w2Tasks { let t = f.task("t\(i)") { _ in nil }; prev --> t; prev = t }
    }
    /// W3: one root, parallel no-op tasks, one join. Each body notes its completion in the
    /// journal when there is one (`make faults` counts bodies completed twice with it).
    static let w3 = Flow("bench_w3", maxActiveRuns: 1) { f in
        let root = f.task("root") { BenchJournal.completed($0) }
        let middle = (0..<w3Tasks).map { i in f.task("p\(i)") { BenchJournal.completed($0) } }
        root --> middle --> f.task("join") { BenchJournal.completed($0) }
    }
    /// W8: one root returns a list, a task mapped over it (one no-op instance per element),
    /// one join that receives every instance's result.
    static let w8 = Flow("bench_w8", maxActiveRuns: 1) { f in
        let root = f.task("root") { _ in .array((0..<w8Items).map { .int($0) }) }
        f.map("mapped", over: .result(of: root)) { _, x in x } --> f.task("join") { ctx in .int(ctx.upstream["mapped"]?.arrayValue?.count ?? 0) }
    }
    /// W9 (the dashboard): 1,000 no-op tasks in 20 layers of 50, each depending on two tasks of
    /// the layer before — a grid of 1,000 rows and a graph with 1,900 edges.
    static let w9 = Flow("bench_w9", maxActiveRuns: 4) { f in
        var previous: [TaskRef] = []
        for layer in 0..<20 {
            let current = (0..<50).map { i in f.task("l\(layer)_t\(i)") { _ in nil } }
            if !previous.isEmpty { for (i, t) in current.enumerated() { [previous[i], previous[(i + 1) % 50]] --> t } }
            previous = current
        }
    }
    /// W9's log: one shell task writing 100,000 lines in about ten seconds (1,000 every 0.1 s),
    /// every tenth at WARN — the dashboard follows it live.
    static let w9Log = Flow("bench_w9_log", maxActiveRuns: 1) { f in
        f.shell("talk", script: """
            for b in $(seq 0 99); do
              awk -v b=$b 'BEGIN { for (i = 1; i <= 1000; i++) printf "%s line %d of 100000: the quick brown fox jumps over the lazy dog\\n", (i % 10 ? "INFO" : "WARN"), b * 1000 + i }'
              sleep 0.1
            done
            """)
    }
    static let all = [w1, w2, w3, w8, w9, w9Log]

    // The scale workloads (#31): many flows, one big flow, a database with a million runs.
    static let w10Flows = Int(ProcessInfo.processInfo.environment["W10_N"] ?? "") ?? 1_000
    static let w11Layers = 50, w11Width = Int(ProcessInfo.processInfo.environment["W11_WIDTH"] ?? "") ?? 100
    static let w12Runs = Int(ProcessInfo.processInfo.environment["W12_N"] ?? "") ?? 1_000_000
    /// W10: a thousand small flows as a data team accumulates them: three tasks each, a daily
    /// schedule at a minute of their own, ten teams' tags.
    static let w10: [Flow] = (0..<w10Flows).map { i in
        Flow(String(format: "bench_w10_%04d", i), description: "one of \(w10Flows) registered flows", tags: ["bench", "team\(i % 10)"],
             schedule: .cron("\(i % 60) \(i % 24) * * *")) { f in
            f.task("extract") { _ in nil } --> f.task("transform") { _ in nil } --> f.task("load") { _ in nil }
        }
    }
    /// W11: one static flow of 5,000 no-op tasks in 50 layers of 100, each task downstream of
    /// two tasks of the layer before.
    static let w11 = Flow("bench_w11", maxActiveRuns: 1) { f in w11Build(f) }
    static func w11Build(_ f: FlowBuilder) {
        var previous: [TaskRef] = []
        for layer in 0..<w11Layers {
            let current = (0..<w11Width).map { i in f.task("l\(layer)_t\(i)") { _ in nil } }
            if !previous.isEmpty { for (i, t) in current.enumerated() { [previous[i], previous[(i + 1) % w11Width]] --> t } }
            previous = current
        }
    }
    /// W12: the flow whose grid is drawn with 100,000 runs behind it (a chain of ten).
    static let w12 = Flow("bench_w12", maxActiveRuns: 1) { f in
        var prev = f.task("t0") { _ in nil }
        for i in 1..<10 { let t = f.task("t\(i)") { _ in nil }; prev --> t; prev = t }
    }
    static let scale = all + w10 + [w11, w12]

    /// The flows of a set a bench scheduler or worker carries: `default` (W1–W9) or `scale` (with W10–W12's).
    static func set(_ name: String) throws -> [Flow] {
        switch name {
        case "default": return all
        case "scale": return scale
        default: throw ValidationError("--set must be default or scale, not `\(name)`")
        }
    }
}

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmarks of docs/benchmarks.md (see make bench).",
                                                    subcommands: [Run.self, BenchWorker.self, BenchScheduler.self], defaultSubcommand: Run.self)

    struct BenchWorker: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "worker", abstract: "A worker that knows the bench flows.")
        @OptionGroup var options: WorkerOptions
        @Option(help: "Worker name.") var name: String = "bench-worker"
        @Option(help: "The flows it knows: default (W1–W9) or scale (W1–W12).") var set: String = "default"
        func run() async throws {
            let settings = try Settings.fromEnvironment()
            let worker = Worker(redis: try RedisConfig(url: try settings.requireRedis()), flows: try BenchFlows.set(set) + FlowCatalog.flows,
                                config: try options.config(name: name))
            RoundTripReport.answerSignals(as: "worker")
            try await runServices([WorkerService(worker: worker)], logger: makeLogger("flowkit.bench"))
        }
    }

    struct BenchScheduler: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "scheduler", abstract: "A scheduler that knows the bench flows.")
        @Option(help: "The flows it carries: default (W1–W9) or scale (W1–W12).") var set: String = "default"
        @Option(help: "Scheduler name.") var name: String = "bench-scheduler"
        func run() async throws {
            let settings = try Settings.fromEnvironment()
            var sc = SchedulerConfig(name: name)
            sc.eventBatch = 2000
            let daemon = SchedulerDaemon(databaseURL: try settings.requireDatabase(), redis: try RedisConfig(url: try settings.requireRedis()),
                                         flows: try BenchFlows.set(set), config: sc)
            try await daemon.prepare()
            RoundTripReport.answerSignals(as: "scheduler")
            try await runServices(daemon.services(), logger: makeLogger("flowkit.bench"))
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "run", abstract: "Run W1–W6, W8 and W10–W12 and print BENCH lines.")
        @Option(help: "Repetitions of each workload.") var repeats: Int = 3
        @Option(help: "Workloads to run, comma-separated.") var only: String = "W1,W2,W3,W8,W4,W5,W6"
        @Option(help: "Port for the API in W5.") var port: Int = 18080

        func run() async throws {
            let settings = try Settings.fromEnvironment()
            let db = try settings.requireDatabase(), redisURL = try settings.requireRedis()
            var logger = makeLogger("flowkit.bench")
            logger.logLevel = .warning
            try await Migrator.migrate(PGConnection(db))
            let redis = try RedisConfig(url: redisURL)
            _ = try await RedisConnection(redis).command("FLUSHALL")
            let wanted = Set(only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() })

            // The scale workloads run with processes that carry their flows too (make bench runs
            // them in an invocation of their own: W4 is measured with the default set).
            let scale = !wanted.isDisjoint(with: ["W10", "W11", "W12"])
            let set = scale ? "scale" : "default"
            let expected = (scale ? BenchFlows.scale : BenchFlows.all).map(\.id)
            // The scheduler and the worker are processes of their own, as deployed, so that W4
            // measures each alone. Two worker slots in total: one worker with concurrency 2.
            let started = Date()
            let scheduler = try spawn(["bench", "scheduler", "--set", set], db: db, redisURL: redisURL)
            let worker = try spawn(["bench", "worker", "--concurrency", "2", "--set", set], db: db, redisURL: redisURL)
            defer {
                for pid in [worker, scheduler] { kill(pid, SIGTERM); var st: Int32 = 0; waitpid(pid, &st, 0) }
            }
            // Asked for their round trips around W2's runs.
            let children = [scheduler, worker]
            let store = SchedulerStore(db: PGPool(db, size: 2))
            let probe = PGConnection(db, label: "bench-probe")
            try await eventually(timeout: 600, every: 0.02) {
                (try? await probe.run { s in
                    try s.query("SELECT count(*) AS n FROM flows WHERE is_active AND flow_id = ANY($1::text[])", [expected]).first?.intOrNull("n")
                }) == expected.count
            }
            if wanted.contains("W10") {
                report("W10", "scheduler_start_to_registered_s", [Date().timeIntervalSince(started)],
                       note: "a scheduler process started to its \(expected.count) flows active: \(BenchFlows.w10Flows) of W10, W11's 5,000 tasks, the bench flows")
            }
            try await Task.sleep(for: .seconds(2))
            if wanted.contains("W4") {
                report("W4", "idle_worker_rss_mib", [rssMiB(worker)])
                // PSS splits shared library pages among the processes mapping them: what one more worker costs a host.
                report("W4", "idle_worker_pss_mib", [procMiB(worker, file: "smaps_rollup", field: "Pss:")])
            }
            if wanted.contains("W1") {
                var rates: [Double] = []
                for _ in 0..<repeats {
                    let r = try await runOnce(store, "bench_w1")
                    rates.append(Double(BenchFlows.w1Tasks) / r.seconds)
                }
                report("W1", "tasks_per_s", rates, note: "one run of \(BenchFlows.w1Tasks) independent no-op tasks, every state change committed")
            }
            var w2Baseline: (Double, Double, Double)?
            if wanted.contains("W2") || wanted.contains("W6") {
                w2Baseline = try await w2(store, label: "W2", children: children)
            }
            if wanted.contains("W3") {
                // As deployed, bursts have pauses between them: 5 s idle lets the scheduler's heap
                // trimmer give W1's and W2's heap back before W3 is measured (W4 is W3's, not W1's).
                if wanted.contains("W4") && (wanted.contains("W1") || wanted.contains("W2")) { try await Task.sleep(for: .seconds(5)) }
                var secs: [Double] = [], rss: [Double] = []
                for _ in 0..<repeats {
                    let sampler = RSSSampler(pid: scheduler)
                    let r = try await runOnce(store, "bench_w3")
                    secs.append(r.seconds)
                    rss.append(sampler.stop())
                }
                report("W3", "seconds", secs)
                if wanted.contains("W4") {
                    report("W4", "scheduler_rss_mib_during_w3", rss, note: "the scheduler process (which ran W1 and W2 before, then idled 5 s); max during W3")
                }
            }
            if wanted.contains("W8") {
                var secs: [Double] = []
                for _ in 0..<repeats { secs.append(try await runOnce(store, "bench_w8").seconds) }
                report("W8", "seconds", secs, note: "1 → \(BenchFlows.w8Items) mapped no-op instances → 1, trigger to run success (W3 has 500 declared tasks)")
                report("W8", "instances_per_s", secs.map { Double(BenchFlows.w8Items) / $0 })
            }
            if wanted.contains("W5") {
                try await w5(db: db, redis: redis, store: store)
            }
            if wanted.contains("W10") { try await w10(db: db, redis: redis) }
            if wanted.contains("W11") { try await w11(store) }
            if wanted.contains("W12") { try await w12(db: db, redis: redis) }
            if wanted.contains("W6"), let base = w2Baseline {
                try await seedHistory(db: db)
                let seeded = Date()
                let after = try await w2(store, label: "W6", children: children)
                print(String(format: "BENCH id=W6 metric=degradation_pct value=%.1f note=\"W2 total %.3fs → %.3fs, hop p50 %.2f → %.2f ms, p99 %.2f → %.2f ms\"",
                             (after.0 / base.0 - 1) * 100, base.0, after.0, base.1, after.1, base.2, after.2))
                // Retention on that history: `db clean` of every run finished before the W2 runs
                // above (the million task instances), while W2 runs again beside it.
                let t0 = Date()
                let cleaning = Task { try await store.cleanHistory(before: seeded) }
                let during = try await w2(store, label: "W6-clean", children: children)
                let cleaned = try await cleaning.value
                let secs = Date().timeIntervalSince(t0)
                print(String(format: "BENCH id=W6 metric=clean_s value=%.1f note=\"db clean: %d runs, %d task instances, %d batches\"",
                             secs, cleaned.runs, cleaned.taskInstances, cleaned.batches))
                print(String(format: "BENCH id=W6 metric=clean_task_instances_per_s value=%.0f", Double(cleaned.taskInstances) / secs))
                print(String(format: "BENCH id=W6 metric=w2_during_clean_hop_p99_ms value=%.2f note=\"W2 beside the cleanup: total %.3fs, hop p50 %.2f ms (before it: %.3fs, %.2f ms)\"",
                             during.2, during.0, during.1, after.0, after.1))
            }
        }

        func w2(_ store: SchedulerStore, label: String, children: [pid_t]) async throws -> (Double, Double, Double) {
            var totals: [Double] = [], p50s: [Double] = [], p99s: [Double] = [], pgTrips: [Double] = [], redisTrips: [Double] = []
            for _ in 0..<repeats {
                let before = await RoundTripReport.collect(from: children)
                let r = try await runOnce(store, "bench_w2")
                let after = await RoundTripReport.collect(from: children)
                if let before, let after {
                    pgTrips.append(Double(after.postgres - before.postgres) / Double(BenchFlows.w2Tasks))
                    redisTrips.append(Double(after.redis - before.redis) / Double(BenchFlows.w2Tasks))
                }
                totals.append(r.seconds)
                let hops = try await hopsMillis(store, runId: r.runId)
                p50s.append(percentile(hops, 0.5))
                p99s.append(percentile(hops, 0.99))
            }
            report(label, "total_s", totals)
            report(label, "hop_p50_ms", p50s)
            report(label, "hop_p99_ms", p99s)
            // Round trips of this process (scheduler, worker, and the 20 ms watcher) per task.
            report(label, "pg_round_trips_per_task", pgTrips)
            report(label, "redis_round_trips_per_task", redisTrips)
            return (median(totals), median(p50s), median(p99s))
        }

        func runOnce(_ store: SchedulerStore, _ flow: String) async throws -> (runId: String, seconds: Double) {
            let run = try await store.createRun(flowId: flow, kind: "manual", conf: [:], logicalDate: nil, now: Date())
            let t0 = Date()
            // The watcher reads the run's state alone: a read with task counts aggregates every
            // instance of the run at each poll and takes CPU from the system it measures.
            var progress = (state: "", createdAt: t0, endedAt: Date?.none)
            while !["success", "failed", "cancelled"].contains(progress.state) {
                try await Task.sleep(for: .milliseconds(20))
                progress = try await store.runProgress(run.runId)
                if Date().timeIntervalSince(t0) > 900 { throw CLIError("\(flow) did not finish in 15 minutes") }
            }
            guard progress.state == "success" else { throw CLIError("\(flow) ended \(progress.state)") }
            return (run.runId, (progress.endedAt ?? Date()).timeIntervalSince(progress.createdAt))
        }

        /// Previous task's end to the next task's start, in milliseconds, from the tries' worker timestamps.
        func hopsMillis(_ store: SchedulerStore, runId: String) async throws -> [Double] {
            let tis = try await store.taskInstances(runId: runId)
            let byId = Dictionary(uniqueKeysWithValues: tis.map { ($0.taskId, $0) })
            var hops: [Double] = []
            for i in 1..<BenchFlows.w2Tasks {
                guard let prevEnd = byId["t\(i - 1)"]?.endedAt, let start = byId["t\(i)"]?.startedAt else { continue }
                hops.append(start.timeIntervalSince(prevEnd) * 1000)
            }
            return hops
        }

        func w5(db: String, redis: RedisConfig, store: SchedulerStore) async throws {
            try await SchedulerStore.seedFinishedRuns(databaseURL: db, flowId: "bench_w2", count: 10_000)
            try await withAPI(db: db, redis: redis) {
                let r = try load("/api/v1/runs?limit=50", connections: 50, seconds: 10)
                report("W5", "requests_per_s", r.rps, note: "GET /api/v1/runs?limit=50, 50 connections, 10 s, 10,000 runs")
                report("W5", "p99_ms", r.p99)
            }
        }

        /// W10: a thousand flows: the flow list's API under load (the dashboard's list is
        /// measured in a browser by scripts/bench_scale_browser.sh).
        func w10(db: String, redis: RedisConfig) async throws {
            // Every flow the list returns: W10's, the bench's, and W6's 2,000 seeded ones when it ran.
            let flows = try await PGConnection(db, label: "bench-probe").run { s in
                try s.query("SELECT count(*) AS n FROM flows").first?.intOrNull("n") ?? 0
            }
            try await withAPI(db: db, redis: redis) {
                let r = try load("/api/v1/flows", connections: 10, seconds: 5)
                report("W10", "flows_list_p99_ms", r.p99, note: "GET /api/v1/flows returning \(flows) flows, 10 connections, 5 s")
                report("W10", "flows_list_requests_per_s", r.rps)
            }
        }

        /// W11: a static flow of 5,000 tasks in 50 layers: what registering such a definition
        /// costs (a copy under a new id each time, so that it is a new version), and trigger to success.
        func w11(_ store: SchedulerStore) async throws {
            var reg: [Double] = [], secs: [Double] = []
            for _ in 0..<repeats {
                let copy = Flow("bench_w11_probe_\(UUID().uuidString.prefix(8).lowercased())") { BenchFlows.w11Build($0) }
                let t0 = Date()
                try await store.registerFlows([copy], now: Date())
                reg.append(Date().timeIntervalSince(t0))
            }
            for _ in 0..<repeats { secs.append(try await runOnce(store, "bench_w11").seconds) }
            let tasks = Double(BenchFlows.w11Layers * BenchFlows.w11Width)
            report("W11", "registration_s", reg, note: "registerFlows of a new \(Int(tasks))-task definition (\(BenchFlows.w11Layers) layers, two upstream tasks each)")
            report("W11", "seconds", secs, note: "trigger to run success")
            report("W11", "tasks_per_s", secs.map { tasks / $0 })
        }

        /// W12: a database of a million runs (100,000 of them of one flow): the runs list's first
        /// and a deep page (keyset), and that flow's grid.
        func w12(db: String, redis: RedisConfig) async throws {
            let t0 = Date()
            let seeded = try await SchedulerStore.seedScaleRuns(databaseURL: db, total: BenchFlows.w12Runs, gridFlow: "bench_w12", gridRuns: BenchFlows.w12Runs / 10,
                                                                otherFlows: BenchFlows.w10.map(\.id))
            report("W12", "seed_s", [Date().timeIntervalSince(t0)], note: "\(seeded.inserted) runs inserted, \(seeded.total) in the database")
            let deep = try await PGConnection(db, label: "bench-probe").run { s in
                try s.query("SELECT id FROM runs ORDER BY id DESC OFFSET $1 LIMIT 1", [seeded.total * 9 / 10]).first?.intOrNull("id")
            } ?? 1
            try await withAPI(db: db, redis: redis) {
                for (metric, path, what) in [("runs_first_page", "/api/v1/runs?limit=50", "the newest 50 runs"),
                                             ("runs_deep_page", "/api/v1/runs?limit=50&cursor=\(deep)", "50 runs after 90 % of them (keyset cursor)"),
                                             ("runs_of_flow_first_page", "/api/v1/runs?limit=50&flow_id=bench_w12", "the newest 50 of bench_w12's runs"),
                                             ("grid", "/api/v1/flows/bench_w12/grid?runs=25", "bench_w12's grid, 25 runs of 10 tasks"),
                                             // What the dashboard's home and runs pages ask (W9's pages over this database).
                                             ("overview", "/api/v1/overview", "the home page's runs by state over 24 h and 7 days and the last failures"),
                                             ("runs_page", "/api/v1/runs?limit=50&taskCounts=true", "the runs page: the newest 50 with their task counts"),
                                             ("runs_page_failed", "/api/v1/runs?limit=50&taskCounts=true&state=failed", "the runs page filtered to failed runs")] {
                    let r = try load(path, connections: 10, seconds: 5)
                    report("W12", metric + "_p99_ms", r.p99, note: "GET \(path): \(what); \(seeded.total) runs, 10 connections, 5 s")
                    report("W12", metric + "_requests_per_s", r.rps)
                }
            }
        }

        /// Serves the API in this process, on `port`, for the length of `body`.
        func withAPI(db: String, redis: RedisConfig, _ body: () async throws -> Void) async throws {
            let api = FlowAPI(store: SchedulerStore(db: PGPool(db, size: 4)), broker: SchedulerBroker(config: redis, consumer: "bench-api"),
                              config: APIConfig(openReads: true))
            let app = api.application(host: "127.0.0.1", port: port)
            let server = Task { try await app.run() }
            defer { server.cancel() }
            try await Task.sleep(for: .seconds(1))
            try await body()
        }

        /// `repeats` runs of wrk on one path: requests/s and p99 latency (ms) of each.
        func load(_ path: String, connections: Int, seconds: Int) throws -> (rps: [Double], p99: [Double]) {
            guard (try? ProcessRunner.runToCompletion(["sh", "-c", "command -v wrk"]).status) == 0 else {
                print("# wrk is not installed (apt-get install wrk): no figures for GET \(path)")
                return ([], [])
            }
            var rps: [Double] = [], p99: [Double] = []
            for _ in 0..<repeats {
                let (_, out) = try ProcessRunner.runToCompletion(["wrk", "-t2", "-c\(connections)", "-d\(seconds)s", "--latency", "http://127.0.0.1:\(port)\(path)"])
                if let line = out.split(separator: "\n").first(where: { $0.contains("Requests/sec") }),
                   let v = Double(line.split(separator: " ").last ?? "") { rps.append(v) }
                if let line = out.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix("99%") }),
                   let v = parseWrkDuration(String(line.split(separator: " ").last ?? "")) { p99.append(v) }
                if out.contains("Non-2xx") { print("# GET \(path): wrk saw non-2xx responses:\n\(out)") }
            }
            return (rps, p99)
        }

        /// W6's history: 2,000 scheduled flows and a million finished task instances.
        func seedHistory(db: String) async throws {
            try await SchedulerStore.seedHistory(databaseURL: db, templateFlowId: "bench_w2")
        }

        func report(_ id: String, _ metric: String, _ values: [Double], note: String? = nil) {
            guard !values.isEmpty else { return }
            var line = String(format: "BENCH id=%@ metric=%@ value=%.4g runs=%d min=%.4g max=%.4g", id, metric, median(values), values.count,
                              values.min()!, values.max()!)
            if let note { line += " note=\"\(note)\"" }
            print(line)
            flushStdout()
        }

        func spawn(_ args: [String], db: String, redisURL: String) throws -> pid_t {
            let exe = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
                : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
            let argv = [exe] + args
            var env = ProcessInfo.processInfo.environment
            env["FLOWKIT_DATABASE_URL"] = db
            env["FLOWKIT_REDIS_URL"] = redisURL
            env["FLOWKIT_LOG_LEVEL"] = "warning"
            let a: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
            let e: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { a.forEach { free($0) }; e.forEach { free($0) } }
            var pid: pid_t = 0
            guard posix_spawn(&pid, exe, nil, nil, a, e) == 0 else { throw CLIError("cannot start `flowctl \(args.joined(separator: " "))`") }
            return pid
        }
    }
}

func median(_ v: [Double]) -> Double { percentile(v, 0.5) }

func percentile(_ v: [Double], _ p: Double) -> Double {
    guard !v.isEmpty else { return .nan }
    let s = v.sorted()
    return s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))]
}

func parseWrkDuration(_ s: String) -> Double? {
    if s.hasSuffix("us"), let v = Double(s.dropLast(2)) { return v / 1000 }
    if s.hasSuffix("ms"), let v = Double(s.dropLast(2)) { return v }
    if s.hasSuffix("s"), let v = Double(s.dropLast(1)) { return v * 1000 }
    return nil
}

/// Resident memory of a process, in MiB, from /proc.
func rssMiB(_ pid: pid_t) -> Double { procMiB(pid, file: "status", field: "VmRSS:") }

/// A kB figure of /proc/<pid>/<file>, in MiB.
func procMiB(_ pid: pid_t, file: String, field: String) -> Double {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/\(file)", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
    return kb / 1024
}

/// Samples a process's RSS every 50 ms on a thread; `stop` returns the maximum seen.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var maxSeen = 0.0
    private var running = true
    init(pid: pid_t) {
        let t = Thread { [self] in
            while lock.withLock({ running }) {
                let v = rssMiB(pid)
                lock.withLock { maxSeen = max(maxSeen, v) }
                usleep(50_000)
            }
        }
        t.start()
    }
    func stop() -> Double { lock.withLock { running = false; return maxSeen } }
}

func eventually(timeout: Double = 60, every: Double = 0.05, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .seconds(every))
    }
    throw CLIError("timed out after \(timeout)s")
}

/// Round trips made by the bench's own processes during a workload: each child writes its
/// counters (`RoundTrips`) to a file when sent SIGUSR1; the parent adds its own (its watcher).
enum RoundTripReport {
    static func file(_ pid: pid_t) -> String { NSTemporaryDirectory() + "flowkit-bench-roundtrips-\(pid)" }

    nonisolated(unsafe) private static var source: (any DispatchSourceSignal)?

    /// In a child: answer SIGUSR1 by writing "postgres redis" to `file(getpid())`.
    static func answerSignals(as role: String) {
        signal(SIGUSR1, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        s.setEventHandler {
            let text = "\(RoundTrips.postgres.load(ordering: .relaxed)) \(RoundTrips.redis.load(ordering: .relaxed))"
            let path = file(getpid())
            try? text.write(toFile: path + ".tmp", atomically: false, encoding: .utf8)
            rename(path + ".tmp", path)
        }
        s.resume()
        source = s
    }

    /// The children's counters and this process's, summed; nil when a child did not answer.
    static func collect(from pids: [pid_t]) async -> (postgres: Int, redis: Int)? {
        var pg = RoundTrips.postgres.load(ordering: .relaxed), redis = RoundTrips.redis.load(ordering: .relaxed)
        for pid in pids {
            unlink(file(pid))
            kill(pid, SIGUSR1)
            var text: String?
            for _ in 0..<200 {
                if let t = try? String(contentsOfFile: file(pid), encoding: .utf8) { text = t; break }
                try? await Task.sleep(for: .milliseconds(5))
            }
            let parts = text?.split(separator: " ").compactMap { Int($0) } ?? []
            guard parts.count == 2 else { return nil }
            pg += parts[0]; redis += parts[1]
            unlink(file(pid))
        }
        return (pg, redis)
    }
}
