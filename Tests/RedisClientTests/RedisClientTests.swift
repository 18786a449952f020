import FlowKitTesting
import Foundation
import RedisClient
import Testing

@Suite("hiredis binding")
struct RedisClientTests {
    @Test("URLs: host, port, password, ACL user, database, unix sockets")
    func urls() throws {
        let a = try RedisConfig(url: "redis://127.0.0.1:6380/3")
        #expect(a.host == "127.0.0.1" && a.port == 6380 && a.database == 3 && a.password == nil)
        let b = try RedisConfig(url: "redis://:s3cr%40t@redis.internal/0")
        #expect(b.password == "s3cr@t" && b.username == nil && b.host == "redis.internal" && b.port == 6379)
        let c = try RedisConfig(url: "redis://flowkit:pw@10.0.0.5:6379/2")
        #expect(c.username == "flowkit" && c.password == "pw" && c.database == 2)
        let d = try RedisConfig(url: "unix:///var/run/redis/redis.sock?db=4&password=pw")
        #expect(d.unixSocket == "/var/run/redis/redis.sock" && d.database == 4 && d.password == "pw")
        #expect(throws: RedisError.self) { try RedisConfig(url: "http://example.com") }
        #expect(throws: RedisError.self) { try RedisConfig(url: "redis://host/notanumber") }
    }

    @Test("pipelines answer in order; error replies stay values, not thrown")
    func pipeline() async throws {
        let r = RedisConnection(try await TestServers.freshRedis())
        let replies = try await r.run { s in
            try s.pipeline([["SET", "k", "v é"], ["GET", "k"], ["INCR", "k"], ["LRANGE", "none", "0", "-1"], ["GET", "missing"]])
        }
        #expect(replies[0] == .status("OK"))
        #expect(replies[1] == .string("v é"))
        if case .error(let m) = replies[2] { #expect(m.contains("not an integer")) } else { Issue.record("expected an error reply") }
        #expect(replies[3] == .array([]))
        #expect(replies[4] == .null)
    }

    @Test("a password-protected, ACL-user connection authenticates and selects its database")
    func aclUser() async throws {
        let base = try await TestServers.freshRedis()
        let admin = RedisConnection(base)
        try await admin.run { s in
            try s.command(["ACL", "SETUSER", "flowkit-test", "on", ">pw", "~*", "&*", "+@all"]).orThrow()
        }
        var config = base
        config.username = "flowkit-test"
        config.password = "pw"
        config.database = 5
        let r = RedisConnection(config)
        _ = try await r.command("SET", "only-in-5", "x")
        #expect(try await admin.command("EXISTS", "only-in-5").int == 0)
        var wrong = config
        wrong.password = "nope"
        await #expect(throws: RedisError.self) { _ = try await RedisConnection(wrong).command("PING") }
        _ = try await admin.command("ACL", "DELUSER", "flowkit-test")
    }
}
