import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import RedisClient
import Testing

struct CapturedMessage: Decodable { let list: String; let raw: String }
struct Captured: Decodable { let celery: String; let messages: [CapturedMessage] }

func capturedMessages() throws -> [CapturedMessage] {
    let url = try #require(Bundle.module.url(forResource: "Fixtures/celery5_messages", withExtension: "json"))
    return try JSONDecoder().decode(Captured.self, from: Data(contentsOf: url)).messages
}

@Suite("Celery protocol v2 codec")
struct CeleryCodecTests {
    @Test("messages captured from a real Celery 5 client decode completely")
    func decodeCaptured() throws {
        let msgs = try capturedMessages()
        #expect(msgs.count == 4)
        let byTask = Dictionary(uniqueKeysWithValues: try msgs.map { m -> (String, (CapturedMessage, CeleryMessage)) in
            let d = try CeleryMessage.decode(m.raw); return (d.task, (m, d))
        })
        let add = try #require(byTask["tasks.add"]?.1)
        #expect(add.args == [2, 3])
        #expect(add.kwargs.isEmpty)
        #expect(add.queue == "fixtures")
        #expect(add.rootId == add.id)
        #expect(add.deliveryTag != add.id)  // Celery's delivery tag is its own uuid
        let kw = try #require(byTask["tasks.kw"])
        #expect(kw.1.kwargs == ["name": "Girona", "values": [1.5, nil, true]])
        #expect(kw.1.priority == 6)
        #expect(kw.0.list == KombuLayout.list(for: "fixtures", priority: 6))
        let eta = try #require(byTask["tasks.eta"]?.1)
        #expect(eta.timeLimit.hard == 30 && eta.timeLimit.soft == 20)
        #expect(eta.expires != nil)
        let echo = try #require(byTask["flowkit.echo"]?.1)
        #expect(echo.args == ["é ñ ç", ["nested": [1, 2]]])
        #expect(echo.extraHeaders["replaced_task_nesting"] == 0)
    }

    @Test("FlowKit's own messages round-trip and carry kombu's fields")
    func roundTrip() throws {
        var m = CeleryMessage(task: "flowkit.f.t", args: [1], kwargs: ["flowkit": ["runId": "r"]], queue: "etl", priority: 3,
                              retries: 2, timeLimit: (60, nil), rootId: "root")
        m.extraHeaders = ["custom": "x"]
        let text = m.encoded()
        let back = try CeleryMessage.decode(text)
        #expect(back == m)
        #expect(back.extraHeaders["custom"] == "x")
        let env = try JSONValue.parse(text)
        #expect(env["properties"]?["body_encoding"] == "base64")
        #expect(env["properties"]?["delivery_info"]?["routing_key"] == "etl")
        #expect(env["headers"]?["timelimit"] == [60, nil])
        #expect(env["content-type"] == "application/json")
    }

    @Test("malformed messages are refused with the reason", arguments: [
        ("not json", "not JSON"),
        (#"{"body": "", "properties": {}}"#, "no headers"),
        (#"{"headers": {"task": "t", "id": "1"}, "properties": {"body_encoding": "base64"}, "body": "%%%"}"#, "not valid base64"),
        (#"{"headers": {"id": "1"}, "properties": {}, "body": ""}"#, "headers.task is missing"),
        (#"{"headers": {"task": "t", "id": "1"}, "properties": {}, "body": "[1]"}"#, "not [args, kwargs, embed]"),
        (#"{"headers": {"task": "t", "id": "1"}, "properties": {}, "body": "x", "content-type": "application/x-python-serialize"}"#, "content-type"),
    ])
    func malformed(_ raw: String, _ reason: String) {
        do {
            _ = try CeleryMessage.decode(raw)
            Issue.record("accepted \(raw)")
        } catch let e as CeleryDecodeError {
            #expect(e.reason.contains(reason), "\(e.reason)")
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test("priorities map to kombu's priority lists")
    func priorityLists() {
        #expect(KombuLayout.list(for: "q", priority: 0) == "q")
        #expect(KombuLayout.list(for: "q", priority: 4) == "q\u{06}\u{16}3")
        #expect(KombuLayout.list(for: "q", priority: 9) == "q\u{06}\u{16}9")
        #expect(KombuLayout.lists(for: "q") == ["q", "q\u{06}\u{16}3", "q\u{06}\u{16}6", "q\u{06}\u{16}9"])
    }
}
