public import FlowJSON
import Foundation

// The broker's hot path — every worker event and every task message's FlowKit part — is
// written with `JSONWriter` and read with `JSONParser`, not through `Codable`: JSONEncoder and
// JSONDecoder cost a W2 hop a measurable share of its CPU (`make bench-profile`). The `Codable`
// conformances stay for everything else; `EventCodecTests` checks both agree.

/// Why a JSON object is not the FlowKit value expected, naming the field.
public struct FieldError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// Typed reads of an object's fields with errors that name the field.
struct Fields {
    let o: [String: JSONValue]
    let what: String

    init(_ v: JSONValue, _ what: String) throws {
        guard let o = v.objectValue else { throw FieldError(description: "\(what) is a \(v.typeName), not an object") }
        self.o = o; self.what = what
    }

    private func wrong(_ k: String, _ v: JSONValue, _ want: String) -> FieldError {
        FieldError(description: "\(what): `\(k)` is a \(v.typeName), not \(want)")
    }

    /// The field, or nil when it is absent or null (as `decodeIfPresent` reads it).
    func value(_ k: String) -> JSONValue? {
        guard let v = o[k], v != .null else { return nil }
        return v
    }

    func string(_ k: String) throws -> String? {
        guard let v = value(k) else { return nil }
        guard case .string(let s) = v else { throw wrong(k, v, "a string") }
        return s
    }
    func int(_ k: String) throws -> Int? {
        guard let v = value(k) else { return nil }
        switch v {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 9e15: return Int(d)
        default: throw wrong(k, v, "an integer")
        }
    }
    func double(_ k: String) throws -> Double? {
        guard let v = value(k) else { return nil }
        switch v {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw wrong(k, v, "a number")
        }
    }
    func strings(_ k: String) throws -> [String]? {
        guard let v = value(k) else { return nil }
        guard case .array(let a) = v else { throw wrong(k, v, "a list") }
        return try a.map { e in
            guard case .string(let s) = e else { throw wrong(k, e, "a list of strings") }
            return s
        }
    }
    func object(_ k: String) throws -> [String: JSONValue]? {
        guard let v = value(k) else { return nil }
        guard case .object(let m) = v else { throw wrong(k, v, "an object") }
        return m
    }
    func required<T>(_ k: String, _ read: (String) throws -> T?) throws -> T {
        guard let v = try read(k) else { throw FieldError(description: "\(what): `\(k)` is missing") }
        return v
    }
}

extension WorkerEvent {
    /// The event as compact JSON with sorted keys (what `StableJSON` writes).
    public var json: String {
        var w = JSONWriter(capacity: 256)
        w.object { w in
            w.key("at"); w.double(at)
            if let error { w.key("error"); w.string(error) }
            if let info { w.key("info"); w.value(info) }
            w.key("kind"); w.string(kind.rawValue)
            if let lines { w.key("lines"); w.array { w in for l in lines { w.string(l) } } }
            if let messageId { w.key("messageId"); w.string(messageId) }
            if let result { w.key("result"); w.value(result) }
            if let runId { w.key("runId"); w.string(runId) }
            if let running { w.key("running"); w.array { w in for r in running { w.string(r) } } }
            if let startedAt { w.key("startedAt"); w.double(startedAt) }
            if let taskId { w.key("taskId"); w.string(taskId) }
            if let tryNumber { w.key("tryNumber"); w.int(tryNumber) }
            w.key("worker"); w.string(worker)
        }
        return w.string
    }

    /// Reads an event from its JSON (`json`, or what an older worker wrote with `Codable`).
    public init(json text: String) throws {
        let f = try Fields(try JSONValue.parse(text), "event")
        let kindName = try f.required("kind", f.string)
        guard let kind = Kind(rawValue: kindName) else { throw FieldError(description: "event: unknown kind `\(kindName)`") }
        self.init(kind: kind, worker: try f.required("worker", f.string))
        at = try f.required("at", f.double)
        messageId = try f.string("messageId"); runId = try f.string("runId"); taskId = try f.string("taskId")
        tryNumber = try f.int("tryNumber"); startedAt = try f.double("startedAt")
        result = f.value("result"); error = try f.string("error")
        lines = try f.strings("lines"); running = try f.strings("running"); info = f.value("info")
    }
}

extension FlowTaskInvocation {
    /// The invocation as a JSON object (the `flowkit` kwarg and header of a task message).
    public var jsonValue: JSONValue {
        var o: [String: JSONValue] = [
            "flowId": .string(flowId), "runId": .string(runId), "taskId": .string(taskId), "tryNumber": .int(tryNumber),
            "logicalDate": Self.number(logicalDate), "dataIntervalStart": Self.number(dataIntervalStart),
            "dataIntervalEnd": Self.number(dataIntervalEnd), "params": .object(params), "upstream": .object(upstream),
        ]
        if let timeoutSeconds { o["timeoutSeconds"] = Self.number(timeoutSeconds) }
        if let externalRun { o["externalRun"] = externalRun }
        if let triggeringEvents { o["triggeringEvents"] = triggeringEvents }
        if let mapIndex { o["mapIndex"] = .int(mapIndex) }
        if let mapItem { o["mapItem"] = mapItem }
        if let flowVersion { o["flowVersion"] = .int(flowVersion) }
        if let flowHash { o["flowHash"] = .string(flowHash) }
        if let secrets { o["secrets"] = secrets }
        return .object(o)
    }

    /// A number as it reads back from the wire: whole ones are integers (`JSONParser`).
    static func number(_ d: Double) -> JSONValue {
        d == d.rounded() && abs(d) < 9e15 ? .int(Int(d)) : .double(d)
    }

    public init(json: JSONValue) throws {
        let f = try Fields(json, "invocation")
        self.init(flowId: try f.required("flowId", f.string), runId: try f.required("runId", f.string),
                  taskId: try f.required("taskId", f.string), tryNumber: try f.required("tryNumber", f.int),
                  logicalDate: Date(), dataIntervalStart: Date(), dataIntervalEnd: Date(),
                  params: try f.required("params", f.object), upstream: try f.required("upstream", f.object),
                  timeoutSeconds: try f.double("timeoutSeconds"), mapIndex: try f.int("mapIndex"), mapItem: f.value("mapItem"))
        // The instants as sent (a round trip through Date could change the last bit).
        logicalDate = try f.required("logicalDate", f.double)
        dataIntervalStart = try f.required("dataIntervalStart", f.double)
        dataIntervalEnd = try f.required("dataIntervalEnd", f.double)
        externalRun = f.value("externalRun"); triggeringEvents = f.value("triggeringEvents")
        flowVersion = try f.int("flowVersion"); flowHash = try f.string("flowHash")
        secrets = f.value("secrets")
    }
}
