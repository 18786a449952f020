import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import RedisClient
import Testing

@Suite("kombu's Redis layout: claim, ack, restore", .serialized)
struct KombuLayoutTests {
    func claim(_ r: RedisConnection, _ queue: String, n: Int, now: Double) async throws -> [String] {
        try await claimWithFlags(r, queue, n: n, now: now).map(\.raw)
    }

    func claimWithFlags(_ r: RedisConnection, _ queue: String, n: Int, now: Double) async throws -> [KombuLayout.Claimed] {
        try await claimReply(r, queue, n: n, now: now).messages
    }

    func claimReply(_ r: RedisConnection, _ queue: String, n: Int, now: Double, maxBytes: Int = KombuLayout.defaultMaxMessageBytes) async throws -> KombuLayout.ClaimReply {
        let command = KombuLayout.claimCommand(queues: [queue], count: n, now: now, maxMessageBytes: maxBytes)
        return try await r.run { s in KombuLayout.claimed(try s.command(command).orThrow()) }
    }

    func deadList(_ r: RedisConnection) async throws -> [JSONValue] {
        try await r.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).array?.compactMap(\.string) ?? [] }.map { try JSONValue.parse($0) }
    }

    @Test("a claim tells which messages were cancelled before they were taken")
    func claimSeesCancellation() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let msgs = (0..<3).map { CeleryMessage(task: "t\($0)", queue: "q") }
        try await r.run { s in _ = try s.pipeline(msgs.flatMap(KombuLayout.enqueueCommands)) }
        _ = try await r.command("SET", FlowKitKeys.cancel(msgs[1].id), "1")
        let claimed = try await claimWithFlags(r, "q", n: 10, now: 1000)
        #expect(try claimed.map { try CeleryMessage.decode($0.raw).id } == msgs.map(\.id))
        #expect(claimed.map(\.cancelled) == [false, true, false])
    }

    @Test("a claim moves messages into unacked in one step, oldest first, priority lists after the main one")
    func claimAtomically() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let msgs = (0..<3).map { CeleryMessage(task: "t\($0)", queue: "q") }
        let urgent = CeleryMessage(task: "low", queue: "q", priority: 9)
        try await r.run { s in _ = try s.pipeline((msgs + [urgent]).flatMap(KombuLayout.enqueueCommands)) }
        let claimed = try await claim(r, "q", n: 10, now: 1000)
        #expect(try claimed.map { try CeleryMessage.decode($0).task } == ["t0", "t1", "t2", "low"])
        #expect(try await r.command("HLEN", "unacked").int == 4)
        #expect(try await r.command("ZSCORE", "unacked_index", msgs[0].id).string == "1000")
        let payload = try #require(try await r.command("HGET", "unacked", msgs[0].id).string)
        let parts = try #require(try JSONValue.parse(payload).arrayValue)
        #expect(parts.count == 3 && parts[2] == "q")  // [message, exchange, routing_key]
        #expect(try await r.command("SISMEMBER", "_kombu.binding.q", KombuLayout.bindingMember("q")).int == 1)
    }

    @Test("broken envelopes go to the dead-letter list with the reason, the rest are claimed")
    func deadLetters() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let good = CeleryMessage(task: "ok", queue: "q")
        try await r.run { s in
            _ = try s.pipeline([["LPUSH", "q", "garbage{"], ["LPUSH", "q", #"{"properties": {}}"#]] + KombuLayout.enqueueCommands(good))
        }
        let reply = try await claimReply(r, "q", n: 10, now: 1)
        #expect(reply.messages.count == 1)
        let reasons: Set<String> = ["a message on `q` is not JSON", "a message on `q` has no properties.delivery_tag"]
        #expect(Set(try await deadList(r).map { $0["reason"]?.stringValue ?? "" }) == reasons)
        // The worker gets the reasons, to log them.
        #expect(Set(reply.rejected) == reasons)
    }

    @Test("a message over the size limit is refused before decoding, with a truncated copy and its size")
    func oversized() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let big = CeleryMessage(task: "big", kwargs: ["blob": .string(String(repeating: "é", count: 300_000))], queue: "q")
        let small = CeleryMessage(task: "small", queue: "q")
        try await r.run { s in _ = try s.pipeline(KombuLayout.enqueueCommands(big) + KombuLayout.enqueueCommands(small)) }
        let size = big.encoded().utf8.count
        let reply = try await claimReply(r, "q", n: 10, now: 1, maxBytes: 100_000)
        #expect(try reply.messages.map { try CeleryMessage.decode($0.raw).task } == ["small"])
        #expect(reply.rejected == ["a message of \(size) bytes on `q` is over the limit of 100000 bytes"])
        let dead = try #require(try await deadList(r).first)
        #expect(dead["truncated"] == true && dead["size"] == .int(size))
        #expect((dead["message"]?.stringValue?.utf8.count ?? 0) <= DeadLetter.maxPayloadBytes)
        #expect(try await r.command("HEXISTS", "unacked", big.id).int == 0)
    }

    @Test("a FlowKit message for a run no scheduler dispatched is refused; with the run's key it is claimed")
    func unknownRun() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        var forged = CeleryMessage(task: "flowkit.example_sleep.sleep", queue: "q")
        forged.extraHeaders[FlowKitKeys.runHeader] = "manual__nope"
        var real = CeleryMessage(task: "flowkit.example_sleep.sleep", queue: "q")
        real.extraHeaders[FlowKitKeys.runHeader] = "manual__real"
        _ = try await r.command("SET", FlowKitKeys.run("manual__real"), "1")
        let cmds = KombuLayout.enqueueCommands(forged) + KombuLayout.enqueueCommands(real)
        try await r.run { s in _ = try s.pipeline(cmds) }
        let reply = try await claimReply(r, "q", n: 10, now: 1)
        #expect(try reply.messages.map { try CeleryMessage.decode($0.raw).id } == [real.id])
        #expect(reply.rejected == ["task `flowkit.example_sleep.sleep` of unknown run `manual__nope`: no scheduler of this Redis dispatched it"])
        #expect(try await deadList(r).count == 1)
    }

    @Test("the dead-letter list is capped: the newest entries stay")
    func deadLetterCap() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let n = DeadLetter.maxEntries + 25
        try await r.run { s in
            for chunk in stride(from: 0, to: n, by: 1000) {
                _ = try s.pipeline((chunk..<min(n, chunk + 1000)).map { ["LPUSH", "q", "garbage \($0)"] })
            }
        }
        let reply = try await claimReply(r, "q", n: n, now: 1)
        #expect(reply.rejected.count == n)
        #expect(try await r.command("LLEN", FlowKitKeys.deadLetter).int == DeadLetter.maxEntries)
        #expect(try await deadList(r).first?["message"] == .string("garbage \(n - 1)"))
    }

    @Test("dead-letter entries of the worker and scheduler are cut at a character boundary")
    func deadLetterEntryCut() throws {
        let payload = "a" + String(repeating: "€", count: DeadLetter.maxPayloadBytes)  // 3 bytes each, 1 byte off
        let cmds = DeadLetter.commands(["reason": "r"], payloadKey: "message", payload: payload)
        #expect(cmds[1] == ["LTRIM", FlowKitKeys.deadLetter, "0", String(DeadLetter.maxEntries - 1)])
        let entry = try JSONValue.parse(cmds[0][2])
        let kept = try #require(entry["message"]?.stringValue)
        #expect(kept.utf8.count <= DeadLetter.maxPayloadBytes && kept.utf8.count > DeadLetter.maxPayloadBytes - 3)
        #expect(kept.hasSuffix("€") && !kept.contains("\u{FFFD}"))
        #expect(entry["size"] == .int(payload.utf8.count) && entry["truncated"] == true && entry["reason"] == "r")
    }

    @Test("a claim whose reply is lost can be taken back at once by its claim key, once; a claim that never ran gives nothing")
    func recoverLostClaim() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let msgs = (0..<2).map { CeleryMessage(task: "t\($0)", queue: "q") }
        let cmds = msgs.flatMap(KombuLayout.enqueueCommands)
        try await r.run { s in _ = try s.pipeline(cmds) }
        let key = FlowKitKeys.claim("lost")
        // The claim runs, its reply goes nowhere.
        _ = try await r.run { s in try s.command(KombuLayout.claimCommand(queues: ["q"], count: 10, now: 1, claimKey: key)).orThrow() }
        #expect(try await r.command("HLEN", "unacked").int == 2)
        let back = try await r.run { s in KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: key)).orThrow()) }
        #expect(try Set(back.map { try CeleryMessage.decode($0.raw).id }) == Set(msgs.map(\.id)))
        #expect(try await r.run { s in KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: key)).orThrow()) }.isEmpty)
        #expect(try await r.run { s in KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: FlowKitKeys.claim("never"))).orThrow()) }.isEmpty)
        // An acknowledged message is not given back.
        let m2 = CeleryMessage(task: "t2", queue: "q")
        let c2 = KombuLayout.enqueueCommands(m2)
        try await r.run { s in _ = try s.pipeline(c2) }
        let key2 = FlowKitKeys.claim("acked")
        _ = try await r.run { s in try s.command(KombuLayout.claimCommand(queues: ["q"], count: 10, now: 1, claimKey: key2)).orThrow() }
        try await r.run { s in _ = try s.pipeline(KombuLayout.ackCommands(deliveryTag: m2.id)) }
        #expect(try await r.run { s in KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: key2)).orThrow()) }.isEmpty)
        // Nor one the visibility timeout restored and another worker claimed since.
        let m3 = CeleryMessage(task: "t3", queue: "q")
        let c3 = KombuLayout.enqueueCommands(m3)
        try await r.run { s in _ = try s.pipeline(c3) }
        let key3 = FlowKitKeys.claim("restored")
        _ = try await r.run { s in try s.command(KombuLayout.claimCommand(queues: ["q"], count: 10, now: 100, claimKey: key3)).orThrow() }
        _ = try await r.command("EVAL", KombuLayout.restoreScript, "2", "unacked", "unacked_index", "150", "100")
        _ = try await r.run { s in try s.command(KombuLayout.claimCommand(queues: ["q"], count: 10, now: 200)).orThrow() }
        #expect(try await r.command("HEXISTS", "unacked", m3.id).int == 1)
        #expect(try await r.run { s in KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: key3)).orThrow()) }.isEmpty)
    }

    @Test("unacknowledged claims older than the visibility timeout go back to their queue, unchanged")
    func restore() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let a = CeleryMessage(task: "a", queue: "q"), b = CeleryMessage(task: "b", queue: "q", priority: 6)
        try await r.run { s in _ = try s.pipeline(KombuLayout.enqueueCommands(a) + KombuLayout.enqueueCommands(b)) }
        let original = try await r.command("LRANGE", "q", "0", "-1").array?.compactMap(\.string)
        _ = try await claim(r, "q", n: 1, now: 100)
        _ = try await claim(r, "q", n: 1, now: 200)
        let restored = try await r.command("EVAL", KombuLayout.restoreScript, "2", "unacked", "unacked_index", "150", "100").int
        #expect(restored == 1)
        #expect(try await r.command("LRANGE", "q", "0", "-1").array?.compactMap(\.string) == original)
        #expect(try await r.command("HEXISTS", "unacked", a.id).int == 0)
        #expect(try await r.command("HEXISTS", "unacked", b.id).int == 1)
        // Acknowledged messages are never restored.
        try await r.run { s in _ = try s.pipeline(KombuLayout.ackCommands(deliveryTag: b.id)) }
        #expect(try await r.command("EVAL", KombuLayout.restoreScript, "2", "unacked", "unacked_index", "1000", "100").int == 0)
    }
}
