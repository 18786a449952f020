import CCurl
import FlowKit
import Foundation

/// Where and how to send mail: a named connection such as
/// `smtp://user:pa%40ss@mail.example.com:587?from=flowkit@example.com&to=oncall@example.com,data@example.com`.
struct SMTPConnection: Equatable {
    enum TLS: Int32 { case none = 0, optional = 1, required = 2 }
    var url: String          // scheme://host:port, what libcurl connects to
    var user: String
    var password: String
    var from: String
    var to: [String]
    var tls: TLS
    var caFile: String?

    /// Parses `FLOWKIT_CONN_<NAME>` (and `FLOWKIT_CONN_<NAME>_PASSWORD`); errors name the variable.
    init(name: String, connections: [String: String]) throws {
        let variable = "FLOWKIT_CONN_\(name.uppercased())"
        let raw = try connectionURL(name, connections)
        guard let c = URLComponents(string: raw), let scheme = c.scheme?.lowercased(), ["smtp", "smtps"].contains(scheme),
              let host = c.host, !host.isEmpty else {
            throw DeliveryError(configuration: "\(variable) is not an SMTP URL (smtp://user:password@host:587?from=…&to=…)")
        }
        let query = Dictionary((c.queryItems ?? []).map { ($0.name.lowercased(), $0.value ?? "") }, uniquingKeysWith: { _, b in b })
        guard let from = query["from"], from.contains("@") else { throw DeliveryError(configuration: "\(variable) needs ?from=address") }
        let to = (query["to"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !to.isEmpty, to.allSatisfy({ $0.contains("@") }) else { throw DeliveryError(configuration: "\(variable) needs &to=address[,address…]") }
        let port = c.port ?? (scheme == "smtps" ? 465 : 587)
        let hostPart = host.contains(":") ? "[\(host)]" : host
        url = "\(scheme)://\(hostPart):\(port)"
        user = c.user.flatMap { $0.removingPercentEncoding } ?? ""
        password = connections["\(name)_password"] ?? c.password.flatMap { $0.removingPercentEncoding } ?? ""
        self.from = from
        self.to = to
        switch (query["tls"] ?? "required").lowercased() {
        case "required", "starttls": tls = .required
        case "optional": tls = .optional
        case "none", "off": tls = .none
        case let other: throw DeliveryError(configuration: "\(variable): tls=\(other) is not one of required, optional, none")
        }
        caFile = query["ca"].flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// `.email(name)`: a plain-text mail per notification, over SMTP with STARTTLS and auth (libcurl).
/// The `Message-ID` is the delivery id, stable across attempts, so a mail that was sent but not
/// recorded is a duplicate that mail clients and archives recognise.
struct EmailNotifier {
    let connection: String

    func deliver(_ m: NotificationMessage, connections: [String: String], timeout: Double) async throws -> Int {
        let smtp = try SMTPConnection(name: connection, connections: connections)
        let payload = Self.message(m, from: smtp.from, to: smtp.to)
        // libcurl blocks: keep it off the cooperative pool.
        return try await withCheckedThrowingContinuation { (k: CheckedContinuation<Int, Error>) in
            Thread.detachNewThread { k.resume(with: Result { try Self.send(smtp, payload: payload, timeout: timeout) }) }
        }
    }

    static func send(_ smtp: SMTPConnection, payload: [UInt8], timeout: Double) throws -> Int {
        var errbuf = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        var reply = 0
        let rcpts = smtp.to.map { strdup("<\($0)>") }
        defer { rcpts.forEach { free($0) } }
        let rc = rcpts.map { UnsafePointer($0) }.withUnsafeBufferPointer { r in
            payload.withUnsafeBufferPointer { p in
                p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { body in
                    fk_smtp_send(smtp.url, smtp.user, smtp.password, "<\(smtp.from)>", r.baseAddress, Int32(r.count),
                                 body, p.count, smtp.caFile, smtp.tls.rawValue, max(1, Int(timeout.rounded(.up))), &errbuf, &reply)
                }
            }
        }
        guard rc == 0 else {
            let why = String(decoding: errbuf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw DeliveryError("SMTP \(smtp.url): \(why)" + (reply > 0 ? " (server replied \(reply))" : ""), statusCode: reply > 0 ? reply : nil)
        }
        return reply > 0 ? reply : 250
    }

    /// The mail: RFC 5322 headers, a UTF-8 plain-text body, CRLF lines.
    static func message(_ m: NotificationMessage, from: String, to: [String]) -> [UInt8] {
        let subject = "[FlowKit] " + m.summary.prefix(200)
        var lines = [
            "From: FlowKit <\(from)>",
            "To: " + to.joined(separator: ", "),
            "Subject: " + encodedWord(String(subject)),
            "Date: " + rfc5322Date(m.at),
            "Message-ID: <\(m.deliveryId)@flowkit>",
            "X-FlowKit-Delivery: \(m.deliveryId)",
            "X-FlowKit-Event: \(m.event.rawValue)",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            "",
            m.summary,
            "",
            "Event: \(m.event.rawValue)",
            "Flow:  \(m.flowId)",
            "Run:   \(m.runId)",
        ]
        if let t = m.taskId { lines.append("Task:  \(t)" + (m.tryNumber.map { " (try \($0))" } ?? "")) }
        lines.append("State: \(m.state)")
        if let e = m.error { lines.append("Error: \(e)") }
        if !m.logTail.isEmpty { lines += ["", "Last log lines:"] + m.logTail.suffix(20).map { "  " + $0 } }
        if let link = m.runURL { lines += ["", "The run: \(link)"] }
        // Bare CR or LF from a log line must not end a header or the body early.
        let text = lines.map { $0.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ") }
            .joined(separator: "\r\n") + "\r\n"
        return Array(text.utf8)
    }

    /// RFC 2047: ASCII as is, anything else as a base64 UTF-8 encoded word.
    static func encodedWord(_ s: String) -> String {
        s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) ? s : "=?UTF-8?B?" + Data(s.utf8).base64EncodedString() + "?="
    }

    static func rfc5322Date(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return f.string(from: d)
    }
}
