import Foundation
import Testing
@testable import FlowJSON
@testable import FlowKit
import PostgresClient

@Suite("JSON writer, parser and instants")
struct JSONTests {
    /// A deterministic generator, so a failure reproduces.
    struct Rand {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 11
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{08}", "\u{0C}", "\u{01}", "\u{1F}",
                                     "\u{7F}", "é", "€", "𝄞", "日本", "{", "]", ":", ","]

    func randomString(_ r: inout Rand) -> String {
        (0..<r.below(8)).map { _ in Self.alphabet[r.below(Self.alphabet.count)] }.joined()
    }

    func randomValue(_ r: inout Rand, depth: Int = 0) -> JSONValue {
        switch r.below(depth > 3 ? 5 : 7) {
        case 0: return .null
        case 1: return .bool(r.below(2) == 0)
        case 2: return .int(Int(bitPattern: UInt(r.next())) >> r.below(60))
        case 3: return .double([0.1, -2.5, 1e21, 1.5e-7, 123456.789, -7.25, 3.0, Double(r.below(1000)) / 7][r.below(8)])
        case 4: return .string(randomString(&r))
        case 5: return .array((0..<r.below(4)).map { _ in randomValue(&r, depth: depth + 1) })
        default:
            var o: [String: JSONValue] = [:]
            for _ in 0..<r.below(5) { o[randomString(&r)] = randomValue(&r, depth: depth + 1) }
            return .object(o)
        }
    }

    @Test("the writer writes what JSONEncoder with sorted keys writes, for 2,000 random values")
    func writerMatchesEncoder() throws {
        var r = Rand(state: 42)
        for _ in 0..<2000 {
            let v = randomValue(&r)
            let encoded = String(decoding: try JSONValue.encoder.encode(v), as: UTF8.self)
            #expect(v.compactJSON == encoded)
        }
    }

    @Test("the parser reads back what the writer wrote, and what JSONDecoder reads")
    func parserRoundTrip() throws {
        var r = Rand(state: 7)
        for _ in 0..<2000 {
            let v = randomValue(&r)
            let text = v.compactJSON
            let back = try JSONValue.parse(text)
            // A double with no fraction is written like an integer, so compare the texts.
            #expect(back.compactJSON == text)
            let viaFoundation = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
            #expect(viaFoundation.compactJSON == back.compactJSON)
        }
    }

    @Test("numbers: integers stay integers, fractions and exponents are doubles")
    func numbers() throws {
        #expect(try JSONValue.parse("42") == .int(42))
        #expect(try JSONValue.parse("-0").compactJSON == "-0")
        #expect(try JSONValue.parse("1.5") == .double(1.5))
        #expect(try JSONValue.parse("2e3") == .double(2000))
        #expect(try JSONValue.parse("92233720368547758070") == .double(92233720368547758070))
        #expect(try JSONValue.parse("1e-999999") == .double(0))  // underflow is zero, not an error
        #expect(try JSONValue.parse(" [1, \"\\u00e9\\ud834\\udd1e\\n\"] ") == .array([.int(1), .string("é𝄞\n")]))
    }

    @Test("malformed texts are refused, naming the problem and the byte", arguments: [
        ("", "unexpected end of text at byte 0"),
        ("{not json", "expected a string key, found \"n\" at byte 1"),
        ("[1, 2", "unterminated array"),
        ("[1 2]", "expected \",\" or \"]\" in an array, found \"2\" at byte 3"),
        ("{\"a\" 1}", "expected \":\" after a key"),
        ("01", "leading zero"),
        ("1.", "a number without digits after"),
        ("\"abc", "unterminated string at byte 0"),
        ("\"a\u{01}\"", "a control character inside a string"),
        ("\"\\x\"", "an unknown escape \\x"),
        ("\"\\ud800\"", "lone UTF-16 surrogate"),
        ("tru", "unexpected \"t\""),
        ("{} x", "unexpected \"x\" after the value at byte 3"),
        ("NaN", "unexpected \"N\""),
        ("1e999999", "the number 1e999999 is out of range"),
        ("[-1e400]", "the number -1e400 is out of range"),
        ("{\"n\": " + String(repeating: "9", count: 5000) + "}", "(5000 characters) is out of range"),
    ])
    func malformed(_ text: String, _ expected: String) {
        do {
            let v = try JSONValue.parse(text)
            Issue.record("accepted \(text) as \(v)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    @Test("nesting is bounded instead of overflowing the stack")
    func deepNesting() {
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        #expect((try? JSONValue.parse(String(repeating: "[", count: 500) + String(repeating: "]", count: 500))) != nil)
    }

    @Test("invalid UTF-8 is refused")
    func invalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test("instants format like the C library's gmtime, across centuries, leap days and negative times")
    func instants() {
        var r = Rand(state: 99)
        var samples: [Double] = [0, -1, -86_400, 951_782_400, 4_107_542_400, 1_700_000_000.9996, -0.5, 253_402_300_799]
        for _ in 0..<5000 { samples.append(Double(Int(r.next() % 8_000_000_000) - 2_000_000_000) + Double(r.below(1000)) / 1000) }
        for t in samples {
            let d = Date(timeIntervalSince1970: t)
            var secs = Int(t.rounded(.down))
            var ms = Int(((t - Double(secs)) * 1000).rounded())
            if ms >= 1000 { secs += 1; ms -= 1000 }
            var tt = time_t(secs)
            var tmv = tm()
            gmtime_r(&tt, &tmv)
            let expected = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday),
                                  Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec), ms)
            #expect(Instant.format(d, fractionDigits: 3) == expected, "t=\(t)")
            #expect(Instant.parse(expected).map { abs($0.timeIntervalSince1970 - Double(secs) - Double(ms) / 1000) < 1e-6 } == true)
            // PostgreSQL's text form, microseconds.
            var us = Int(((t - t.rounded(.down)) * 1_000_000).rounded())
            var usSecs = Int(t.rounded(.down))
            if us >= 1_000_000 { usSecs += 1; us -= 1_000_000 }
            tt = time_t(usSecs)
            gmtime_r(&tt, &tmv)
            let pg = String(format: "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", Int(tmv.tm_year) + 1900, Int(tmv.tm_mon) + 1, Int(tmv.tm_mday),
                            Int(tmv.tm_hour), Int(tmv.tm_min), Int(tmv.tm_sec), us)
            #expect(PGTime.format(d) == pg, "t=\(t)")
            #expect(PGTime.parse(pg).map { abs($0.timeIntervalSince1970 - Double(usSecs) - Double(us) / 1e6) < 1e-6 } == true)
        }
        #expect(Instant.format(Date(timeIntervalSince1970: 1_795_327_200)) == "2026-11-22T06:00:00Z")
        #expect(PGTime.parse("2026-11-22 07:30:00+01:30")?.timeIntervalSince1970 == 1_795_327_200)
        #expect(PGTime.parse("2026-11-22 01:00:00-05") == Date(timeIntervalSince1970: 1_795_327_200))
        #expect(Instant.parse("2026-11-22T06:00:00") == nil)
        #expect(Instant.parse("2026-13-22T06:00:00Z") == nil)
        #expect(PGTime.parse("infinity") == nil)
    }
}
