public import Foundation
public import ObjectStorage

/// What an S3 task does (`FlowBuilder.s3`). Keys and paths may hold the template names of SQL
/// tasks (`{{ ds }}`, `{{ params.key }}`, …); a key may also be a whole `s3://bucket/key` URI
/// for another bucket than the task's. Local paths are absolute or relative to the worker's data
/// directory (`FLOWKIT_DATA_DIR`, default `.flowkit/data`).
public struct S3Operation: Sendable, Codable, Hashable {
    /// `upload`, `download`, `copy`, `move`, `delete` or `list`.
    public var action: String
    public var key: String?
    public var from: String?
    public var to: String?
    public var prefix: String?
    public var path: String?
    public var contentType: String?

    init(_ action: String) { self.action = action }

    /// The local file at `path` to `key`; in parts above 16 MiB. Result: `{"bucket", "key", "bytes", "etag", "parts"}`.
    public static func upload(from path: String, to key: String, contentType: String? = nil) -> S3Operation {
        var o = S3Operation("upload"); o.path = path; o.key = key; o.contentType = contentType; return o
    }

    /// `key` streamed to the local file at `path`. Result: `{"bucket", "key", "path", "bytes", "etag"}`.
    public static func download(key: String, to path: String) -> S3Operation {
        var o = S3Operation("download"); o.key = key; o.path = path; return o
    }

    /// A server-side copy (no bytes pass through the worker). Result: `{"from", "to", "etag"}`.
    public static func copy(from: String, to: String) -> S3Operation {
        var o = S3Operation("copy"); o.from = from; o.to = to; return o
    }

    /// A copy, then the source deleted (S3 has no rename). Result as `copy`, with `"deleted"`.
    public static func move(from: String, to: String) -> S3Operation {
        var o = S3Operation("move"); o.from = from; o.to = to; return o
    }

    /// Every object under `prefix` deleted. Result: `{"bucket", "deleted": [keys…], "count"}`.
    public static func delete(prefix: String) -> S3Operation {
        var o = S3Operation("delete"); o.prefix = prefix; return o
    }

    /// One object deleted (none there is no error, as in S3). Result: `{"bucket", "deleted": [key], "count"}`.
    public static func delete(key: String) -> S3Operation {
        var o = S3Operation("delete"); o.key = key; return o
    }

    /// The objects under `prefix` (a glob works too: `landing/*.csv`). Result: `{"bucket",
    /// "keys": [{"key", "size", "etag", "lastModified"}…], "count", "bytes", "truncated"}`.
    public static func list(prefix: String) -> S3Operation {
        var o = S3Operation("list"); o.prefix = prefix; return o
    }

    /// Why this operation cannot run, or nil.
    var problem: String? {
        func need(_ v: String?, _ what: String) -> String? { (v ?? "").isEmpty ? "`\(action)` needs \(what)" : nil }
        switch action {
        case "upload": return need(path, "a local path (from:)") ?? need(key, "a key (to:)")
        case "download": return need(key, "a key") ?? need(path, "a local path (to:)")
        case "copy", "move": return need(from, "a source key (from:)") ?? need(to, "a target key (to:)")
        case "delete": return key == nil && prefix == nil ? "`delete` needs a key or a prefix" : (prefix == "" ? "`delete(prefix: \"\")` would empty the bucket: name a prefix" : nil)
        case "list": return prefix == nil ? "`list` needs a prefix (\"\" for the whole bucket)" : nil
        default: return "unknown S3 action `\(action)`"
        }
    }
}

/// An S3 task: an operation on a bucket of a named S3 connection.
public struct S3TaskSpec: Sendable, Codable, Hashable {
    public var connection: String
    public var bucket: String
    public var operation: S3Operation

    public init(connection: String, bucket: String, operation: S3Operation) {
        self.connection = connection; self.bucket = bucket; self.operation = operation
    }

