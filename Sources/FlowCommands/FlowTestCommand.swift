import ArgumentParser
import FlowKit
import FlowKitTesting
import Foundation

/// `flowctl flows test FLOW`: the flow run once in this process, no servers (Airflow's `dags test`).
struct FlowTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Run a flow once in this process, without PostgreSQL, Redis or a scheduler; exit 0 only if the run succeeds.",
        discussion: """
            The real task code runs (Swift, shell, SQL, Python, dbt and S3 tasks, sensors) in dependency order, with the \
            scheduler's trigger rules, branches, mapping, retries and timeouts, and the conf checked against the flow's \
            params. Connections come from FLOWKIT_CONN_<NAME> as on a worker. Celery tasks, trigger-flow tasks and sensors \
            waiting for another flow's run need the servers: they fail here as not runnable in-process.
            """)

    @Argument(help: "The flow's id.") var flow: String
    @Option(help: "The run's conf: a JSON object of params.") var conf: String?
    @Option(help: "Logical date: YYYY-MM-DD or YYYY-MM-DDTHH:MM in the flow's time zone, or an ISO-8601 instant; default now.")
    var logicalDate: String?
    @Option(help: "Run only this task and the tasks it depends on.") var task: String?
    @Flag(help: "No waiting between retries; sensors poke at most a second apart.") var noDelay = false
    @Flag(help: "Print each task's outcome as JSON instead of the table.") var json = false
    @Flag(help: "Do not print task logs as they happen.") var quiet = false

    func run() async throws {
        let flows = FlowCatalog.flows
        guard let f = flows.first(where: { $0.id == flow }) else {
            throw CLIError("unknown flow `\(flow)`: this binary has \(flows.map(\.id).sorted().joined(separator: ", "))")
        }
        var confObject: [String: JSONValue] = [:]
        if let conf {
            guard let parsed = try? JSONValue.parse(conf), let o = parsed.objectValue else {
                throw CLIError("--conf must be a JSON object, e.g. '{\"pick\": \"right\"}'")
            }
            confObject = o
        }
        var date = Date()
        if let logicalDate {
            date = try CLITime.parse(logicalDate, flag: "--logical-date", zone: f.schedule?.timeZone ?? "UTC").date
        }
        let quiet = quiet
        let result: FlowTestRun
        do {
            result = try await FlowTestRun.run(f, .init(conf: confObject, logicalDate: date, task: task, noDelay: noDelay,
                                                        log: { line in if !quiet { print(line) } }))
        } catch {
            throw CLIError("\(error)")
        }
        if json {
            printJSON(.object(["flowId": .string(result.flowId), "state": .string(result.state.rawValue),
                               "tasks": .array(result.outcomes.map(Self.describe))]))
        } else {
            print("")
            print(table(["TASK", "STATE", "TRIES", "SECONDS", "RESULT / ERROR"], result.outcomes.map { o in
                [o.taskId, o.state.rawValue, String(o.tries), String(format: "%.2f", o.seconds),
                 String((o.error ?? o.result?.compactJSON ?? "").prefix(120))]
            }))
            print("\(result.flowId): \(result.state.rawValue) (in-process test run, logical date \(Instant.format(date)))")
        }
        if !result.succeeded { throw ExitCode(1) }
    }

    static func describe(_ o: FlowTestRun.TaskOutcome) -> JSONValue {
        var out: [String: JSONValue] = ["taskId": .string(o.taskId), "state": .string(o.state.rawValue), "tries": .int(o.tries),
                                        "seconds": .double(o.seconds)]
        if let r = o.result { out["result"] = r }
        if let e = o.error { out["error"] = .string(e) }
        if !o.instances.isEmpty { out["instances"] = .array(o.instances.map(describe)) }
        return .object(out)
    }
}
