public import FlowKit
import Foundation

/// Catalunya air quality: extract the open-data readings, validate them, load them into a
/// staging schema of the `warehouse` PostgreSQL, build marts from SQL models, and check them.
public let catalunyaDataPipeline = Flow(
    "catalunya_data_pipeline",
    description: "Hourly air-quality readings from Catalunya's XVPCA stations → staging → marts → checks",
    owner: "data-platform",
    tags: ["catalunya", "air-quality", "example"],
    schedule: .cron("0 */6 * * *", timeZone: "Europe/Madrid"),
    maxActiveRuns: 1,
    params: [Param("max_rejected_ratio", .number, default: 0.01, description: "fail validation above this share of bad rows")],
    defaults: TaskOptions(retry: RetryPolicy(retries: 2, delay: .seconds(300)), timeout: .seconds(600))
) { f in
    let extract = f.task("extract", description: "copy the open-data extract into the run's folder") { ctx in
        let source = try resource("catalunya/air_quality.csv")
        let dir = try dataDirectory("catalunya", ctx.runId)
        let target = dir.appendingPathComponent("raw.csv")
        try? FileManager.default.removeItem(at: target)
        try FileManager.default.copyItem(at: source, to: target)
        let rows = try String(contentsOf: target, encoding: .utf8).split(separator: "\n").count - 1
        ctx.log("extracted \(rows) readings to \(target.path)")
        return ["rows": .int(rows)]
    }

    let validate = f.task("validate", description: "drop readings with missing, negative or absurd values") { ctx in
        let dir = try dataDirectory("catalunya", ctx.runId)
        let lines = try String(contentsOf: dir.appendingPathComponent("raw.csv"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: true)
        guard let header = lines.first, header.split(separator: ",").count == 9 else {
            throw TaskError("raw.csv: expected a header of 9 columns")
        }
        var valid = [String(header)]
        var rejected = 0
        for (n, line) in lines.dropFirst().enumerated() {
            let cols = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cols.count == 9, let v = Double(cols[8]), v >= 0, v < 2000, !cols[0].isEmpty else {
                rejected += 1
                ctx.log("rejected line \(n + 2): \(line)")
                continue
            }
            valid.append(String(line))
        }
        let ratio = Double(rejected) / Double(max(1, lines.count - 1))
        let limit = ctx.param("max_rejected_ratio")?.doubleValue ?? 0.01
        guard ratio <= limit else {
            throw TaskError("\(rejected) of \(lines.count - 1) readings are invalid (\(ratio) > max_rejected_ratio \(limit))")
        }
        try (valid.joined(separator: "\n") + "\n").write(to: dir.appendingPathComponent("valid.csv"), atomically: true, encoding: .utf8)
        ctx.log("\(valid.count - 1) valid, \(rejected) rejected")
        return ["valid": .int(valid.count - 1), "rejected": .int(rejected)]
    }

    let load = f.task("load_staging", description: "load the valid readings into staging.air_quality_readings") { ctx in
        let file = try dataDirectory("catalunya", ctx.runId).appendingPathComponent("valid.csv")
        _ = try ctx.connection("warehouse")
        let result = try await ctx.run(.script("""
            set -eu
            psql "$FLOWKIT_CONN_WAREHOUSE" -v ON_ERROR_STOP=1 -q <<'SQL'
            create schema if not exists staging;
            create table if not exists staging.air_quality_readings (
                station_code text not null, station_name text not null, municipality text not null,
                latitude double precision, longitude double precision, pollutant text not null,
                unit text not null, measured_at timestamp not null, value double precision not null);
            truncate staging.air_quality_readings;
            SQL
            psql "$FLOWKIT_CONN_WAREHOUSE" -v ON_ERROR_STOP=1 -q \
              -c "\\copy staging.air_quality_readings from stdin with (format csv, header true)" < "$VALID_CSV"
            psql "$FLOWKIT_CONN_WAREHOUSE" -qAt -c "select json_build_object('rows', count(*)) from staging.air_quality_readings"
            """, environment: ["VALID_CSV": file.path]))
        let expected = ctx.upstream["validate"]?["valid"]?.intValue
        if let expected, result?["rows"]?.intValue != expected {
            throw TaskError("staging holds \(result?["rows"]?.compactJSON ?? "?") rows, expected \(expected)")
        }
        return result
    }

    let marts = f.task("build_marts", description: "build marts from the SQL models (dbt when installed)") { ctx in
        _ = try ctx.connection("warehouse")
        return try await ctx.run(ShellCommand(argv: ["/bin/sh", try resource("catalunya/build_marts.sh").path]))
    }

    let checks = f.task("quality_checks", description: "data-quality checks on the marts") { ctx in
        let url = try ctx.connection("warehouse")
        func scalar(_ sql: String) async throws -> Int {
            let v = try await ctx.run(ShellCommand(argv: ["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql]))
            guard let n = v?.intValue else { throw TaskError("check `\(sql)` returned \(v?.compactJSON ?? "nothing")") }
            return n
        }
        let stations = try await scalar("select count(distinct station_code) from marts.daily_station_averages")
        let nullMeans = try await scalar("select count(*) from marts.daily_station_averages where mean_value is null")
        let outOfRange = try await scalar("select count(*) from marts.daily_station_averages where mean_value < 0 or mean_value > 1000")
        let thinDays = try await scalar("select count(*) from marts.daily_station_averages where hours_measured < 18")
        let exceedances = try await scalar("select count(*) from marts.municipality_exceedances where exceeded")
        var failures: [String] = []
        if stations == 0 { failures.append("no stations in marts.daily_station_averages") }
        if nullMeans > 0 { failures.append("\(nullMeans) daily means are null") }
        if outOfRange > 0 { failures.append("\(outOfRange) daily means are outside 0-1000") }
        ctx.log("stations=\(stations) null_means=\(nullMeans) out_of_range=\(outOfRange) thin_days=\(thinDays) exceedances=\(exceedances)")
        if !failures.isEmpty { throw TaskError("data-quality checks failed: " + failures.joined(separator: "; ")) }
        return ["stations": .int(stations), "days_below_coverage": .int(thinDays), "exceedance_days": .int(exceedances), "checks_passed": 3]
    }

    extract --> validate --> load --> marts --> checks
}
