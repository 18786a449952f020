public import Foundation

/// Why a text is not JSON, and where: `unexpected "}" at byte 14`.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 parser into `JSONValue`. It replaces `JSONDecoder` on the hot paths: every
/// broker message, result and API body goes through it. Numbers without a fraction or exponent
/// that fit an `Int` become `.int`, every other number `.double`.
struct JSONParser {
    private let u: UnsafeBufferPointer<UInt8>
    private var i = 0
    private var depth = 0
    static let maxDepth = 512

    private init(_ u: UnsafeBufferPointer<UInt8>) { self.u = u }

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONParseError) -> JSONValue {
        var p = JSONParser(bytes)
        p.skipSpace()
        let v = try p.value()
        p.skipSpace()
        guard p.i == bytes.count else { throw p.fail("unexpected \(p.describeHere()) after the value") }
        return v
    }

    private func fail(_ m: String) -> JSONParseError { JSONParseError(message: m, offset: i) }

    private func describeHere() -> String {
        guard i < u.count else { return "end of text" }
        let c = u[i]
        return c >= 0x20 && c < 0x7F ? "\"\(Character(Unicode.Scalar(c)))\"" : "byte 0x\(String(c, radix: 16))"
    }

    private mutating func skipSpace() {
        while i < u.count, u[i] == 0x20 || u[i] == 0x0A || u[i] == 0x0D || u[i] == 0x09 { i += 1 }
    }

    private mutating func value() throws(JSONParseError) -> JSONValue {
        guard i < u.count else { throw fail("unexpected end of text") }
        switch u[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected \(describeHere())")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= u.count else { throw fail("unexpected \(describeHere())") }
        for k in 0..<n where u[i + k] != word.utf8Start[k] { throw fail("unexpected \(describeHere())") }
        i += n
    }

    private mutating func enter() throws(JSONParseError) {
        depth += 1
        guard depth <= Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func object() throws(JSONParseError) -> JSONValue {
        try enter()
        i += 1
        var o: [String: JSONValue] = [:]
        skipSpace()
        if i < u.count, u[i] == UInt8(ascii: "}") { i += 1; depth -= 1; return .object(o) }
        while true {
            skipSpace()
            guard i < u.count, u[i] == UInt8(ascii: "\"") else { throw fail("expected a string key, found \(describeHere())") }
            let k = try string()
            skipSpace()
            guard i < u.count, u[i] == UInt8(ascii: ":") else { throw fail("expected \":\" after a key, found \(describeHere())") }
            i += 1
            skipSpace()
            o[k] = try value()
            skipSpace()
            guard i < u.count else { throw fail("unterminated object") }
            if u[i] == UInt8(ascii: ",") { i += 1; continue }
            if u[i] == UInt8(ascii: "}") { i += 1; break }
            throw fail("expected \",\" or \"}\" in an object, found \(describeHere())")
        }
        depth -= 1
        return .object(o)
    }

    private mutating func array() throws(JSONParseError) -> JSONValue {
        try enter()
        i += 1
        var a: [JSONValue] = []
        skipSpace()
        if i < u.count, u[i] == UInt8(ascii: "]") { i += 1; depth -= 1; return .array(a) }
        while true {
            skipSpace()
            a.append(try value())
            skipSpace()
            guard i < u.count else { throw fail("unterminated array") }
            if u[i] == UInt8(ascii: ",") { i += 1; continue }
            if u[i] == UInt8(ascii: "]") { i += 1; break }
            throw fail("expected \",\" or \"]\" in an array, found \(describeHere())")
        }
        depth -= 1
        return .array(a)
    }

    private mutating func string() throws(JSONParseError) -> String {
        let open = i
        i += 1
        // Fast path: no escapes.
        var j = i
        while j < u.count, u[j] != UInt8(ascii: "\""), u[j] != UInt8(ascii: "\\"), u[j] >= 0x20 { j += 1 }
        if j < u.count, u[j] == UInt8(ascii: "\"") {
            guard let s = String(validating: UnsafeBufferPointer(rebasing: u[i..<j]), as: UTF8.self) else {
                i = open
                throw fail("a string that is not valid UTF-8")
            }
            i = j + 1
            return s
        }
        var out: [UInt8] = Array(u[i..<j])
        i = j
        while true {
            guard i < u.count else { i = open; throw fail("unterminated string") }
            let c = u[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            if c < 0x20 { throw fail("a control character inside a string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < u.count else { throw fail("unterminated escape") }
            let e = u[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard i + 1 < u.count, u[i] == UInt8(ascii: "\\"), u[i + 1] == UInt8(ascii: "u") else {
                        throw fail("a lone UTF-16 surrogate in \\u escape")
                    }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw fail("a lone UTF-16 surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw fail("a lone UTF-16 surrogate in \\u escape")
                }
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
            default:
                i -= 1
                throw fail("an unknown escape \\\(Character(Unicode.Scalar(e)))")
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { i = open; throw fail("a string that is not valid UTF-8") }
        return s
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard i + 4 <= u.count else { throw fail("a short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = u[i]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 65...70: d = UInt32(c - 55)
            case 97...102: d = UInt32(c - 87)
            default: throw fail("a \\u escape with a non-hex digit")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func number() throws(JSONParseError) -> JSONValue {
        let start = i
        if u[i] == UInt8(ascii: "-") { i += 1 }
        guard i < u.count, u[i] >= 48, u[i] <= 57 else { throw fail("a number without digits") }
        if u[i] == 48 {
            i += 1
            if i < u.count, u[i] >= 48, u[i] <= 57 { throw fail("a number with a leading zero") }
        } else {
            while i < u.count, u[i] >= 48, u[i] <= 57 { i += 1 }
        }
        var integral = true
        if i < u.count, u[i] == UInt8(ascii: ".") {
            integral = false
            i += 1
            guard i < u.count, u[i] >= 48, u[i] <= 57 else { throw fail("a number without digits after \".\"") }
            while i < u.count, u[i] >= 48, u[i] <= 57 { i += 1 }
        }
        if i < u.count, u[i] == UInt8(ascii: "e") || u[i] == UInt8(ascii: "E") {
            integral = false
            i += 1
            if i < u.count, u[i] == UInt8(ascii: "+") || u[i] == UInt8(ascii: "-") { i += 1 }
            guard i < u.count, u[i] >= 48, u[i] <= 57 else { throw fail("a number without exponent digits") }
            while i < u.count, u[i] >= 48, u[i] <= 57 { i += 1 }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: u[start..<i]), as: UTF8.self)
        if integral, text != "-0", let v = Int(text) { return .int(v) }  // -0 keeps its sign, as a double
        // Double("1e999999") is +infinity: a number no JSON reader can give back, so refuse it
        // rather than store `null` (a 5,000-digit integer overflows the same way).
        guard let d = Double(text), d.isFinite else {
            let shown = text.count > 24 ? "\(text.prefix(20))… (\(text.count) characters)" : text
            throw fail("the number \(shown) is out of range: JSON numbers here must fit a 64-bit float")
        }
        return .double(d)
    }
}

extension JSONValue {
    /// Parses JSON text; the error names what is wrong and the byte where.
    public static func parse(_ text: String) throws -> JSONValue {
        var text = text
        return try text.withUTF8 { u throws(JSONParseError) in try JSONParser.parse(u) }
    }

    public static func parse(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { raw throws(JSONParseError) in try JSONParser.parse(raw.bindMemory(to: UInt8.self)) }
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try bytes.withUnsafeBufferPointer { u throws(JSONParseError) in try JSONParser.parse(u) }
    }

    /// Compact JSON with sorted keys, the same bytes `StableJSON` writes.
    public var compactBytes: [UInt8] {
        var w = JSONWriter()
        w.value(self)
        return w.bytes
    }
}
