import CeleryProtocol
import FlowKit
import Foundation
import RedisClient

/// Loads ancestors' results from the keys workers write with each outcome
/// (`FlowKitKeys.result`): one GET when a task asks, nothing carried in messages.
struct RedisResultLoader: ResultLoader {
    let redis: RedisConnection
    /// The asking task's flow: its ancestors are worked out only when it asks.
    let flow: Flow?

    func result(of task: String, for ctx: TaskContext) async throws -> JSONValue? {
        let own = MappedInstance.parse(ctx.taskId)?.task ?? ctx.taskId
        guard let flow, Self.ancestors(of: own, in: flow).contains(task) else {
            throw TaskError("task `\(own)` asked for the result of `\(task)`, which is not one of its upstream tasks, direct or indirect")
        }
        if flow.task(task)?.mapOver != nil {
            throw TaskError("the results of mapped task `\(task)` reach its direct downstream tasks only: make `\(own)` depend on `\(task)`")
        }
        let key = FlowKitKeys.result(ctx.runId, task)
        let reply = try await redis.run { s in try s.command(FlowKitKeys.readResultCommand(key)) }
        guard let text = reply.string else {
            throw TaskError("no result of `\(task)` in Redis for run `\(ctx.runId)`: it failed, did not run, or its result expired (kept \(FlowKitKeys.runKeySeconds / 86400) days)")
        }
        return try JSONValue.parse(text)
    }

    /// Every task `task` depends on, directly or not.
    static func ancestors(of task: String, in flow: Flow) -> Set<String> {
        let upstreamOf = Dictionary(flow.tasks.map { ($0.id, $0.upstream) }, uniquingKeysWith: { a, _ in a })
        var out = Set<String>(), work = upstreamOf[task] ?? []
        while let t = work.popLast() { if out.insert(t).inserted { work += upstreamOf[t] ?? [] } }
        return out
    }
}
