import Testing
@testable import FlowKit

@Suite("Trigger rules and run state")
struct TriggerRuleTests {
    typealias D = TriggerRule.Decision

    /// (rule, upstream states, decision) — Airflow's semantics, one row per case.
    static let cases: [(TriggerRule, [TaskState], D)] = [
        (.allSuccess, [.success, .success], .run),
        (.allSuccess, [.success, .running], .wait),
        (.allSuccess, [.success, .failed], .upstreamFailed),
        (.allSuccess, [.running, .upstreamFailed], .upstreamFailed),
        (.allSuccess, [.success, .skipped], .skip),
        (.allSuccess, [], .run),
        (.allDone, [.success, .failed, .skipped], .run),
        (.allDone, [.success, .upForRetry], .wait),
        (.allFailed, [.failed, .upstreamFailed], .run),
        (.allFailed, [.failed, .success], .skip),
        (.allFailed, [.failed, .queued], .wait),
        (.allFailed, [.skipped, .failed], .skip),
        (.oneSuccess, [.success, .running], .run),
        (.oneSuccess, [.failed, .running], .wait),
        (.oneSuccess, [.failed, .failed], .upstreamFailed),
        (.oneSuccess, [.skipped, .skipped], .skip),
        (.oneFailed, [.failed, .running], .run),
        (.oneFailed, [.success, .running], .wait),
        (.oneFailed, [.success, .skipped], .skip),
        (.noneFailed, [.success, .skipped], .run),
        (.noneFailed, [.success, .running], .wait),
        (.noneFailed, [.success, .failed], .upstreamFailed),
    ]

    @Test("every trigger rule decides as Airflow's does", arguments: cases.indices)
    func rule(_ i: Int) {
        let (rule, upstream, expected) = Self.cases[i]
        #expect(rule.evaluate(upstream) == expected, "\(rule.rawValue) with \(upstream.map(\.rawValue))")
    }

    @Test("a run succeeds when every leaf succeeded or was skipped, fails otherwise")
    func runState() {
        #expect(finalRunState(leafStates: [.success, .skipped]) == .success)
        #expect(finalRunState(leafStates: [.success, .failed]) == .failed)
        #expect(finalRunState(leafStates: [.upstreamFailed]) == .failed)
    }

    @Test("terminal states are the ones that end a task instance")
    func terminal() {
        #expect(TaskState.allCases.filter(\.isTerminal) == [.success, .failed, .upstreamFailed, .skipped, .cancelled])
    }
}
