import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import RedisClient
import Testing

@Suite("Dead letters", .serialized)
struct DeadLetterTests {
    @Test("what nobody could use is listed by GET /api/v1/dead-letters (admin only, paged) and flowctl dead-letters, with who and why")
    func listed() async throws {
        let api = try await LiveAPI()
        do {
            let r = RedisConnection(api.redisConfig)
            _ = try await r.command("LPUSH", "default", "not json at all")
            let unknown = CeleryMessage(task: "nobody.knows", args: [], queue: "default")
            _ = try await r.run { s in try s.pipeline(KombuLayout.enqueueCommands(unknown)) }
            try await eventually("both dead-lettered") { (try await r.command("LLEN", FlowKitKeys.deadLetter).int ?? 0) == 2 }

            let page = try await api.request("GET", "/api/v1/dead-letters?limit=10", token: LiveAPI.admin)
            #expect(page.status == 200 && page.json["total"] == 2 && page.json["capacity"] == 10000)
            let entries = page.json["entries"]?.arrayValue ?? []
            #expect(entries.count == 2)
            #expect(entries.contains { $0["worker"] == "api-test-worker" && $0["reason"]?.stringValue?.contains("unknown task `nobody.knows`") == true }, "\(entries)")
            #expect(entries.contains { ($0["message"]?.stringValue ?? $0["raw"]?.stringValue ?? "").contains("not json at all") }, "\(entries)")
            let second = try await api.request("GET", "/api/v1/dead-letters?limit=1&offset=1", token: LiveAPI.admin).json
            #expect(second["entries"]?.arrayValue == [entries[1]])
            #expect(try await api.request("GET", "/api/v1/dead-letters", token: LiveAPI.reader).status == 403)
            let bad = try await api.request("GET", "/api/v1/dead-letters?offset=-1", token: LiveAPI.admin)
            #expect(bad.status == 400 && bad.json["message"]?.stringValue?.contains("`offset` must be a whole number from 0") == true)

            let shown = try flowctl(["dead-letters"], api: api)
            #expect(shown.status == 0 && shown.output.contains("unknown task `nobody.knows`") && shown.output.contains("2 of 2"), "\(shown.output)")
        } catch { await api.stop(); throw error }
        await api.stop()
    }
}
