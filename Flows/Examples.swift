public import FlowKit
import Foundation

/// Fails its first try and succeeds on the second: shows retries in demos and fault tests.
/// `conf.fail_tries` (default 1) sets how many tries fail; 3 or more fails the run.
public let exampleRetry = Flow(
    "example_retry",
    description: "one task that fails on try 1 and succeeds on try 2",
    tags: ["example"],
    params: [Param("fail_tries", .int, default: 1, description: "how many tries fail before one succeeds")],
    defaults: TaskOptions(retry: RetryPolicy(retries: 2, delay: .seconds(1)))
) { f in
    f.task("flaky") { ctx in
        let failTries = ctx.param("fail_tries")?.intValue ?? 1
        if ctx.tryNumber <= failTries { throw TaskError("failing on purpose on try \(ctx.tryNumber) (fail_tries = \(failTries))") }
        ctx.log("succeeded on try \(ctx.tryNumber)")
        return ["try": .int(ctx.tryNumber)]
    }
}

/// One task that sleeps for `conf.seconds` (default 10): for cancel, timeout and fault tests.
public let exampleSleep = Flow(
    "example_sleep",
    description: "sleeps for conf.seconds",
    tags: ["example"],
    params: [Param("seconds", .number, default: 10)]
) { f in
    f.task("sleep") { ctx in
        let seconds = ctx.param("seconds")?.doubleValue ?? 10
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            try ctx.checkCancellation()
            try await Task.sleep(for: .milliseconds(min(100, max(1, Int(deadline.timeIntervalSinceNow * 1000)))))
        }
        ctx.log("slept \(seconds)s")
        return ["slept": .double(seconds)]
    }
}

/// One no-op task every hour, no catchup: the flow `make stress` backfills, and the shortest
/// example of a cron schedule.
public let exampleHourly = Flow(
    "example_hourly",
    description: "a no-op task every hour (backfill and schedule demos)",
    tags: ["example"],
    schedule: .cron("0 * * * *")
) { f in
    f.task("tick") { ctx in ["logicalDate": .string(Instant.format(ctx.logicalDate))] }
}

/// A branch chosen at run time: `choose` follows `left` or `right` by `conf.pick`; the other is
/// skipped, and `join` (none_failed_min_one_success) runs after whichever ran. A `pick` that is
/// neither fails `choose`, naming the valid ones.
public let exampleBranch = Flow(
    "example_branch",
    description: "follows the branch named by conf.pick (left or right), then joins",
    tags: ["example"],
    params: [Param("pick", .string, default: "left", description: "the branch to follow: left or right")]
) { f in
    let choose = f.branch("choose") { ctx in [ctx.param("pick")?.stringValue ?? "left"] }
    let left = f.task("left") { _ in ["side": "left"] }
    let right = f.task("right") { _ in ["side": "right"] }
    let join = f.task("join", triggerRule: .noneFailedMinOneSuccess) { ctx in
        ["followed": .array(ctx.upstream.keys.sorted().map(JSONValue.string))]
    }
    choose --> [left, right] --> join
}