    /// Why the task cannot run (a flow's validation refuses it), or nil.
    public func problem(task: String) -> String? {
        if connection.isEmpty { return "task `\(task)`: an S3 task names its connection" }
        if bucket.isEmpty { return "task `\(task)`: an S3 task names its bucket" }
        return operation.problem.map { "task `\(task)`: \($0)" }
    }
}

extension FlowBuilder {
    /// An S3 task (Airflow's `S3CreateObjectOperator`, `S3CopyObjectOperator`, …, in one): moves
    /// objects between the worker's disk and the bucket `bucket` of connection `connection`
    /// (`FLOWKIT_CONN_<NAME>`, an `s3://KEY:SECRET@host:port/?region=…` URL), streaming both ways.
    ///
    ///     f.s3("archive", connection: "lake", bucket: "example",
    ///          .move(from: "{{ params.key }}", to: "archive/{{ params.key }}"))
    @discardableResult
    public func s3(_ id: String, connection: String, bucket: String, _ operation: S3Operation, after upstream: [TaskRef] = [],
                   description: String = "", retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil,
                   priority: Int? = nil, triggerRule: TriggerRule? = nil, pool: String? = nil, outlets: [String]? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        var options = TaskOptions(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule, pool: pool)
        options.outlets = outlets
        return add(FlowTask(id: id, body: .s3(S3TaskSpec(connection: connection, bucket: bucket, operation: operation)),
                            upstream: upstream.map(\.id), options: options, description: description))
    }
}

extension TaskContext {
    /// A client for the S3 connection `name` (`FLOWKIT_CONN_<NAME>`), for Swift tasks:
    ///
    ///     let s3 = try ctx.s3("lake")
    ///     try await s3.download(bucket: "example", key: "landing/numbers.csv", to: path)
    public func s3(_ name: String) throws -> S3Client {
        do {
            return try S3Client(url: try connection(name), name: name)
        } catch let e as S3Connection.Invalid {
            throw TaskError(e.description)
        }
    }

    /// `text` with the template names of SQL tasks replaced by this try's values (`{{ ds }}`,
    /// `{{ ds_nodash }}`, `{{ logical_date }}`, `{{ data_interval_start }}`,
    /// `{{ data_interval_end }}`, `{{ run_id }}`, `{{ params.NAME }}`).
    public func render(_ text: String) throws -> String {
        guard text.contains("{{") else { return text }
        let values = SQLScript.values(runId: runId, logicalDate: logicalDate, dataIntervalStart: dataIntervalStart,
                                      dataIntervalEnd: dataIntervalEnd, params: params)
        return try SQLScript.render(text, values: values, params: Array(params.keys))
    }

    /// A local path: absolute, or under the worker's data directory (`FLOWKIT_DATA_DIR`, default
    /// `.flowkit/data`).
    public func dataPath(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        let base = ProcessInfo.processInfo.environment["FLOWKIT_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? FileManager.default.currentDirectoryPath + "/.flowkit/data"
        return base + "/" + path
    }
}

/// Runs S3 tasks; a worker calls it, and so can anything that runs a flow's tasks in-process.
public enum S3TaskRunner {
    /// Keys a result lists at most (it stays within `maxResultBytes`); the count is always whole.
    public static let maxListedKeys = 200

