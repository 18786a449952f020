import FlowKit
import Foundation

/// The flows this team deploys.
public let myFlows: [Flow] = [dailyReport]

/// Fetches yesterday's numbers, builds two summaries in parallel, then publishes them.
public let dailyReport = Flow(
    "daily_report",
    description: "yesterday's numbers, summarised and published",
    owner: "analytics",
    schedule: .cron("30 7 * * mon-fri", timeZone: "Europe/Madrid"),
    params: [Param("region", .string, default: "catalunya")],
    defaults: TaskOptions(retry: RetryPolicy(retries: 3, delay: .seconds(60), backoff: 2, maxDelay: .seconds(900), jitter: 0.1))
) { f in
    let fetch = f.task("fetch") { ctx in
        ctx.log("fetching \(ctx.param("region")?.stringValue ?? "?") for \(ctx.dataIntervalStart)")
        return ["rows": 1200]
    }
    let byDay = f.task("summary_by_day") { ctx in ["days": .int((ctx.upstream["fetch"]?["rows"]?.intValue ?? 0) / 100)] }
    let byCity = f.shell("summary_by_city", script: "echo \"region=$FLOWKIT_PARAM_REGION\"; echo '{\"cities\": 12}'")
    let publish = f.task("publish", triggerRule: .allSuccess) { ctx in
        ["published": .array([ctx.upstream["summary_by_day"] ?? nil, ctx.upstream["summary_by_city"] ?? nil])]
    }
    fetch --> [byDay, byCity] --> publish
}
