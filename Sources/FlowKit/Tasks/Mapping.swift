/// What a mapped task expands over (Airflow's `expand`, Prefect's `.map`): the JSON list an
/// upstream task returned, or a list param of the run.
public enum MapSource: Sendable, Hashable, Codable {
    /// The list returned by this upstream task (a direct upstream task of the mapped one).
    case result(of: String)
    /// The list in this param of the run.
    case param(String)

    private enum CodingKeys: String, CodingKey { case task, param }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let t = try c.decodeIfPresent(String.self, forKey: .task) {
            self = .result(of: t)
        } else {
            self = .param(try c.decode(String.self, forKey: .param))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .result(let t): try c.encode(t, forKey: .task)
        case .param(let p): try c.encode(p, forKey: .param)
        }
    }

    /// How messages and errors name it: "the result of `make_list`", "param `items`".
    public var phrase: String {
        switch self {
        case .result(let t): return "the result of `\(t)`"
        case .param(let p): return "param `\(p)`"
        }
    }
}

/// How many instances a mapped task may expand to unless it sets `maxItems`.
public let defaultMaxMapLength = 10_000
/// The most `maxItems` may be: every instance is a row, a message and a result.
public let maxMapLengthLimit = 100_000

/// A mapped task's instances are addressed as `task[index]`, index from 0 (Airflow's map index).
public enum MappedInstance {
    public static func id(_ task: String, index: Int) -> String { "\(task)[\(index)]" }

    /// `("double", 3)` for `double[3]`; nil for a plain task id.
    public static func parse(_ id: String) -> (task: String, index: Int)? {
        guard id.hasSuffix("]"), let open = id.lastIndex(of: "["), open > id.startIndex else { return nil }
        let digits = id[id.index(after: open)..<id.index(before: id.endIndex)]
        guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy(\.isASCII), let n = Int(digits), n >= 0,
              String(n) == digits else { return nil }
        return (String(id[..<open]), n)
    }

    public static func isInstance(_ id: String) -> Bool { parse(id) != nil }
}

/// The source of a mapped task in `FlowBuilder.map`: `.result(of: makeList)` or `.param("items")`.
public struct MapInput {
    let source: MapSource
    let ref: TaskRef?

    /// The JSON list this task returns; the mapped task runs after it.
    public static func result(of task: TaskRef) -> MapInput { MapInput(source: .result(of: task.id), ref: task) }
    /// The list in this param (declare it `.array`).
    public static func param(_ name: String) -> MapInput { MapInput(source: .param(name), ref: nil) }
}

extension FlowBuilder {
    /// A mapped Swift task: one instance per element of the list, each with its own tries,
    /// retries, logs and result, addressed as `id[index]`. The closure gets the element;
    /// `ctx.mapIndex` is its index. A downstream task receives the instances' results as one
    /// list in index order (`ctx.upstream[id]`). An empty list makes the task `skipped`; a list
    /// longer than `maxItems` fails it, naming the count.
    ///
    /// ```swift
    /// let makeList = f.task("make_list") { ctx in ctx.param("items") }
    /// let double = f.map("double", over: .result(of: makeList)) { _, x in .int(2 * (x.intValue ?? 0)) }
    /// double --> f.task("total") { ctx in ... ctx.upstream["double"] ... }
    /// ```
    @discardableResult
    public func map(_ id: String, over input: MapInput, maxItems: Int = defaultMaxMapLength, after upstream: [TaskRef] = [],
                    description: String = "", retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil,
                    priority: Int? = nil, triggerRule: TriggerRule? = nil, pool: String? = nil, poolSlots: Int? = nil,
                    maxActiveTisPerFlow: Int? = nil, fileID: String = #fileID, line: Int = #line,
                    _ body: @escaping @Sendable (TaskContext, JSONValue) async throws -> JSONValue?) -> TaskRef {
        declaring(fileID, line)
        return mapped(FlowTask(id: id, body: .closure { ctx in try await body(ctx, ctx.mapItem ?? .null) },
                        upstream: upstream.map(\.id),
                        options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule,
                                       pool: pool, poolSlots: poolSlots, maxActiveTisPerFlow: maxActiveTisPerFlow),
                        description: description), input, maxItems)
    }

    /// A mapped shell task: one process per element, which it finds in `FLOWKIT_MAP_ITEM`
    /// (JSON, or the bare text of a string) and `FLOWKIT_MAP_INDEX`.
    @discardableResult
    public func mapShell(_ id: String, over input: MapInput, script: String, maxItems: Int = defaultMaxMapLength,
                         environment: [String: String] = [:], after upstream: [TaskRef] = [], description: String = "",
                         retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil,
                         triggerRule: TriggerRule? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        return mapped(FlowTask(id: id, body: .shell(.script(script, environment: environment)), upstream: upstream.map(\.id),
                        options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule),
                        description: description), input, maxItems)
    }

    private func mapped(_ task: FlowTask, _ input: MapInput, _ maxItems: Int) -> TaskRef {
        var task = task
        task.mapOver = input.source
        task.maxMapLength = maxItems
        if let source = input.ref, !task.upstream.contains(source.id) { task.upstream.insert(source.id, at: 0) }
        return add(task)
    }
}
