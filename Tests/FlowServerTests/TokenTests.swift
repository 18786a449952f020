import FlowKit
import FlowKitTesting
import FlowServer
import Foundation
import ProcessSupport
import Hummingbird
import PostgresClient
import Scheduler
import Testing

@Suite("API tokens: the configuration is the whole set; flowctl tokens are salted, revocable and expire", .serialized)
struct TokenTests {
    @Test("HMAC-SHA-256 matches RFC 4231; token texts parse only in FlowKit's form")
    func primitives() {
        // RFC 4231, test cases 1 and 2.
        #expect(SHA256.hexString(SHA256.hmac(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(SHA256.hexString(SHA256.hmac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // A key longer than a block is hashed first (test case 6).
        #expect(SHA256.hexString(SHA256.hmac(key: [UInt8](repeating: 0xaa, count: 131),
                                             message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        let a = APITokens.generate(), b = APITokens.generate()
        #expect(APITokens.parse(a.text)?.id == a.id)
        #expect(a.id != b.id && a.salt != b.salt && a.secretHash != b.secretHash)
        #expect(APITokens.hash(secret: APITokens.parse(a.text)!.secret, salt: a.salt) == a.secretHash)
        // The same secret under another salt hashes differently: no table of precomputed hashes helps.
        #expect(APITokens.hash(secret: "s", salt: a.salt) != APITokens.hash(secret: "s", salt: b.salt))
        for bad in ["", "fkt_", "fkt_abc_def", "admin-secret", a.text + "0", a.text.replacingOccurrences(of: "_", with: "-")] {
            #expect(APITokens.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("a token removed from the configuration stops working; nothing of it is stored")
    func configurationIsTheWholeSet() async throws {
        try await withAPI { (api: LiveAPI) async throws in
            // The same database, a second API process restarted with a new admin token only.
            let second = try await SecondAPI(api, tokens: [(.admin, "NEW-admin")], openReads: false)
            defer { second.stop() }
            let trigger = "/api/v1/flows/example_sleep/runs"
            #expect(try await second.request("POST", trigger, token: LiveAPI.admin, body: "{}").status == 401)
            #expect(try await second.request("GET", "/api/v1/flows", token: LiveAPI.reader).status == 401)
            #expect(try await second.request("POST", trigger, token: "NEW-admin", body: "{}").status == 201)
            // The first keeps its own set; neither learnt the other's.
            #expect(try await api.request("POST", trigger, token: "NEW-admin", body: "{}").status == 401)
            #expect(try await api.request("POST", trigger, token: LiveAPI.admin, body: "{}").status == 201)
            let stored = try await PGConnection(api.databaseURL, label: "t").run { s in try s.query("SELECT count(*) AS n FROM api_tokens").single().int("n") }
            #expect(stored == 0)
        }
    }

    @Test("flowctl tokens: create, use on every API, list without secrets, revoke within seconds; expiry")
    func lifecycle() async throws {
        try await withAPI(openReads: false, configure: { $0.tokenCacheSeconds = 0.5 }) { (api: LiveAPI) async throws in
            let second = try await SecondAPI(api, tokens: [], openReads: false)
            defer { second.stop() }
            func env(_ args: [String]) throws -> (status: Int32, output: String) {
                try ProcessRunner.runToCompletion(["/usr/bin/env", "FLOWKIT_DATABASE_URL=\(api.databaseURL)", try TestServers.flowctlPath()] + args)
            }
            let made = try env(["tokens", "create", "ci-bot", "--role", "admin"])
            #expect(made.status == 0, "\(made.output)")
            let token = try #require(made.output.split(separator: "\n").first { $0.hasPrefix("fkt_") }.map(String.init))
            let trigger = "/api/v1/flows/example_sleep/runs"
            #expect(try await api.request("POST", trigger, token: token, body: #"{"conf": {"seconds": 0}}"#).status == 201)
            #expect(try await second.request("POST", trigger, token: token, body: #"{"conf": {"seconds": 0}}"#).status == 201)
            // A changed secret or a bare id is refused.
            var forged = Array(token); forged[forged.count - 1] = forged.last == "0" ? "1" : "0"
            #expect(try await api.request("GET", "/api/v1/flows", token: String(forged)).status == 401)
            // The same name again is refused while the first lives.
            let twice = try env(["tokens", "create", "ci-bot"])
            #expect(twice.status == 1 && twice.output.contains("already named `ci-bot`"), "\(twice.output)")
            // The database keeps the salt and the HMAC, never the token or its secret.
            let row = try await PGConnection(api.databaseURL, label: "t").run { s in
                try s.query("SELECT row_to_json(t)::text AS j FROM api_tokens t").single().string("j")
            }
            #expect(!row.contains(String(token.split(separator: "_")[2])))
            let list = try env(["tokens", "list", "--json"])
            let listed = try JSONValue.parse(list.output)["tokens"]?.arrayValue ?? []
            #expect(listed.count == 1 && listed[0]["name"] == "ci-bot" && listed[0]["role"] == "admin")
            #expect(!list.output.contains(String(token.split(separator: "_")[2])))
            // Revoked: both APIs refuse it within seconds (the cache is 0.5 s here, 5 s by default).
            let revoked = try env(["tokens", "revoke", "ci-bot"])
            #expect(revoked.status == 0, "\(revoked.output)")
            try await eventually("the revoked token to be refused by both APIs", timeout: 10) {
                let a = try await api.request("POST", trigger, token: token, body: "{}").status
                let b = try await second.request("POST", trigger, token: token, body: "{}").status
                return a == 401 && b == 401
            }
            let again = try env(["tokens", "revoke", "ci-bot"])
            #expect(again.status == 1 && again.output.contains("no token has the id or name `ci-bot`"), "\(again.output)")
            #expect(try env(["tokens", "list"]).output.contains("no live tokens"))
            #expect(try env(["tokens", "list", "--all"]).output.contains("revoked"))
            // An expiring read token: reads, cannot write, then stops.
            let short = try env(["tokens", "create", "viewer", "--expires-in", "3s"])
            let reader = try #require(short.output.split(separator: "\n").first { $0.hasPrefix("fkt_") }.map(String.init))
            #expect(try await api.request("GET", "/api/v1/flows", token: reader).status == 200)
            #expect(try await api.request("POST", trigger, token: reader, body: "{}").status == 403)
            try await eventually("the expired token to be refused", timeout: 15) {
                try await api.request("GET", "/api/v1/flows", token: reader).status == 401
            }
            #expect(try env(["tokens", "create", "x", "--expires-in", "soon"]).status == 2)
            #expect(try env(["tokens", "create", "x", "--role", "owner"]).status == 2)
        }
    }
}

/// Another API process on the same database and Redis, with its own configuration.
final class SecondAPI: @unchecked Sendable {
    let base: String
    let task: Task<Void, any Error>

    init(_ first: LiveAPI, tokens: [(role: APIConfig.Role, token: String)], openReads: Bool = true) async throws {
        let port = try freePort()
        base = "http://127.0.0.1:\(port)"
        var config = APIConfig(tokens: tokens, openReads: openReads)
        config.tokenCacheSeconds = 0.5
        let api = FlowAPI(store: SchedulerStore(db: PGPool(first.databaseURL, size: 2)),
                          broker: SchedulerBroker(config: first.redisConfig, consumer: "api-2"), config: config)
        let app = api.application(host: "127.0.0.1", port: port)
        task = Task { try await app.run() }
        let b = base
        try await eventually("the second API to answer") {
            (try? await LiveAPI.request(base: b, "GET", "/health").status) != nil
        }
    }

    func stop() { task.cancel() }

    func request(_ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> LiveAPI.Reply {
        try await LiveAPI.request(base: base, method, path, token: token, body: body)
    }
}
