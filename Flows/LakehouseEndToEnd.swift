public import FlowKit
import Foundation

/// A medallion lakehouse in miniature: ingest → bronze_to_silver → two gold builds in parallel
/// → quality → publish, as files under the data directory.
public let lakehouseEndToEnd = Flow(
    "lakehouse_end_to_end",
    description: "bronze → silver → gold files, with a quality gate before publishing",
    owner: "data-platform",
    tags: ["lakehouse", "example"],
    schedule: .daily(timeZone: "Europe/Madrid"),
    params: [Param("orders", .int, default: 500, description: "how many synthetic orders to ingest")],
    defaults: TaskOptions(retry: RetryPolicy(retries: 1, delay: .seconds(30)))
) { f in
    @Sendable func dir(_ ctx: TaskContext, _ layer: String) throws -> URL {
        try dataDirectory("lakehouse", ctx.runId, layer)
    }

    let ingest = f.task("ingest", description: "land raw orders in bronze") { ctx in
        let n = ctx.param("orders")?.intValue ?? 500
        var lines = ["order_id,customer,country,amount_eur,ordered_at"]
        let countries = ["ES", "FR", "PT", "IT", "DE"]
        for i in 0..<n {
            let amount = Double((i * 7919) % 20_000) / 100 + 1
            lines.append("\(i + 1),c\((i * 31) % 97),\(countries[i % countries.count]),\(amount),2026-11-\(String(format: "%02d", i % 28 + 1))")
        }
        lines.append("\(n + 1),,ES,-3,2026-11-02")  // a bad row silver must drop
        try lines.joined(separator: "\n").write(to: try dir(ctx, "bronze").appendingPathComponent("orders.csv"), atomically: true, encoding: .utf8)
        return ["rows": .int(lines.count - 1)]
    }

    let silver = f.task("bronze_to_silver", description: "clean and type the orders") { ctx in
        let text = try String(contentsOf: try dir(ctx, "bronze").appendingPathComponent("orders.csv"), encoding: .utf8)
        var kept: [[String: JSONValue]] = []
        for line in text.split(separator: "\n").dropFirst() {
            let c = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard c.count == 5, !c[1].isEmpty, let amount = Double(c[3]), amount > 0 else { continue }
            kept.append(["order_id": .string(c[0]), "customer": .string(c[1]), "country": .string(c[2]),
                         "amount_eur": .double(amount), "day": .string(c[4])])
        }
        let data = try StableJSON.encode(kept.map(JSONValue.object))
        try data.write(to: try dir(ctx, "silver").appendingPathComponent("orders.json"))
        return ["rows": .int(kept.count)]
    }

    @Sendable func loadSilver(_ ctx: TaskContext) throws -> [JSONValue] {
        let data = try Data(contentsOf: try dir(ctx, "silver").appendingPathComponent("orders.json"))
        return try JSONValue.parse(data).arrayValue ?? []
    }

    let revenue = f.task("gold_revenue_by_country", description: "revenue per country") { ctx in
        var totals: [String: Double] = [:]
        for o in try loadSilver(ctx) { totals[o["country"]?.stringValue ?? "?", default: 0] += o["amount_eur"]?.doubleValue ?? 0 }
        let gold = JSONValue.object(totals.mapValues { .double(($0 * 100).rounded() / 100) })
        try Data(gold.compactJSON.utf8).write(to: try dir(ctx, "gold").appendingPathComponent("revenue_by_country.json"))
        return ["countries": .int(totals.count)]
    }

    let customers = f.task("gold_customer_orders", description: "orders per customer") { ctx in
        var counts: [String: Int] = [:]
        for o in try loadSilver(ctx) { counts[o["customer"]?.stringValue ?? "?", default: 0] += 1 }
        let gold = JSONValue.object(counts.mapValues { .int($0) })
        try Data(gold.compactJSON.utf8).write(to: try dir(ctx, "gold").appendingPathComponent("customer_orders.json"))
        return ["customers": .int(counts.count)]
    }

    let quality = f.task("quality", description: "gold totals must add up to silver") { ctx in
        let silverRows = try loadSilver(ctx).count
        let perCustomer = try JSONValue.parse(Data(contentsOf: try dir(ctx, "gold").appendingPathComponent("customer_orders.json")))
        let total = perCustomer.objectValue?.values.compactMap(\.intValue).reduce(0, +) ?? 0
        guard total == silverRows else { throw TaskError("gold counts \(total) orders, silver has \(silverRows)") }
        return ["orders_checked": .int(total)]
    }

    let publish = f.task("publish", description: "mark the gold layer as the latest") { ctx in
        let latest = try dataDirectory("lakehouse").appendingPathComponent("LATEST")
        try ctx.runId.write(to: latest, atomically: true, encoding: .utf8)
        return ["published": .string(ctx.runId)]
    }

    ingest --> silver --> [revenue, customers] --> quality --> publish
}