    public static func run(_ spec: S3TaskSpec, _ ctx: TaskContext) async throws -> JSONValue {
        let s3 = try ctx.s3(spec.connection)
        let op = spec.operation
        /// A rendered key, and its bucket: the task's, or the one of an `s3://bucket/key` URI.
        func locate(_ raw: String?) throws -> (bucket: String, key: String) {
            let key = try ctx.render(raw ?? "")
            if key.hasPrefix("s3://") {
                let rest = key.dropFirst(5)
                guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex else {
                    throw TaskError("`\(key)` is not an s3://bucket/key URI")
                }
                return (String(rest[..<slash]), String(rest[rest.index(after: slash)...]))
            }
            return (spec.bucket, key)
        }
        func uri(_ l: (bucket: String, key: String)) -> String { "s3://\(l.bucket)/\(l.key)" }
        switch op.action {
        case "upload":
            let path = ctx.dataPath(try ctx.render(op.path ?? ""))
            let target = try locate(op.key)
            ctx.log("uploading \(path) to \(uri(target)) on connection `\(spec.connection)`")
            let t = try await s3.upload(bucket: target.bucket, key: target.key, from: path, contentType: op.contentType)
            ctx.log("uploaded \(t.bytes) bytes" + (t.parts > 0 ? " in \(t.parts) parts" : "") + ", ETag \(t.etag)")
            return ["bucket": .string(t.bucket), "key": .string(t.key), "bytes": .int(t.bytes), "etag": .string(t.etag), "parts": .int(t.parts)]
        case "download":
            let source = try locate(op.key)
            let path = ctx.dataPath(try ctx.render(op.path ?? ""))
            ctx.log("downloading \(uri(source)) to \(path) on connection `\(spec.connection)`")
            let t = try await s3.download(bucket: source.bucket, key: source.key, to: path)
            ctx.log("downloaded \(t.bytes) bytes, ETag \(t.etag)")
            return ["bucket": .string(t.bucket), "key": .string(t.key), "path": .string(path), "bytes": .int(t.bytes), "etag": .string(t.etag)]
        case "copy", "move":
            let from = try locate(op.from), to = try locate(op.to)
            ctx.log("\(op.action == "move" ? "moving" : "copying") \(uri(from)) to \(uri(to)) on connection `\(spec.connection)`")
            let etag = try await s3.copy(bucket: to.bucket, from: from.key, to: to.key, sourceBucket: from.bucket)
            var out: [String: JSONValue] = ["from": .string(uri(from)), "to": .string(uri(to)), "etag": .string(etag)]
            if op.action == "move" {
                try await s3.delete(bucket: from.bucket, key: from.key)
                ctx.log("deleted \(uri(from))")
                out["deleted"] = .string(uri(from))
            }
            return .object(out)
        case "delete":
            if op.key != nil {
                let target = try locate(op.key)
                try await s3.delete(bucket: target.bucket, key: target.key)
                ctx.log("deleted \(uri(target))")
                return ["bucket": .string(target.bucket), "deleted": [.string(target.key)], "count": 1]
            }
            let target = try locate(op.prefix)
            guard !target.key.isEmpty else { throw TaskError("delete(prefix:) rendered an empty prefix: it would empty s3://\(target.bucket)") }
            let keys = try await s3.delete(bucket: target.bucket, prefix: target.key)
            ctx.log("deleted \(keys.count) object\(keys.count == 1 ? "" : "s") under \(uri(target))")
            return ["bucket": .string(target.bucket), "deleted": .array(keys.prefix(maxListedKeys).map(JSONValue.string)),
                    "count": .int(keys.count), "truncated": .bool(keys.count > maxListedKeys)]
        case "list":
            let target = try locate(op.prefix)
            let pattern = S3KeyPattern(target.key)
            let listing = try await s3.list(bucket: target.bucket, prefix: pattern.kind == .glob ? pattern.listPrefix : target.key)
            let found = pattern.kind == .glob ? listing.objects.filter { pattern.matches($0.key) } : listing.objects
            ctx.log("\(found.count) object\(found.count == 1 ? "" : "s") under \(uri(target))")
            return ["bucket": .string(target.bucket), "keys": .array(found.prefix(maxListedKeys).map(describe)), "count": .int(found.count),
                    "bytes": .int(found.reduce(0) { $0 + $1.size }), "truncated": .bool(found.count > maxListedKeys)]
        default:
            throw TaskError("unknown S3 action `\(op.action)`")
        }
    }

    /// `{"key", "size", "etag", "lastModified"}`.
    public static func describe(_ o: S3Object) -> JSONValue {
        ["key": .string(o.key), "size": .int(o.size), "etag": .string(o.etag), "lastModified": .string(Instant.format(o.lastModified))]
    }
}
