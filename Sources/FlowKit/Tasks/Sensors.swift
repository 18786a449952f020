import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What one poke of a sensor found.
public enum SensorAnswer: Sendable, Equatable {
    /// The condition holds: the sensor succeeds with this result.
    case ready(JSONValue?)
    /// Not yet, and why (the reason goes to the sensor's log): the worker slot is freed and the
    /// scheduler pokes again after the sensor's `pokeInterval`, until its timeout.
    case notYet(String)
}

/// A sensor's schedule: how often it pokes, how long it may wait in all (from its first poke),
/// and whether running out of time fails it or skips it (`softFail`).
public struct SensorSpec: Sendable, Hashable, Codable {
    public var pokeIntervalSeconds: Double
    public var timeoutSeconds: Double
    /// A param whose value (seconds) replaces `timeoutSeconds` for a run, when set.
    public var timeoutParam: String?
    public var softFail: Bool
    /// For `Sensors.externalRun`: the flow whose run for the same logical date it waits for.
    /// The scheduler looks that run up when it sends each poke (`TaskContext.externalRun`).
    public var externalFlow: String?

    public init(pokeInterval: Duration, timeout: Duration, timeoutParam: String? = nil, softFail: Bool = false, externalFlow: String? = nil) {
        pokeIntervalSeconds = pokeInterval.seconds
        timeoutSeconds = timeout.seconds
        self.timeoutParam = timeoutParam
        self.softFail = softFail
        self.externalFlow = externalFlow
    }
}

/// A sensor's check, given a poke's context.
public typealias SensorCheck = @Sendable (TaskContext) async throws -> SensorAnswer

/// The built-in sensors, for `FlowBuilder.sensor(_:check:)`.
public enum Sensors {
    /// A file exists under the data directory (`FLOWKIT_DATA_DIR` on the worker); `path` is
    /// relative to it and may not leave it. Ready with `{"path", "size"}`.
    public static func file(_ path: @escaping @Sendable (TaskContext) -> String) -> SensorCheck {
        { ctx in
            let base = URL(fileURLWithPath: ProcessInfo.processInfo.environment["FLOWKIT_DATA_DIR"] ?? ".flowkit/data").standardizedFileURL
            let relative = path(ctx)
            let url = base.appendingPathComponent(relative).standardizedFileURL
            guard !relative.hasPrefix("/"), url.path.hasPrefix(base.path + "/") else {
                throw TaskError("file sensor: `\(relative)` is not a path under the data directory \(base.path)")
            }
            guard let attrs = try? FileManager.default.attributesOfItem(atPath: url.path),
                  (attrs[.type] as? FileAttributeType) != .typeDirectory else {
                return .notYet("\(url.path) does not exist yet")
            }
            let size = (attrs[.size] as? NSNumber)?.intValue ?? 0
            return .ready(["path": .string(url.path), "size": .int(size)])
        }
    }

    /// A SQL query on a named connection (`FLOWKIT_CONN_<NAME>`) returns at least one row.
    /// Ready with the first row's columns as text.
    public static func sql(connection: String, query: String) -> SensorCheck {
        { ctx in
            guard let runner = ctx.sqlRunner else {
                throw TaskError("SQL sensor: this context cannot run SQL (a FlowKit worker gives every task a runner)")
            }
            let rows = try await runner.rows(connection: try ctx.connection(connection), sql: query, limit: 1)
            guard let first = rows.first else { return .notYet("`\(query)` on `\(connection)` returned no row") }
            return .ready(.object(first.mapValues { $0.map(JSONValue.string) ?? .null }))
        }
    }

