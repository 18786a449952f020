public import FlowJSON
public import Foundation

/// A task message in Celery's protocol v2, as kombu's Redis transport writes it to a queue list.
///
/// The envelope is JSON: `body` (base64 of `[args, kwargs, embed]`), `headers` (`task`, `id`,
/// `root_id`, `retries`, `eta`, `timelimit`, …) and `properties` (`correlation_id`,
/// `reply_to`, `delivery_info`, `priority`, `delivery_tag`, …).
///
/// ```swift
/// let m = CeleryMessage(task: "flowkit.echo", args: [1, 2], queue: "default")
/// try await redis.run { try $0.command(["LPUSH", m.queue, m.encoded()]) }
/// ```
public struct CeleryMessage: Sendable, Equatable {
    public var id: String
    public var task: String
    public var args: [JSONValue]
    public var kwargs: [String: JSONValue]
    public var queue: String
    public var priority: Int
    public var retries: Int
    public var eta: String?
    public var expires: String?
    /// `[hard, soft]` seconds.
    public var timeLimit: (hard: Double?, soft: Double?)
    public var rootId: String?
    public var parentId: String?
    public var origin: String
    public var replyTo: String?
    /// kombu's key for acknowledging the message; Celery clients make it a fresh uuid, FlowKit
    /// uses the task id.
    public var deliveryTag: String
    /// Everything the envelope carried that this type does not model, kept for re-encoding.
    public var extraHeaders: [String: JSONValue] = [:]

    public init(id: String = UUID().uuidString.lowercased(), task: String, args: [JSONValue] = [],
                kwargs: [String: JSONValue] = [:], queue: String, priority: Int = 0, retries: Int = 0,
                eta: String? = nil, expires: String? = nil, timeLimit: (hard: Double?, soft: Double?) = (nil, nil),
                rootId: String? = nil, parentId: String? = nil, origin: String = CeleryMessage.defaultOrigin,
                replyTo: String? = nil) {
        self.id = id; self.task = task; self.args = args; self.kwargs = kwargs; self.queue = queue
        self.priority = priority; self.retries = retries; self.eta = eta; self.expires = expires
        self.timeLimit = timeLimit; self.rootId = rootId ?? id; self.parentId = parentId; self.origin = origin
        self.replyTo = replyTo
        self.deliveryTag = id
    }

    public static func == (a: CeleryMessage, b: CeleryMessage) -> Bool {
        a.id == b.id && a.task == b.task && a.args == b.args && a.kwargs == b.kwargs && a.queue == b.queue
            && a.priority == b.priority && a.retries == b.retries && a.eta == b.eta && a.expires == b.expires
            && a.timeLimit.hard == b.timeLimit.hard && a.timeLimit.soft == b.timeLimit.soft && a.rootId == b.rootId
            && a.parentId == b.parentId
    }

    public static let defaultOrigin: String = "\(ProcessInfo.processInfo.processIdentifier)@\(ProcessInfo.processInfo.hostName)"

    /// The JSON envelope, ready for `LPUSH`.
    public func encoded() -> String {
        let embed: JSONValue = ["callbacks": nil, "errbacks": nil, "chain": nil, "chord": nil]
        let body = JSONValue.array([.array(args), .object(kwargs), embed]).compactJSON
        func num(_ d: Double?) -> JSONValue { d.map { $0 == $0.rounded() ? .int(Int($0)) : .double($0) } ?? .null }
        var headers: [String: JSONValue] = extraHeaders
        headers.merge([
            "lang": "py", "task": .string(task), "id": .string(id), "shadow": nil,
            "eta": eta.map(JSONValue.string) ?? nil, "expires": expires.map(JSONValue.string) ?? nil,
            "group": nil, "group_index": nil, "retries": .int(retries),
            "timelimit": [num(timeLimit.hard), num(timeLimit.soft)],
            "root_id": rootId.map(JSONValue.string) ?? nil, "parent_id": parentId.map(JSONValue.string) ?? nil,
            "argsrepr": .string(Self.repr(args)), "kwargsrepr": .string(Self.repr(kwargs)),
            "origin": .string(origin), "ignore_result": false,
        ]) { _, new in new }
        let envelope: JSONValue = [
            "body": .string(Data(body.utf8).base64EncodedString()),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": .object(headers),
            "properties": [
                "correlation_id": .string(id),
                "reply_to": replyTo.map(JSONValue.string) ?? .string(UUID().uuidString.lowercased()),
                "delivery_mode": 2,
                "delivery_info": ["exchange": "", "routing_key": .string(queue)],
                "priority": .int(priority),
                "body_encoding": "base64",
                "delivery_tag": .string(deliveryTag),
            ],
        ]
        return envelope.compactJSON
    }

