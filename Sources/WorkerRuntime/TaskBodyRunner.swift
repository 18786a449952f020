public import FlowKit

/// A sensor's "not yet", on its way out of a poke: the worker frees the slot and the scheduler
/// pokes again; an in-process run waits the poke interval itself.
public struct SensorNotReady: Error, Sendable {
    public let reason: String
}

/// Runs one try of a task's body, whatever its kind: what a worker does with a task message,
/// and what `flowctl flows test` does in-process — one code path for both.
public enum TaskBodyRunner {
    /// The body's result. A sensor that is not ready throws `SensorNotReady`; a branch's result
    /// is the list of tasks it chose (checked against `branchTargets`, its direct downstream).
    public static func run(_ task: FlowTask, _ ctx: TaskContext, timeout: Double?, home: String,
                           branchTargets: [String]) async throws -> JSONValue? {
        switch task.body {
        case .closure(let f): return try await f(ctx)
        case .shell(let cmd): return try await ctx.run(cmd)
        case .celery(let name): throw TaskError("task `\(task.id)` is a Celery task (`\(name)`) and runs on a Celery worker, not here")
        case .triggerFlow(let spec): throw TaskError("task `\(task.id)` starts flow `\(spec.flow)`: the scheduler runs it, not a worker")
        case .approval: throw TaskError("task `\(task.id)` waits for a person's decision: the scheduler runs it, not a worker")
        case .sql(let spec): return try await SQLTaskRunner.run(spec, ctx, timeout: timeout)
        case .python(let spec): return try await PythonTaskRunner.run(spec, ctx, home: home)
        case .dbt(let spec): return try await DbtTaskRunner.run(spec, ctx, home: home)
        case .s3(let spec): return try await S3TaskRunner.run(spec, ctx)
        case .branch(let f): return try branchResult(task.id, chosen: try await f(ctx), targets: branchTargets)
        case .sensor(_, let check):
            switch try await check(ctx) {
            case .ready(let v):
                ctx.log("poke: ready")
                return v
            case .notYet(let reason): throw SensorNotReady(reason: reason)
            }
        }
    }

    /// A branch's choice as its result, or the error naming the ids it may choose.
    public static func branchResult(_ task: String, chosen: [String], targets: [String]) throws -> JSONValue {
        let unknown = chosen.filter { !targets.contains($0) }
        guard unknown.isEmpty else {
            let valid = targets.isEmpty ? "it has no downstream tasks" : "the valid ones are " + targets.sorted().map { "`\($0)`" }.joined(separator: ", ")
            throw TaskError("branch `\(task)` chose \(unknown.map { "`\($0)`" }.joined(separator: ", ")), not a direct downstream task: \(valid)")
        }
        var seen = Set<String>()
        return .array(chosen.filter { seen.insert($0).inserted }.map(JSONValue.string))
    }
}
