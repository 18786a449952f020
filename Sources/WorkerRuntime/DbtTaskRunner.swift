import FlowKit
import Foundation

/// Runs a dbt task (`FlowBuilder.dbt`) on a worker: the project copied to a directory of the try
/// (so a read-only install of the flows works and tries never share `target/`), `dbt <command>`
/// from a virtualenv built once per requirement set, named connections in the environment for the
/// profile's `env_var()`, and the result read from dbt's `run_results.json`.
enum DbtTaskRunner {
    static func run(_ spec: DbtTaskSpec, _ ctx: TaskContext, home: String) async throws -> JSONValue {
        guard let runner = ctx.commandRunner else { throw TaskError("task `\(ctx.taskId)` cannot start dbt here: no command runner") }
        guard let project = spec.projectURL else { throw TaskError("task `\(ctx.taskId)`: this worker does not know where dbt project `\(spec.project)` is") }
        let python = try await Virtualenvs(root: URL(fileURLWithPath: home).appendingPathComponent("venvs")).python(for: spec.requirements, ctx: ctx, runner: runner)
        let dbt = URL(fileURLWithPath: python).deletingLastPathComponent().appendingPathComponent("dbt").path

        // Kept after the try (its compiled SQL is what a failure points at), one per try.
        let work = URL(fileURLWithPath: home).appendingPathComponent("dbt").appendingPathComponent(safe(ctx.runId))
            .appendingPathComponent("\(safe(ctx.taskId))-try\(ctx.tryNumber)")
        try? FileManager.default.removeItem(at: work)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let copy = work.appendingPathComponent("project")
        try FileManager.default.copyItem(at: project, to: copy)
        for leftover in ["target", "logs", "dbt_packages"] { try? FileManager.default.removeItem(at: copy.appendingPathComponent(leftover)) }
        let targetPath = work.appendingPathComponent("target")
        var argv = [dbt, spec.command.rawValue, "--project-dir", copy.path, "--profiles-dir", spec.profilesURL?.path ?? copy.path,
                    "--target-path", targetPath.path, "--log-path", work.appendingPathComponent("logs").path]
        if let t = spec.target { argv += ["--target", t] }
        if !spec.select.isEmpty { argv += ["--select"] + spec.select }
        if !spec.exclude.isEmpty { argv += ["--exclude"] + spec.exclude }
        if let vars = spec.vars { argv += ["--vars", JSONValue.object(vars).compactJSON] }
        if spec.fullRefresh { argv.append("--full-refresh") }

        var environment = ctx.processEnvironment
        for (name, value) in ctx.connections { environment.merge(connectionParts(name, value)) { _, new in new } }
        environment["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
        environment["DBT_USE_COLORS"] = "false"
        environment["DBT_PRINTER_WIDTH"] = "120"
        ctx.log("dbt: \(argv.dropFirst().joined(separator: " "))")
        let outcome = try await runner.run(ShellCommand(argv: argv), environment: environment, log: ctx.log, isCancelled: { ctx.isCancelled })
        if let sig = outcome.signal { throw TaskError("dbt was killed by signal \(sig)") }

        let resultsFile = targetPath.appendingPathComponent("run_results.json")
        guard let data = try? Data(contentsOf: resultsFile), let results = try JSONValue.parse(data)["results"]?.arrayValue else {
            throw TaskError("dbt \(spec.command.rawValue) exited with status \(outcome.exitCode) without run results (its output is in the log)")
        }
        var counts = ["model": 0, "test": 0, "seed": 0, "snapshot": 0]
        var failed: [String] = [], reasons: [String] = [], built: [String: JSONValue] = [:]
        for r in results {
            let id = r["unique_id"]?.stringValue ?? "?"
            let kind = String(id.split(separator: ".").first ?? "")
            counts[kind, default: 0] += 1
            let status = r["status"]?.stringValue ?? ""
            let name = id.split(separator: ".").dropFirst(2).joined(separator: ".")
            if kind == "model" || kind == "seed" || kind == "snapshot", status == "success", let n = r["adapter_response"]?["rows_affected"]?.intValue {
                built[name] = .int(n)
            }
            guard ["error", "fail", "runtime error"].contains(status) else { continue }
            failed.append(name)
            let message = (r["message"]?.stringValue ?? status).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }.joined(separator: " ")
            var why = "\(kind) `\(name)` \(status == "fail" ? "failed" : "errored"): \(message)"
            if let compiled = compiledPath(targetPath, r) { why += " (compiled SQL: \(compiled))" }
            reasons.append(why)
        }
        if !failed.isEmpty { throw TaskError("dbt \(spec.command.rawValue): " + reasons.joined(separator: "; ")) }
        guard outcome.exitCode == 0 else {
            throw TaskError("dbt \(spec.command.rawValue) exited with status \(outcome.exitCode) (its output is in the log)")
        }
        var out: [String: JSONValue] = ["models": .int(counts["model"]!), "tests": .int(counts["test"]!), "seeds": .int(counts["seed"]!),
                                        "failed": .array([])]
        if counts["snapshot"]! > 0 { out["snapshots"] = .int(counts["snapshot"]!) }
        // Each model and seed built, with the rows it holds (dbt's `rows_affected`), by name.
        for (name, rows) in built where out[name] == nil { out[name] = rows }
        return .object(out)
    }

    /// The compiled SQL dbt wrote for a node, when it did.
    static func compiledPath(_ target: URL, _ result: JSONValue) -> String? {
        guard let e = FileManager.default.enumerator(at: target.appendingPathComponent("compiled"), includingPropertiesForKeys: nil) else { return nil }
        let name = result["unique_id"]?.stringValue?.split(separator: ".").dropFirst(2).joined(separator: ".") ?? ""
        for case let url as URL in e where url.lastPathComponent == "\(name).sql" || url.deletingPathExtension().lastPathComponent.hasPrefix(name + "_") {
            return url.path
        }
        return nil
    }

    /// A URL connection's parts, for dbt profiles: `FLOWKIT_CONN_<NAME>_HOST`, `_PORT`, `_USER`,
    /// `_PASSWORD`, `_DBNAME` (empty when the URL lacks one).
    static func connectionParts(_ name: String, _ value: String) -> [String: String] {
        guard let c = URLComponents(string: value), c.scheme != nil else { return [:] }
        let p = "FLOWKIT_CONN_\(name.uppercased())_"
        let db = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        return [p + "HOST": c.host ?? "", p + "PORT": c.port.map(String.init) ?? "5432", p + "USER": c.user?.removingPercentEncoding ?? c.user ?? "",
                p + "PASSWORD": c.password?.removingPercentEncoding ?? c.password ?? "", p + "DBNAME": db]
    }

    static func safe(_ s: String) -> String {
        String(s.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
    }
}
