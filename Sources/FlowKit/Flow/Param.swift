/// A flow parameter: a name, a type and a default, which a trigger's conf may override.
public struct Param: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable { case string, int, number, bool, object, array }
    public var name: String
    public var kind: Kind
    public var defaultValue: JSONValue?
    public var description: String

    public init(_ name: String, _ kind: Kind, default defaultValue: JSONValue? = nil, description: String = "") {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.description = description
    }

    public func accepts(_ v: JSONValue) -> Bool {
        switch (kind, v) {
        case (_, .null): return true
        case (.string, .string), (.int, .int), (.number, .int), (.number, .double), (.bool, .bool),
             (.object, .object), (.array, .array): return true
        case (.int, .double(let d)): return d == d.rounded()
        default: return false
        }
    }
}

/// A trigger's conf that does not fit the flow's params.
public struct ConfError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

extension Param {
    /// The params a run sees: defaults, overridden by `conf`. Unknown keys and wrong types are errors.
    public static func resolve(_ params: [Param], flowId: String, conf: [String: JSONValue]) throws -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for p in params { if let d = p.defaultValue { out[p.name] = d } }
        let known = Dictionary(uniqueKeysWithValues: params.map { ($0.name, $0) })
        for (k, v) in conf.sorted(by: { $0.key < $1.key }) {
            guard let p = known[k] else {
                let names = params.map(\.name).sorted()
                let hint = names.isEmpty ? "it takes no params" : "known params: \(names.joined(separator: ", "))"
                throw ConfError(message: "flow `\(flowId)` has no param `\(k)`; \(hint)")
            }
            guard p.accepts(v) else {
                throw ConfError(message: "flow `\(flowId)`: param `\(k)` must be of type \(p.kind.rawValue), got \(v.compactJSON)")
            }
            out[k] = v
        }
        return out
    }
}

extension Flow {
    public func resolveParams(conf: [String: JSONValue]) throws -> [String: JSONValue] {
        try Param.resolve(params, flowId: id, conf: conf)
    }
}

extension FlowDefinition {
    public func resolveParams(conf: [String: JSONValue]) throws -> [String: JSONValue] {
        try Param.resolve(params, flowId: id, conf: conf)
    }
}
