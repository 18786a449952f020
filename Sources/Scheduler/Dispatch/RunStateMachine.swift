public import FlowKit

/// A run's state machine, as pure code: which pending tasks become ready, which will never run
/// (skipped, upstream_failed — transitively), and the state a run ends in. The store reads the
/// states, calls these, and writes what they decide, inside one transaction.
public enum RunStateMachine {
    /// What one wave of evaluation decided.
    public struct Wave: Equatable, Sendable {
        public var ready: [String] = []
        public var skipped: [String] = []
        public var upstreamFailed: [String] = []
        public init(ready: [String] = [], skipped: [String] = [], upstreamFailed: [String] = []) {
            self.ready = ready; self.skipped = skipped; self.upstreamFailed = upstreamFailed
        }
        /// Tasks that ended in this wave without running: their own downstream come next.
        public var ended: [String] { skipped + upstreamFailed }
    }

    /// The tasks a run starts with: its roots, and the tasks whose rule is `always` (they wait
    /// for nothing), highest priority first.
    public static func startingTasks(_ graph: FlowGraph) -> [String] {
        let always = graph.definition.tasks.filter { $0.triggerRule == .always && !$0.upstream.isEmpty }.map(\.id)
        return dispatchOrder(graph.roots + always, in: graph)
    }

    /// The direct downstream tasks each branch did not choose (by branch task id → chosen ids):
    /// they are skipped, and the skip propagates by the trigger rules.
    public static func notChosen(_ choices: [String: [String]], in graph: FlowGraph) -> [String] {
        choices.flatMap { branch, chosen in (graph.downstream[branch] ?? []).filter { !chosen.contains($0) } }.sorted()
    }

    /// The tasks to look at after `changed` ended: their direct downstream.
    public static func candidates(after changed: [String], in graph: FlowGraph) -> [String] {
        Array(Set(changed.flatMap { graph.downstream[$0] ?? [] })).sorted()
    }

    /// The states a wave needs: the candidates' and their upstream tasks'.
    public static func statesNeeded(for candidates: [String], in graph: FlowGraph) -> [String] {
        Array(Set(candidates + candidates.flatMap { graph.tasks[$0]?.upstream ?? [] })).sorted()
    }

    /// One wave: each pending candidate (not already made ready) by its trigger rule over its
    /// upstream tasks' states; a state missing from `states` counts as pending.
    public static func evaluate(_ candidates: [String], states: [String: TaskState], in graph: FlowGraph,
                                alreadyReady: Set<String> = []) -> Wave {
        var wave = Wave()
        for c in candidates where states[c] == .pending && !alreadyReady.contains(c) {
            guard let def = graph.tasks[c] else { continue }
            switch def.triggerRule.evaluate(def.upstream.map { states[$0] ?? .pending }) {
            case .wait: break
            case .run: wave.ready.append(c)
            case .skip: wave.skipped.append(c)
            case .upstreamFailed: wave.upstreamFailed.append(c)
            }
        }
        return wave
    }

    /// Every wave after `finished` ended, with the states known up front (for tests and for
    /// callers that hold them all): skips and upstream failures propagate transitively.
    public static func settle(after finished: [String], states initial: [String: TaskState], in graph: FlowGraph) -> Wave {
        var states = initial, total = Wave(), changed = finished
        while !changed.isEmpty {
            let wave = evaluate(candidates(after: changed, in: graph), states: states, in: graph, alreadyReady: Set(total.ready))
            for t in wave.skipped { states[t] = .skipped }
            for t in wave.upstreamFailed { states[t] = .upstreamFailed }
            total.ready += wave.ready; total.skipped += wave.skipped; total.upstreamFailed += wave.upstreamFailed
            changed = wave.ended
        }
        return total
    }

    /// Ready tasks in the order the broker should get them: higher priority first, then as given.
    public static func dispatchOrder(_ ready: [String], in graph: FlowGraph) -> [String] {
        ready.enumerated().sorted { a, b in
            let pa = graph.tasks[a.element]?.priority ?? 0, pb = graph.tasks[b.element]?.priority ?? 0
            return pa != pb ? pa > pb : a.offset < b.offset
        }.map(\.element)
    }

    /// The state a run ends in once no task is unfinished: Airflow's leaf rule. The store's SQL
    /// applies the same rule with `failingLeafStates` as its parameter: one list, two places.
    public static func finalState(leafStates: [TaskState]) -> RunState { finalRunState(leafStates: leafStates) }
    public static var failingLeafStateNames: [String] { failingLeafStates.map(\.rawValue) }
}