    /// Python-ish reprs for Celery's `argsrepr`/`kwargsrepr` (shown by monitoring tools only).
    static func repr(_ args: [JSONValue]) -> String { "(" + args.map(\.compactJSON).joined(separator: ", ") + (args.count == 1 ? ",)" : ")") }
    static func repr(_ kwargs: [String: JSONValue]) -> String {
        "{" + kwargs.sorted { $0.key < $1.key }.map { "'\($0.key)': \($0.value.compactJSON)" }.joined(separator: ", ") + "}"
    }
}

/// Why a message could not be decoded.
public struct CeleryDecodeError: Error, CustomStringConvertible, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "malformed Celery message: \(reason)" }
}

extension CeleryMessage {
    /// Decodes an envelope as kombu's Redis transport stores it (protocol v2; v1 bodies are refused).
    public static func decode(_ text: String) throws -> CeleryMessage {
        let env: JSONValue
        do { env = try JSONValue.parse(text) } catch { throw CeleryDecodeError("not JSON") }
        guard let headers = env["headers"]?.objectValue else { throw CeleryDecodeError("no headers (protocol v1 is not supported)") }
        guard let props = env["properties"]?.objectValue else { throw CeleryDecodeError("no properties") }
        guard let task = headers["task"]?.stringValue, !task.isEmpty else { throw CeleryDecodeError("headers.task is missing") }
        guard let id = headers["id"]?.stringValue, !id.isEmpty else { throw CeleryDecodeError("headers.id is missing") }
        guard let bodyText = env["body"]?.stringValue else { throw CeleryDecodeError("body is missing") }
        let contentType = env["content-type"]?.stringValue ?? "application/json"
        guard contentType == "application/json" else {
            throw CeleryDecodeError("content-type `\(contentType)` is not supported (use the json serializer)")
        }
        let bodyData: Data
        if props["body_encoding"]?.stringValue == "base64" {
            guard let d = Data(base64Encoded: bodyText) else { throw CeleryDecodeError("body is not valid base64") }
            bodyData = d
        } else {
            bodyData = Data(bodyText.utf8)
        }
        guard let body = try? JSONValue.parse(bodyData), let parts = body.arrayValue, parts.count >= 2,
              let args = parts[0].arrayValue, let kwargs = parts[1].objectValue else {
            throw CeleryDecodeError("body is not [args, kwargs, embed]")
        }
        let info = props["delivery_info"]?.objectValue
        let queue = info?["routing_key"]?.stringValue ?? ""
        var m = CeleryMessage(id: id, task: task, args: args, kwargs: kwargs, queue: queue,
                              priority: props["priority"]?.intValue ?? 0, retries: headers["retries"]?.intValue ?? 0,
                              eta: headers["eta"]?.stringValue, expires: headers["expires"]?.stringValue,
                              rootId: headers["root_id"]?.stringValue, parentId: headers["parent_id"]?.stringValue,
                              origin: headers["origin"]?.stringValue ?? "", replyTo: props["reply_to"]?.stringValue)
        if let tl = headers["timelimit"]?.arrayValue, tl.count == 2 { m.timeLimit = (tl[0].doubleValue, tl[1].doubleValue) }
        m.deliveryTag = props["delivery_tag"]?.stringValue ?? id
        let known: Set<String> = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
                                  "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result"]
        m.extraHeaders = headers.filter { !known.contains($0.key) }
        return m
    }

    /// The delivery tag of an envelope (kombu's key in the `unacked` hash), if it has one.
    public static func deliveryTag(of text: String) -> String? {
        (try? JSONValue.parse(text))?["properties"]?["delivery_tag"]?.stringValue
    }
}