    /// Objects exist in an S3 bucket (Airflow's `S3KeySensor`, deferrable): `key` is a literal key,
    /// a prefix (ending in `/`) or a glob (`landing/{{ ds }}/*.csv`; see `S3KeyPattern`), with the
    /// template names of SQL tasks. Only objects of at least `minSize` bytes count; with
    /// `stableFor`, the newest of them must have been unchanged that long by the server's clock
    /// (so a file still arriving in several objects, or being rewritten, is not taken early).
    /// Ready with `{"bucket", "pattern", "keys": [{"key", "size", "etag", "lastModified"}…], "count"}`.
    public static func s3Key(connection: String, bucket: String, key: String, minSize: Int = 0, stableFor: Duration? = nil) -> SensorCheck {
        { ctx in
            let s3 = try ctx.s3(connection)
            let rendered = try ctx.render(key)
            let pattern = S3KeyPattern(rendered)
            let listing = try await s3.list(bucket: bucket, prefix: pattern.kind == .glob ? pattern.listPrefix : rendered, limit: 100_000)
            let matched = listing.objects.filter { pattern.matches($0.key) }
            let place = "s3://\(bucket)/\(rendered)"
            guard !matched.isEmpty else { return .notYet("no object matches \(place) yet") }
            let large = matched.filter { $0.size >= minSize }
            guard !large.isEmpty else {
                return .notYet("\(matched.count) object\(matched.count == 1 ? "" : "s") match \(place), none of \(minSize) bytes or more yet (the largest has \(matched.map(\.size).max() ?? 0))")
            }
            if let stableFor {
                let now = listing.serverDate ?? Date()
                let newest = large.max { $0.lastModified < $1.lastModified }!
                let age = now.timeIntervalSince(newest.lastModified)
                if age < stableFor.seconds {
                    return .notYet("\(newest.key) changed \(Int(age.rounded()))s ago; waiting until what matches \(place) has been unchanged for \(stableFor.seconds)s")
                }
            }
            return .ready(["bucket": .string(bucket), "pattern": .string(rendered), "count": .int(large.count),
                           "keys": .array(large.prefix(S3TaskRunner.maxListedKeys).map(S3TaskRunner.describe))])
        }
    }

    /// An HTTP(S) URL answers 2xx to a GET. Ready with `{"status"}`.
    public static func http(_ url: String, timeout: Double = 10) -> SensorCheck {
        { _ in
            guard let u = URL(string: url), ["http", "https"].contains(u.scheme ?? "") else {
                throw TaskError("HTTP sensor: `\(url)` is not an http(s) URL")
            }
            var req = URLRequest(url: u, timeoutInterval: timeout)
            req.httpMethod = "GET"
            do {
                let (_, response) = try await URLSession.shared.data(for: req)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                return (200..<300).contains(status) ? .ready(["status": .int(status)]) : .notYet("\(url) answered \(status)")
            } catch {
                return .notYet("\(url) did not answer: \(error.localizedDescription)")
            }
        }
    }

    /// The run of `TaskContext.externalRun`'s flow for this run's logical date succeeded (like
    /// Airflow's `ExternalTaskSensor`); a failed or cancelled one fails the sensor. Use it with
    /// `FlowBuilder.sensor(_:waitingFor:)`, which tells the scheduler which flow to look up.
    public static let externalRun: SensorCheck = { ctx in
        guard let ext = ctx.externalRun, let flow = ext["flowId"]?.stringValue else {
            throw TaskError("external run sensor: the scheduler sent no external run state (declare it with f.sensor(_:waitingFor:))")
        }
        let date = Instant.format(ctx.logicalDate)
        guard let state = ext["state"]?.stringValue else { return .notYet("flow `\(flow)` has no run for logical date \(date) yet") }
        switch state {
        case "success": return .ready(ext)
        case "failed", "cancelled":
            throw TaskError("the run of flow `\(flow)` for logical date \(date) (\(ext["runId"]?.stringValue ?? "?")) ended \(state)")
        default: return .notYet("the run of flow `\(flow)` for logical date \(date) is \(state)")
        }
    }
}

/// A sensor's check, for `FlowBuilder.sensor(_:_:)`: `f.sensor("wait", .s3Key(connection: "lake", bucket: "example", key: "landing/*.csv"))`.
public struct Sensor: Sendable {
    public let check: SensorCheck
    /// The connections the check uses (sent from the store like a SQL task's).
    public let connections: [String]
    public init(_ check: @escaping SensorCheck, connections: [String] = []) { self.check = check; self.connections = connections }

