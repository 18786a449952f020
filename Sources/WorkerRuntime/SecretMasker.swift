public import FlowKit
import Foundation

/// Hides the values of named connections in what a task logs and in its error, as Airflow masks
/// connection secrets: a connection's whole value, and the password inside a URL, become `***`.
public struct SecretMasker: Sendable {
    /// Longest first, so that a URL is hidden whole before its password is looked for.
    let secrets: [String]

    public init(connections: [String: String]) {
        var found = Set<String>()
        for value in connections.values {
            if value.count >= 4 { found.insert(value) }
            if let c = URLComponents(string: value) {
                // As written in the URL and as the server sees it.
                for p in [c.password, c.percentEncodedPassword].compactMap({ $0 }) where p.count >= 3 { found.insert(p) }
                // Secrets passed as query options (an S3 connection's `session_token`, a `password=`).
                for item in c.queryItems ?? [] where TaskNeeds.secretURLOptions.contains(item.name.lowercased()) {
                    if let v = item.value, v.count >= 3 { found.insert(v) }
                }
            }
            // libpq keyword strings: password=…
            for part in value.split(separator: " ") where part.hasPrefix("password=") {
                let p = String(part.dropFirst("password=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "'"))
                if p.count >= 3 { found.insert(p) }
            }
        }
        secrets = found.sorted { $0.count > $1.count }
    }

    public func mask(_ text: String) -> String {
        guard !secrets.isEmpty else { return text }
        var out = text
        for s in secrets where out.contains(s) { out = out.replacingOccurrences(of: s, with: "***") }
        return out
    }

    /// A result with every string in it masked (keys too: a secret may be a map's key).
    public func mask(_ value: JSONValue) -> JSONValue {
        guard !secrets.isEmpty else { return value }
        switch value {
        case .string(let s): return .string(mask(s))
        case .array(let a): return .array(a.map(mask))
        case .object(let o): return .object(Dictionary(o.map { (mask($0.key), mask($0.value)) }, uniquingKeysWith: { a, _ in a }))
        default: return value
        }
    }
}
