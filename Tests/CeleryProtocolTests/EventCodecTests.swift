import CeleryProtocol
import FlowKit
import Foundation
import Testing

/// The hand-written codecs of the broker's hot path agree with the `Codable` forms they
/// replaced: both read what the other writes (workers and schedulers of two releases meet
/// during a rolling upgrade), and a wrong field is refused naming it.
@Suite("Worker event and invocation codecs")
struct EventCodecTests {
    static let full: WorkerEvent = {
        var e = WorkerEvent(kind: .succeeded, worker: "w-1", at: Date(timeIntervalSince1970: 1_796_288_423.208_912), messageId: "m-1",
                            runId: "manual__2026-12-03T09:00:23Z__ef8d4acf", taskId: "t[3]", tryNumber: 2,
                            result: ["rows": 4210, "ratio": 0.25, "note": "quote \" and \\ and\nnewline", "nested": [nil, true, "x"]],
                            error: "ünïcode ✓", lines: ["a", "b\tc"], running: ["m-1", "m-2"], info: ["pid": 42])
        e.startedAt = 1_796_288_423.2
        return e
    }()

    @Test("an event survives its own codec and agrees with Codable both ways", arguments: [
        full,
        WorkerEvent(kind: .heartbeat, worker: "w", at: Date(timeIntervalSince1970: 1_700_000_000)),
        WorkerEvent(kind: .workerOnline, worker: "w", info: ["flows": ["a": "hash"]]),
    ])
    func eventRoundTrip(_ e: WorkerEvent) throws {
        #expect(try WorkerEvent(json: e.json) == e)
        #expect(try JSONDecoder().decode(WorkerEvent.self, from: Data(e.json.utf8)) == e)
        let codable = String(decoding: try JSONEncoder().encode(e), as: UTF8.self)
        #expect(try WorkerEvent(json: codable) == e)
        // The same text as the sorted-keys Codable form it replaced.
        #expect(e.json == (try StableJSON.string(e)))
    }

    @Test("a wrong event names the field", arguments: [
        (#"{"kind": "succeeded", "at": 1}"#, "`worker` is missing"),
        (#"{"kind": "exploded", "worker": "w", "at": 1}"#, "unknown kind `exploded`"),
        (#"{"kind": "log", "worker": "w", "at": "noon"}"#, "`at` is a string, not a number"),
        (#"{"kind": "log", "worker": "w", "at": 1, "tryNumber": 1.5}"#, "`tryNumber` is a number, not an integer"),
        (#"{"kind": "log", "worker": "w", "at": 1, "lines": ["a", 2]}"#, "not a list of strings"),
        (#"[1]"#, "event is a list, not an object"),
    ])
    func eventErrors(_ text: String, _ why: String) {
        #expect { try WorkerEvent(json: text) } throws: { "\($0)".contains(why) }
    }

    static let invocation: FlowTaskInvocation = {
        var i = FlowTaskInvocation(flowId: "f", runId: "r", taskId: "t[1]", tryNumber: 3, logicalDate: Date(timeIntervalSince1970: 1_796_288_172.997_271),
                                   dataIntervalStart: Date(timeIntervalSince1970: 1_796_201_772.5), dataIntervalEnd: Date(timeIntervalSince1970: 1_796_288_172),
                                   params: ["n": 3, "s": "x"], upstream: ["a": ["k": [1, 2]]], timeoutSeconds: 1.5, mapIndex: 1, mapItem: "b")
        i.flowVersion = 4; i.flowHash = "abc"; i.externalRun = ["state": "success"]; i.triggeringEvents = [["uri": "s3://x"]]
        return i
    }()

    @Test("an invocation survives its own codec and agrees with Codable both ways")
    func invocationRoundTrip() throws {
        for inv in [Self.invocation, FlowTaskInvocation(flowId: "f", runId: "r", taskId: "t", tryNumber: 1, logicalDate: Date(timeIntervalSince1970: 0),
                                                         dataIntervalStart: Date(timeIntervalSince1970: 0), dataIntervalEnd: Date(timeIntervalSince1970: 0),
                                                         params: [:], upstream: [:], timeoutSeconds: nil)] {
            #expect(try FlowTaskInvocation(json: inv.jsonValue) == inv)
            // The value is what the wire gives back (whole numbers as integers).
            #expect(try JSONValue.parse(inv.jsonValue.compactJSON) == inv.jsonValue)
            // Through the wire: written, parsed, read — and as Codable wrote and reads it.
            #expect(try FlowTaskInvocation(json: JSONValue.parse(inv.jsonValue.compactJSON)) == inv)
            #expect(try JSONDecoder().decode(FlowTaskInvocation.self, from: Data(inv.jsonValue.compactJSON.utf8)) == inv)
            #expect(try FlowTaskInvocation(json: JSONValue.parse(StableJSON.string(inv))) == inv)
            #expect(inv.jsonValue.compactJSON == (try StableJSON.string(inv)))
        }
    }

    @Test("a wrong invocation names the field")
    func invocationErrors() {
        var o = Self.invocation.jsonValue.objectValue!
        o["runId"] = nil
        #expect { try FlowTaskInvocation(json: .object(o)) } throws: { "\($0)" == "invocation: `runId` is missing" }
        o["runId"] = 7
        #expect { try FlowTaskInvocation(json: .object(o)) } throws: { "\($0)" == "invocation: `runId` is a number, not a string" }
        #expect { try FlowTaskInvocation(json: "x") } throws: { "\($0)" == "invocation is a string, not an object" }
    }
}
