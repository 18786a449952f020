public import FlowKit
import Foundation

/// Catalunya air quality: extract the open-data readings, validate them, load them into a
/// staging schema of the `warehouse` PostgreSQL (SQL, COPY), build marts with dbt, and check them (SQL).
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

    let load = f.sql("load_staging", connection: "warehouse", sql: """
        CREATE SCHEMA IF NOT EXISTS staging;
        CREATE TABLE IF NOT EXISTS staging.air_quality_readings (
            station_code text NOT NULL, station_name text NOT NULL, municipality text NOT NULL,
            latitude double precision, longitude double precision, pollutant text NOT NULL,
            unit text NOT NULL, measured_at timestamp NOT NULL, value double precision NOT NULL);
        TRUNCATE staging.air_quality_readings;
        """,
        // validate wrote it under the worker's data directory (FLOWKIT_DATA_DIR).
        copyFrom: .file("catalunya/{{ run_id }}/valid.csv"), into: "staging.air_quality_readings", format: .csv(header: true),
        afterCopy: "SELECT count(*) AS rows FROM staging.air_quality_readings", returning: .firstRow,
        description: "load the valid readings into staging.air_quality_readings (COPY, one transaction)")

    let marts = f.dbt("build_marts", project: "catalunya/dbt", resources: Bundle.module.url(forResource: "Resources", withExtension: nil),
                      command: .build, description: "dbt build: the marts models, then their tests (not null, ranges, unique keys)",
                      connections: ["warehouse"])

    let checks = f.sql("quality_checks", connection: "warehouse", sql: """
        -- Fails the task, naming every failed check, before the figures are read.
        DO $checks$
        DECLARE failures text[] := '{}';
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM marts.daily_station_averages) THEN
                failures := failures || 'no stations in marts.daily_station_averages'::text;
            END IF;
            IF (SELECT count(*) FROM marts.daily_station_averages WHERE mean_value IS NULL) > 0 THEN
                failures := failures || 'daily means are null'::text;
            END IF;
            IF (SELECT count(*) FROM marts.daily_station_averages WHERE mean_value < 0 OR mean_value > 1000) > 0 THEN
                failures := failures || 'daily means are outside 0-1000'::text;
            END IF;
            IF cardinality(failures) > 0 THEN
                RAISE EXCEPTION 'data-quality checks failed: %', array_to_string(failures, '; ');
            END IF;
        END $checks$;
        SELECT (SELECT count(DISTINCT station_code) FROM marts.daily_station_averages) AS stations,
               (SELECT count(*) FROM marts.daily_station_averages WHERE hours_measured < 18) AS days_below_coverage,
               (SELECT count(*) FROM marts.municipality_exceedances WHERE exceeded) AS exceedance_days,
               3 AS checks_passed
        """, returning: .firstRow, description: "data-quality checks on the marts")

    extract --> validate --> load --> marts --> checks
}
