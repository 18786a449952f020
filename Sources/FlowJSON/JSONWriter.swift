public import Foundation

/// Writes compact JSON straight into bytes: the hot paths (API lists, task messages, results)
/// use it instead of `JSONEncoder`, which on Linux spends most of its time boxing values,
/// looking up generic metadata and sorting keys.
///
/// The output is byte-for-byte what `StableJSON` (a `JSONEncoder` with sorted keys and unescaped
/// slashes) writes for the same value, so hashes and stored JSON do not depend on the path taken;
/// `JSONWriterTests` hold the two side by side.
public struct JSONWriter: Sendable {
    public var bytes: [UInt8]
    private var needsComma = false

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    // MARK: Structure

    /// An object whose keys the caller writes in sorted order (`StableJSON` sorts them).
    public mutating func object(_ body: (inout JSONWriter) throws -> Void) rethrows {
        try container(UInt8(ascii: "{"), UInt8(ascii: "}"), body)
    }

    public mutating func array(_ body: (inout JSONWriter) throws -> Void) rethrows {
        try container(UInt8(ascii: "["), UInt8(ascii: "]"), body)
    }

    private mutating func container(_ open: UInt8, _ close: UInt8, _ body: (inout JSONWriter) throws -> Void) rethrows {
        separate()
        bytes.append(open)
        needsComma = false
        try body(&self)
        bytes.append(close)
        needsComma = true
    }

    /// A key inside `object`; the value written next belongs to it.
    public mutating func key(_ k: String) {
        separate()
        writeString(k)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    // MARK: Values

    public mutating func null() { separate(); bytes.append(contentsOf: [110, 117, 108, 108]); needsComma = true }

    public mutating func bool(_ b: Bool) {
        separate()
        bytes.append(contentsOf: b ? [116, 114, 117, 101] : [102, 97, 108, 115, 101])
        needsComma = true
    }

    public mutating func int(_ v: Int) {
        separate()
        if v == 0 { bytes.append(48); needsComma = true; return }
        var m = v.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while m > 0 { d[n] = UInt8(48 + m % 10); m /= 10; n += 1 }
            if v < 0 { bytes.append(45) }
            while n > 0 { n -= 1; bytes.append(d[n]) }
        }
        needsComma = true
    }

    /// Doubles as `JSONEncoder` writes them: the shortest round-tripping form, `.0` dropped.
    public mutating func double(_ d: Double) {
        guard d.isFinite else { null(); return }
        var s = d.description
        if s.hasSuffix(".0") { s.removeLast(2) }
        separate()
        bytes.append(contentsOf: s.utf8)
        needsComma = true
    }

    public mutating func string(_ s: String) {
        separate()
        writeString(s)
        needsComma = true
    }

    public mutating func string(_ s: String?) { if let s { string(s) } else { null() } }

    /// An instant as `2026-11-22T06:00:00.123Z` (milliseconds, UTC).
    public mutating func date(_ d: Date, fractionDigits: Int = 3) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        Instant.write(d, fractionDigits: fractionDigits, into: &bytes)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Text that already is one JSON value (a `jsonb::text` column, say).
    public mutating func raw(_ json: String) {
        separate()
        bytes.append(contentsOf: json.utf8)
        needsComma = true
    }

    public mutating func value(_ v: JSONValue) {
        switch v {
        case .null: null()
        case .bool(let b): bool(b)
        case .int(let i): int(i)
        case .double(let d): double(d)
        case .string(let s): string(s)
        case .array(let a): array { w in for e in a { w.value(e) } }
        case .object(let o):
            object { w in
                for k in o.keys.sorted(by: JSONWriter.keyOrder) { w.key(k); w.value(o[k]!) }
            }
        }
    }

    /// The order `JSONEncoder.OutputFormatting.sortedKeys` uses: by UTF-8 bytes.
    public static func keyOrder(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    // MARK: -

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func writeString(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { u in
            var start = 0
            for i in 0..<u.count {
                let c = u[i]
                guard c < 0x20 || c == 0x22 || c == 0x5C else { continue }
                if start < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<i])) }
                start = i + 1
                switch c {
                case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
                case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
                case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
                default:
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 48, 48, Self.hex[Int(c >> 4)], Self.hex[Int(c & 15)]])
                }
            }
            if start < u.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<u.count])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

/// Types the API and the broker write with `JSONWriter` rather than `JSONEncoder`.
public protocol JSONWritable {
    func write(to w: inout JSONWriter)
}

extension JSONValue: JSONWritable {
    public func write(to w: inout JSONWriter) { w.value(self) }
}
