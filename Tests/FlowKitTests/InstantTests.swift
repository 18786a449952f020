import Foundation
import Testing
@testable import FlowKit
import Flows

@Suite("ISO-8601 instants")
struct InstantTests {
    @Test("formats UTC instants with 0, 3 or 6 fraction digits, and parses what it formats")
    func roundTrip() {
        let d = Date(timeIntervalSince1970: 1_795_327_200.125)  // 2026-11-22T06:00:00.125Z
        #expect(Instant.format(d) == "2026-11-22T06:00:00Z")
        #expect(Instant.format(d, fractionDigits: 3) == "2026-11-22T06:00:00.125Z")
        #expect(Instant.format(d, fractionDigits: 6) == "2026-11-22T06:00:00.125000Z")
        #expect(Instant.parse("2026-11-22T06:00:00.125Z") == d)
        #expect(Instant.parse("2026-11-22T07:00:00+01:00") == Date(timeIntervalSince1970: 1_795_327_200))
        #expect(Instant.format(Date(timeIntervalSince1970: 0.9996), fractionDigits: 3) == "1970-01-01T00:00:01.000Z")
    }

    @Test("refuses what is not an instant", arguments: ["yesterday", "2026-11-22", "2026-13-01T00:00:00Z", "2026-11-22T06:00:00", "2026-11-22T06:00:00Zjunk"])
    func invalid(_ s: String) {
        #expect(Instant.parse(s) == nil)
    }
}
