import FlowKit
import Scheduler
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The HTTP client of the user commands: JSON in, JSON out, one clear line when it fails.
struct APIClient {
    let base: String
    let token: String?
    /// Seconds a request may wait for the API's answer.
    var timeout: Double = 30

    init(settings: Settings) {
        base = settings.apiURL.hasSuffix("/") ? String(settings.apiURL.dropLast()) : settings.apiURL
        token = settings.apiToken ?? Self.standaloneToken(settings)
    }

    /// Without FLOWKIT_API_TOKEN, a client talking to an API on this machine uses the admin
    /// token a local standalone keeps in `FLOWKIT_HOME/admin-token` (default `.flowkit/`).
    static func standaloneToken(_ settings: Settings) -> String? {
        guard let host = URL(string: settings.apiURL)?.host, ["127.0.0.1", "localhost", "::1"].contains(host) else { return nil }
        let file = settings.home.appendingPathComponent("admin-token")
        let t = (try? String(contentsOf: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        return (t?.isEmpty ?? true) ? nil : t
    }

    /// A path segment, percent-encoded: a mapped instance's id (`double[3]`) has brackets.
    static func segment(_ s: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/[]?#%")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    func get(_ path: String) async throws -> JSONValue { try await send("GET", path, body: nil) }

    /// A GET whose answer is decoded into its contract type (`Scheduler/Contract`).
    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try Self.typed(try await get(path), as: T.self, answering: "GET \(path)")
    }

    /// An answer decoded into its contract type; one that does not fit says which call and why
    /// (an API of another version, most likely).
    static func typed<T: Decodable>(_ value: JSONValue, as type: T.Type, answering call: String) throws -> T {
        do { return try APIWire.decode(T.self, from: value) } catch {
            throw CLIError("the API's answer to \(call) is not the \(T.self) this flowctl expects (is the API another version?): \(error)")
        }
    }
    func post(_ path: String, _ body: JSONValue = [:], headers: [String: String] = [:]) async throws -> JSONValue {
        try await send("POST", path, body: body, headers: headers)
    }
    func put(_ path: String, _ body: JSONValue) async throws -> JSONValue { try await send("PUT", path, body: body) }
    /// A write whose body is its contract type (`Scheduler/Contract/APIRequests.swift`).
    func write<B: Encodable>(_ method: String, _ path: String, body: B, headers: [String: String] = [:]) async throws -> JSONValue {
        let json: JSONValue? = try APIWire.encode(body)
        return try await send(method, path, body: json, headers: headers)
    }
    func delete(_ path: String) async throws -> JSONValue { try await send("DELETE", path, body: nil) }

    func send(_ method: String, _ path: String, body: JSONValue?, headers: [String: String] = [:]) async throws -> JSONValue {
        guard let url = URL(string: base + path) else { throw CLIError("bad URL \(base + path)", code: 2) }
        var req = URLRequest(url: url, timeoutInterval: timeout)
        req.httpMethod = method
        for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
        if let token { req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
            req.httpBody = Data(body.compactJSON.utf8)
        }
        let data: Data, response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: req)
        } catch let e as URLError where e.code == .timedOut {
            // It may be up and slow: saying "cannot reach" would send the user to the wrong place.
            throw CLIError("the FlowKit API at \(base) did not answer \(method) \(path) within \(Int(timeout))s", transient: true)
        } catch let e as URLError where [.networkConnectionLost, .badServerResponse, .zeroByteResource, .cannotParseResponse].contains(e.code) {
            throw CLIError("the FlowKit API at \(base) closed the connection during \(method) \(path)", transient: true)
        } catch {
            throw CLIError("cannot reach the FlowKit API at \(base) (\(error.localizedDescription)); start it with `flowctl standalone` or `flowctl server`, or set FLOWKIT_API_URL")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let value = (try? JSONValue.parse(data)) ?? .string(String(decoding: data, as: UTF8.self))
        guard (200..<300).contains(status) else {
            let message = value["message"]?.stringValue ?? "HTTP \(status)"
            let code = value["error"]?.stringValue ?? "http_\(status)"
            var hint = ""
            if status == 401 { hint = " (set FLOWKIT_API_TOKEN; standalone prints an admin token and keeps it in .flowkit/admin-token)" }
            throw CLIError("\(message) [\(code)]\(hint)", code: status == 400 ? 2 : 1, transient: [502, 503, 504].contains(status))
        }
        return value
    }
}

/// Fixed-width tables for people.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

func printJSON(_ v: JSONValue) {
    let data = (try? JSONSerialization.data(withJSONObject: JSONSerialization.jsonObject(with: Data(v.compactJSON.utf8), options: [.fragmentsAllowed]),
                                              options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data(v.compactJSON.utf8)
    print(String(decoding: data, as: UTF8.self))
}

/// An instant of the API (UTC), shown with its zone: `2026-11-01 05:00:00 UTC`.
func shortTime(_ s: String?) -> String {
    guard let s else { return "-" }
    guard let d = Instant.parse(s) else { return s }
    return CLITime.format(d, zone: "UTC")
}

func shortTime(_ d: Date?) -> String { d.map { CLITime.format($0, zone: "UTC") } ?? "-" }

func duration(_ start: Date?, _ end: Date?) -> String {
    guard let start else { return "-" }
    let d = (end ?? Date()).timeIntervalSince(start)
    return d < 10 ? String(format: "%.2fs", d) : String(format: "%.1fs", d)
}

func duration(_ start: String?, _ end: String?) -> String {
    guard let s = start.flatMap(Instant.parse) else { return "-" }
    let e = end.flatMap(Instant.parse) ?? Date()
    let d = e.timeIntervalSince(s)
    return d < 10 ? String(format: "%.2fs", d) : String(format: "%.1fs", d)
}

/// Flushes stdout so live progress shows at once when piped.
func flushStdout() { fflush(nil) }