    /// `Sensors.s3Key`.
    public static func s3Key(connection: String, bucket: String, key: String, minSize: Int = 0, stableFor: Duration? = nil) -> Sensor {
        Sensor(Sensors.s3Key(connection: connection, bucket: bucket, key: key, minSize: minSize, stableFor: stableFor), connections: [connection])
    }
    /// `Sensors.sql`.
    public static func sql(connection: String, query: String) -> Sensor {
        Sensor(Sensors.sql(connection: connection, query: query), connections: [connection])
    }
    /// `Sensors.http`.
    public static func http(_ url: String, timeout: Double = 10) -> Sensor { Sensor(Sensors.http(url, timeout: timeout)) }
    /// `Sensors.file`.
    public static func file(_ path: @escaping @Sendable (TaskContext) -> String) -> Sensor { Sensor(Sensors.file(path)) }
}

/// Runs SQL for a task (the SQL sensor); a FlowKit worker provides one backed by libpq.
public protocol SQLRunner: Sendable {
    /// Up to `limit` rows of `sql` on the database at `connection` (a libpq URL), as text.
    func rows(connection: String, sql: String, limit: Int) async throws -> [[String: String?]]
}

extension FlowBuilder {
    /// A sensor (Airflow's reschedule mode, deferrable): `check` pokes; `.notYet` frees the
    /// worker slot and the scheduler queues the next poke after `pokeInterval` (its retry
    /// timer: durable across restarts); once `timeout` has passed since the first poke, the
    /// sensor fails, or is skipped with `softFail`. Every poke writes to the same try's log.
    /// `timeoutParam` names a param (seconds) that overrides `timeout` per run.
    @discardableResult
    public func sensor(_ id: String, pokeInterval: Duration = .seconds(30), timeout: Duration = .seconds(3600), timeoutParam: String? = nil,
                       softFail: Bool = false, after upstream: [TaskRef] = [], description: String = "", queue: String? = nil,
                       priority: Int? = nil, triggerRule: TriggerRule? = nil, fileID: String = #fileID, line: Int = #line, check: @escaping SensorCheck) -> TaskRef {
        declaring(fileID, line)
        return add(FlowTask(id: id, body: .sensor(SensorSpec(pokeInterval: pokeInterval, timeout: timeout, timeoutParam: timeoutParam,
                                                      softFail: softFail), check),
                     upstream: upstream.map(\.id), options: .init(queue: queue, priority: priority, triggerRule: triggerRule),
                     description: description))
    }

    /// A sensor with a built-in check: `f.sensor("wait_for_file", .s3Key(connection: "lake", bucket: "example", key: "landing/*.csv"))`.
    @discardableResult
    public func sensor(_ id: String, _ sensor: Sensor, pokeInterval: Duration = .seconds(30), timeout: Duration = .seconds(3600),
                       timeoutParam: String? = nil, softFail: Bool = false, after upstream: [TaskRef] = [], description: String = "",
                       queue: String? = nil, priority: Int? = nil, triggerRule: TriggerRule? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        return self.sensor(id, pokeInterval: pokeInterval, timeout: timeout, timeoutParam: timeoutParam, softFail: softFail, after: upstream,
                    description: description, queue: queue, priority: priority, triggerRule: triggerRule, check: sensor.check)
            .needs(connections: sensor.connections)
    }

    /// A sensor that waits for the run of `flow` with this run's logical date to succeed.
    @discardableResult
    public func sensor(_ id: String, waitingFor flow: String, pokeInterval: Duration = .seconds(30), timeout: Duration = .seconds(3600),
                       softFail: Bool = false, after upstream: [TaskRef] = [], queue: String? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        return add(FlowTask(id: id, body: .sensor(SensorSpec(pokeInterval: pokeInterval, timeout: timeout, softFail: softFail, externalFlow: flow),
                                           Sensors.externalRun),
                     upstream: upstream.map(\.id), options: .init(queue: queue)))
    }
}
