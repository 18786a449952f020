public import FlowKit

/// The flow of `make faults`' upgrade scenario: two binaries (`upgrade-fixture-v1`, `-v2`)
/// build it with different code for `compute`, and say so in `version`. Its tasks run on the
/// `upgrade` queue, which only those binaries' workers consume.
public func upgradeDemo(version: String, compute: @escaping @Sendable (Int) -> JSONValue) -> Flow {
    Flow("upgrade_demo", description: "make faults: a rolling upgrade with runs in flight", tags: ["faults"], version: version,
         params: [Param("n", .int, default: 7)], defaults: TaskOptions(queue: "upgrade")) { f in
        let prepare = f.task("prepare") { ctx in
            try await Task.sleep(for: .milliseconds(800))
            return .int(ctx.params["n"]?.intValue ?? 7)
        }
        let compute = f.task("compute", after: [prepare]) { ctx in
            try await Task.sleep(for: .milliseconds(800))
            return compute(ctx.upstream["prepare"]?.intValue ?? 0)
        }
        f.task("report", after: [compute]) { ctx in ctx.upstream["compute"] }
    }
}
