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

    /// Every rule against every mix of two upstream tasks: success, failed, upstream_failed,
    /// skipped, running — written out from Airflow's table (r run, w wait, s skip, u upstream_failed).
    static let mixes: [(String, [TaskState])] = [
        ("SS", [.success, .success]), ("SF", [.success, .failed]), ("SU", [.success, .upstreamFailed]), ("SK", [.success, .skipped]),
        ("SR", [.success, .running]), ("FF", [.failed, .failed]), ("FU", [.failed, .upstreamFailed]), ("FK", [.failed, .skipped]),
        ("FR", [.failed, .running]), ("UU", [.upstreamFailed, .upstreamFailed]), ("UK", [.upstreamFailed, .skipped]),
        ("UR", [.upstreamFailed, .running]), ("KK", [.skipped, .skipped]), ("KR", [.skipped, .running]), ("RR", [.running, .queued]),
    ]
    static let table: [TriggerRule: String] = [
        //                          SS SF SU SK SR FF FU FK FR UU UK UR KK KR RR
        .allSuccess:              "r  u  u  s  w  u  u  u  u  u  u  u  s  s  w",
        .allDone:                 "r  r  r  r  w  r  r  r  w  r  r  w  r  w  w",
        .allFailed:               "s  s  s  s  s  r  r  s  w  r  s  w  s  s  w",
        .oneSuccess:              "r  r  r  r  r  u  u  u  w  u  u  w  s  w  w",
        .oneFailed:               "s  r  r  s  w  r  r  r  r  r  r  r  s  w  w",
        .oneDone:                 "r  r  r  r  r  r  r  r  r  s  s  w  s  w  w",
        .noneFailed:              "r  u  u  r  w  u  u  u  u  u  u  u  r  w  w",
        .noneFailedMinOneSuccess: "r  u  u  r  w  u  u  u  u  u  u  u  s  w  w",
        .noneSkipped:             "r  r  r  s  w  r  r  s  w  r  s  w  s  s  w",
        .allSkipped:              "s  s  s  s  s  s  s  s  s  s  s  s  r  w  w",
        .always:                  "r  r  r  r  r  r  r  r  r  r  r  r  r  r  r",
    ]

    @Test("every rule against every upstream mix, as Airflow's table says", arguments: TriggerRule.allCases)
    func exhaustive(_ rule: TriggerRule) throws {
        let row = try #require(Self.table[rule], "no row for \(rule.rawValue)").split(separator: " ").filter { !$0.isEmpty }
        #expect(row.count == Self.mixes.count)
        let code: [Substring: D] = ["r": .run, "w": .wait, "s": .skip, "u": .upstreamFailed]
        for ((name, mix), expected) in zip(Self.mixes, row) {
            #expect(rule.evaluate(mix) == code[expected], "\(rule.rawValue) with \(name)")
        }
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
