/// The flows a FlowKit binary was built with, validated once when registered.
///
/// ```swift
/// let registry = try FlowRegistry([catalunyaDataPipeline, lakehouseEndToEnd])
/// ```
public struct FlowRegistry: Sendable {
    public let flows: [Flow]
    private let byId: [String: Flow]

    /// Flows that could not be admitted, with why (an invalid cron, a cycle, a trigger of an
    /// unknown flow…): Airflow's import errors. The registry holds the others.
    public let importErrors: [FlowImportError]

    /// Every flow, or the first reason one of them is invalid (`flowctl flows validate`, tests).
    public init(_ flows: [Flow]) throws {
        let r = FlowRegistry(admitting: flows)
        if let first = r.importErrors.first { throw first.error }
        self = r
    }

    /// The valid flows, with the invalid ones set aside as import errors, so that one broken
    /// flow does not stop the others (what schedulers and workers start with). A flow that
    /// starts or follows a flow set aside is set aside too.
    public init(admitting flows: [Flow]) {
        var errors: [FlowImportError] = []
        var valid: [Flow] = []
        var seen = Set<String>()
        for f in flows {
            do {
                try f.validate()
                guard seen.insert(f.id).inserted else { throw FlowValidationError.duplicateFlow(f.id) }
                valid.append(f)
            } catch let e as FlowValidationError {
                errors.append(FlowImportError(flowId: f.id, error: e))
            } catch {
                errors.append(FlowImportError(flowId: f.id, error: .invalidOption(flow: f.id, detail: "\(error)")))
            }
        }
        // Flows that start other flows name flows of this registry (a typo is caught here, not at 3 a.m.).
        let all = Set(flows.map(\.id)).sorted()
        var changed = true
        while changed {
            changed = false
            let ids = Set(valid.map(\.id))
            for f in valid {
                let targets = f.after.map { ("after: upstream flow", $0.flow) }
                    + f.tasks.compactMap { t -> (String, String)? in
                        if case .triggerFlow(let spec) = t.body { return ("trigger task `\(t.id)` starts", spec.flow) } else { return nil }
                    }
                guard let (what, target) = targets.first(where: { !ids.contains($0.1) }) else { continue }
                let detail: String
                if all.contains(target) {
                    detail = "\(what) `\(target)`, which could not be registered (see its own error)"
                } else {
                    let hint = nearest(target, among: all).map { "; did you mean `\($0)`?" } ?? ""
                    detail = "\(what) `\(target)`, which is not a registered flow\(hint)"
                }
                errors.append(FlowImportError(flowId: f.id, error: .invalidOption(flow: f.id, detail: detail)))
                valid.removeAll { $0.id == f.id }
                changed = true
                break
            }
        }
        self.flows = valid
        self.byId = Dictionary(valid.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.importErrors = errors
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

/// A flow that could not be registered, and why.
public struct FlowImportError: Sendable, Equatable, CustomStringConvertible {
    public let flowId: String
    public let error: FlowValidationError
    public init(flowId: String, error: FlowValidationError) { self.flowId = flowId; self.error = error }
    public var message: String { error.description }
    public var description: String { message }
}
