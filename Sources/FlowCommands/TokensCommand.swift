import ArgumentParser
import FlowKit
import FlowServer
import Foundation
import PostgresClient
import Scheduler

/// `flowctl tokens`: API tokens that can be revoked and expire. Works on the database
/// (FLOWKIT_DATABASE_URL), like `flowctl migrate`: making the first token needs no API token.
struct TokensCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokens", abstract: "Create, list and revoke API tokens (on the database: needs FLOWKIT_DATABASE_URL).",
        subcommands: [Create.self, List.self, Revoke.self])

    static func store() throws -> SchedulerStore {
        SchedulerStore(db: PGPool(try Settings.fromEnvironment().databaseOrLocal(), size: 1, label: "tokens"))
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a token; prints it once (only its salted HMAC is kept).")
        @Argument(help: "A name for the token, e.g. the dashboard or the person it is for.") var name: String
        @Option(help: "read, admin, or events (may only post asset events).") var role: String = "read"
        @Option(help: "Expire after this long: 90m, 12h, 30d (default: never).") var expiresIn: String?
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            guard let role = APIConfig.Role(rawValue: role) else { throw CLIError("--role must be read, admin or events, not `\(role)`", code: 2) }
            guard !name.isEmpty, name.count <= 200 else { throw CLIError("the name must have 1 to 200 characters", code: 2) }
            let now = Date()
            let expires = try expiresIn.map { now.addingTimeInterval(try parseDuration($0)) }
            let t = APITokens.generate()
            let store = try TokensCommand.store()
            let record = try await WriteActor.$current.withValue(localActor()) {
                try await store.createAPIToken(id: t.id, name: name, role: role.rawValue, salt: t.salt,
                                               secretHash: t.secretHash, expiresAt: expires, now: now)
            }
            if json {
                var v = tokenJSON(record)
                v["token"] = .string(t.text)
                printJSON(.object(v))
            } else {
                print(t.text)
                let until = expires.map { "until \(Instant.format($0, fractionDigits: 0))" } ?? "with no expiry"
                FileHandle.standardError.write(Data("""
                    made \(role.rawValue) token \(record.id) (\(name)) \(until); it is shown only now.
                    use it as FLOWKIT_API_TOKEN, or `Authorization: Bearer …`; revoke it with `flowctl tokens revoke \(record.id)`

                    """.utf8))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List live tokens (never their secrets).")
        @Flag(help: "Include revoked and expired tokens.") var all = false
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let now = Date()
            let tokens = try await TokensCommand.store().apiTokens(all: all, now: now)
            if json { printJSON(["tokens": .array(tokens.map { .object(tokenJSON($0)) })]); return }
            func t(_ d: Date?) -> String { d.map { Instant.format($0, fractionDigits: 0) } ?? "-" }
            print(table(["ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED"], tokens.map { r in
                let state = r.revokedAt != nil ? "revoked" : r.isLive(at: now) ? "live" : "expired"
                return [r.id, r.name, r.role, state, t(r.createdAt), t(r.expiresAt), t(r.lastUsedAt)]
            }))
            if tokens.isEmpty { print(all ? "(no tokens)" : "(no live tokens; --all shows revoked and expired ones)") }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id or name; every API stops taking it within seconds.")
        @Argument(help: "The token's id or name.") var token: String

        func run() async throws {
            do {
                let store = try TokensCommand.store()
                let r = try await WriteActor.$current.withValue(localActor()) { try await store.revokeAPIToken(token, now: Date()) }
                print("revoked token \(r.id) (\(r.name))")
            } catch let e as NotFound {
                throw CLIError(e.message)
            } catch let e as StateConflict {
                throw CLIError(e.message)
            }
        }
    }
}

func tokenJSON(_ r: APITokenRecord) -> [String: JSONValue] {
    var v: [String: JSONValue] = ["id": .string(r.id), "name": .string(r.name), "role": .string(r.role),
                                  "createdAt": .string(Instant.format(r.createdAt, fractionDigits: 3))]
    for (k, d) in [("expiresAt", r.expiresAt), ("revokedAt", r.revokedAt), ("lastUsedAt", r.lastUsedAt)] {
        v[k] = d.map { .string(Instant.format($0, fractionDigits: 3)) } ?? .null
    }
    return v
}

/// `90s`, `90m`, `12h`, `30d`, `2w` in seconds.
func parseDuration(_ text: String) throws -> Double {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]
    guard let unit = text.last, let scale = units[unit], let n = Double(text.dropLast()), n > 0, n.isFinite else {
        throw CLIError("`\(text)` is not a duration such as 90m, 12h or 30d", code: 2)
    }
    return n * scale
}

/// Who runs a database tool of flowctl, for the audit log: `flowctl@HOST (USER)`.
func localActor() -> String {
    let user = ProcessInfo.processInfo.environment["USER"] ?? ProcessInfo.processInfo.environment["LOGNAME"] ?? "uid \(getuid())"
    return "flowctl@\(ProcessInfo.processInfo.hostName) (\(user))"
}
