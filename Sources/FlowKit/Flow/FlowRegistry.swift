/// The flows a FlowKit binary was built with, validated once when registered.
///
/// ```swift
/// let registry = try FlowRegistry([catalunyaDataPipeline, lakehouseEndToEnd])
/// ```
public struct FlowRegistry: Sendable {
    public let flows: [Flow]
    private let byId: [String: Flow]

    public init(_ flows: [Flow]) throws {
        var seen = Set<String>()
        for f in flows {
            try f.validate()
            guard seen.insert(f.id).inserted else { throw FlowValidationError.duplicateFlow(f.id) }
        }
        // Flows that start other flows name flows of this registry (a typo is caught here, not at 3 a.m.).
        let ids = seen.sorted()
        for f in flows {
            let targets = f.after.map { ("after: upstream flow", $0.flow) }
                + f.tasks.compactMap { t -> (String, String)? in
                    if case .triggerFlow(let spec) = t.body { return ("trigger task `\(t.id)` starts", spec.flow) } else { return nil }
                }
            for (what, target) in targets where !seen.contains(target) {
                let hint = nearest(target, among: ids).map { "; did you mean `\($0)`?" } ?? ""
                throw FlowValidationError.invalidOption(flow: f.id, detail: "\(what) `\(target)`, which is not a registered flow\(hint)")
            }
        }
        self.flows = flows
        self.byId = Dictionary(uniqueKeysWithValues: flows.map { ($0.id, $0) })
    }

    public subscript(id: String) -> Flow? { byId[id] }

    public var ids: [String] { flows.map(\.id).sorted() }

    /// The flow, or an error that lists the known ones.
    public func flow(_ id: String) throws -> Flow {
        if let f = byId[id] { return f }
        throw UnknownFlowError(id: id, known: ids)
    }
}

public struct UnknownFlowError: Error, CustomStringConvertible, Sendable {
    public let id: String
    public let known: [String]
    public init(id: String, known: [String]) { self.id = id; self.known = known }
    public var description: String {
        let hint = nearest(id, among: known).map { "; did you mean `\($0)`?" } ?? ""
        return "unknown flow `\(id)`\(hint) (known: \(known.joined(separator: ", ")))"
    }
}
