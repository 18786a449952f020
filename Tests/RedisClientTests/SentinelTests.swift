import FlowKitTesting
import Foundation
import RedisClient
import Testing

/// Redis Sentinel: the URL form, and a connection that follows its master through a failover,
/// against a real master, two replicas and three sentinels (scripts/sentinel.sh, started by
/// `make test`).
@Suite("Redis Sentinel", .serialized)
struct SentinelTests {
    @Test("redis+sentinel:// URLs: sentinels with their ports, the master's name, database, credentials; bad ones are named")
    func urls() throws {
        let a = try RedisConfig(url: "redis+sentinel://:pw%40x@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3?sentinel_password=sp")
        #expect(a.sentinels == [.init(host: "10.0.0.1", port: 26379), .init(host: "10.0.0.2", port: 26379), .init(host: "::1", port: 26380)])
        #expect(a.masterName == "mymaster" && a.database == 3 && a.password == "pw@x" && a.username == nil && a.sentinelPassword == "sp")
        #expect(a.displayName == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,[::1]:26380/mymaster/3")
        let b = try RedisConfig(url: "redis+sentinel://flowkit:pw@s1:5000/m")
        #expect(b.username == "flowkit" && b.password == "pw" && b.database == 0 && b.sentinels == [.init(host: "s1", port: 5000)])
        for (url, says) in [("redis+sentinel://s1:26379", "no master name"), ("redis+sentinel:///m", "no sentinel"),
                            ("redis+sentinel://s1:port/m", "has no valid port"), ("redis+sentinel://s1/m/x", "is not a number")] {
            let e = #expect(throws: RedisError.self) { try RedisConfig(url: url) }
            #expect(e?.message.contains(says) == true, "\(url): \(String(describing: e))")
        }
    }

    @Test("a connection asks the sentinels for the master, checks its ROLE, and after SENTINEL FAILOVER finds the promoted replica, with the data")
    func followsAFailover() async throws {
        let url = try TestServers.env("FLOWKIT_TEST_SENTINEL_URL")
        let config = try RedisConfig(url: url)
        let r = RedisConnection(config, label: "sentinel-test")
        let key = "sentinel-test-\(UUID().uuidString)"
        try await r.run { s in try s.command(["SET", key, "before"]).orThrow() }
        let before = try #require(r.masterAddress)
        #expect(r.lastMasterChange == nil)   // reaching the first master is no failover
        // Wait until a replica has the key, so that the failover cannot lose it.
        try await r.run { s in _ = try s.command(["WAIT", "2", "2000"]).orThrow() }
        let sentinel = try RedisConfig(url: "redis://\(config.sentinels[0].host):\(config.sentinels[0].port)")
        let failedOverAt = ContinuousClock.now
        try await RedisConnection(sentinel).run { s in try s.command(["SENTINEL", "FAILOVER", "flowkit"]).orThrow() }
        // Writes fail (the old master demoted: READONLY, or its clients killed) until the
        // connection finds the new master; then they go on, and nothing written before is lost.
        var failures = 0
        let deadline = Date().addingTimeInterval(30)
        var after: String?
        while Date() < deadline {
            do {
                try await r.run { s in try s.command(["SET", "\(key)-after", "x"]).orThrow() }
                if r.masterAddress != before { after = r.masterAddress; break }
            } catch { failures += 1 }
            try await Task.sleep(for: .milliseconds(100))
        }
        let moved = try #require(after, "the connection never moved off \(before)")
        #expect(moved != before)
        // It moved as soon as the sentinels named the new master, not when the old one was
        // demoted (up to 10 s later, discarding whatever it took meanwhile): the old one still
        // says master. A connection that waited for an error would only move after that.
        let old = before.split(separator: ":")
        let oldRole = try await RedisConnection(RedisConfig(url: "redis://\(old[0]):\(old[1])")).run { s in try s.command(["ROLE"]) }.arrayFirst
        #expect(oldRole == "master", "the old master was demoted before the connection moved")
        // What the leader's unacked restorer reads to give the workers time to refresh their claims.
        let changed = try #require(r.lastMasterChange)
        #expect(changed > failedOverAt)
        #expect(try await r.run { s in try s.command(["GET", key]).string } == "before")
        #expect(try await r.run { s in try s.command(["ROLE"]) }.arrayFirst == "master")
        print("sentinel: master \(before) → \(moved) after \(failures) failed writes, \(ContinuousClock.now - failedOverAt) after SENTINEL FAILOVER (old one's role then: \(oldRole ?? "?"))")
    }
}

extension RedisValue {
    var arrayFirst: String? { if case .array(let a) = self { return a.first?.string }; return nil }
}
