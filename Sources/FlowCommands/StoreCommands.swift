import ArgumentParser
import FlowKit
import Foundation
import PostgresClient
import Scheduler

/// `flowctl connections`: the connections tasks use, stored sealed in PostgreSQL (Airflow's
/// `airflow connections`). A connection's secret is never shown again once set.
struct ConnectionsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connections",
        abstract: "List, set and delete connections (stored encrypted; sent to the tasks that declare them).",
        discussion: """
            A task declares what it uses (`connections: ["warehouse"]`; SQL, S3 and sensor tasks name theirs already); the \
            scheduler sends it in the task's message, sealed with FLOWKIT_SECRET_KEY, so workers need no database \
            credentials. A worker's own FLOWKIT_CONN_<NAME> wins over the stored one.
            """,
        subcommands: [List.self, Get.self, Set.self, Delete.self])

    struct List: AsyncParsableCommand {
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/connections")
            if json { printJSON(v); return }
            print(table(["CONNECTION", "TYPE", "HOST", "PORT", "LOGIN", "SCHEMA", "UPDATED", "DESCRIPTION"], (v["connections"]?.arrayValue ?? []).map { c in
                [c["name"]?.stringValue ?? "", c["type"]?.stringValue ?? "", c["host"]?.stringValue ?? "-", c["port"]?.intValue.map(String.init) ?? "-",
                 c["login"]?.stringValue ?? "-", c["schema"]?.stringValue ?? "-", shortTime(c["updatedAt"]?.stringValue), c["description"]?.stringValue ?? ""]
            }))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a connection, its secret masked.")
        @Argument var name: String
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let c = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/connections/\(APIClient.segment(name))")
            if json { printJSON(c); return }
            print("\(name): \(c["uri"]?.stringValue ?? "")")
            print("  updated \(shortTime(c["updatedAt"]?.stringValue)) by \(c["updatedBy"]?.stringValue ?? "-")\(c["description"]?.stringValue.map { $0.isEmpty ? "" : "  — \($0)" } ?? "")")
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or replace a connection.")
        @Argument var name: String
        @Option(help: "The connection's URL, e.g. postgresql://user:password@host:5432/db; `-` reads it from stdin (kept out of shell history).")
        var uri: String
        @Option(help: "What the connection is for.") var description: String?
        func run() async throws {
            var value = uri
            if uri == "-" {
                value = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespaces)
                guard !value.isEmpty else { throw CLIError("--uri -: stdin held no URL", code: 2) }
            }
            var body: [String: JSONValue] = ["uri": .string(value)]
            if let description { body["description"] = .string(description) }
            let c = try await APIClient(settings: try Settings.fromEnvironment()).put("/api/v1/connections/\(APIClient.segment(name))", .object(body))
            print("connection \(name) set: \(c["uri"]?.stringValue ?? "")")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a connection (tries already sent keep what they got).")
        @Argument var name: String
        func run() async throws {
            _ = try await APIClient(settings: try Settings.fromEnvironment()).delete("/api/v1/connections/\(APIClient.segment(name))")
            print("deleted connection \(name)")
        }
    }
}

/// `flowctl variables`: values tasks read with `ctx.variable` (Airflow's `airflow variables`).
struct VariablesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "variables",
        abstract: "List, get, set and delete variables (stored encrypted; sent to the tasks that declare them).",
        discussion: "A task declares what it reads (`variables: [\"threshold\"]`) and reads it with ctx.variable(\"threshold\"). A worker's own FLOWKIT_VAR_<NAME> wins.",
        subcommands: [List.self, Get.self, Set.self, Delete.self])

    struct List: AsyncParsableCommand {
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/variables")
            if json { printJSON(v); return }
            print(table(["VARIABLE", "VALUE", "UPDATED", "DESCRIPTION"], (v["variables"]?.arrayValue ?? []).map { x in
                let value = x["value"]?.stringValue ?? ""
                return [x["key"]?.stringValue ?? "", value.count > 60 ? String(value.prefix(57)) + "…" : value,
                        shortTime(x["updatedAt"]?.stringValue), x["description"]?.stringValue ?? ""]
            }))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a variable's value.")
        @Argument var key: String
        @Flag(help: "Print the whole record as JSON.") var json = false
        func run() async throws {
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/variables/\(APIClient.segment(key))")
            if json { printJSON(v); return }
            print(v["value"]?.stringValue ?? "")
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or replace a variable.")
        @Argument var key: String
        @Argument(help: "The value; `-` reads it from stdin.") var value: String
        @Flag(help: "Check that the value is JSON (tasks read it with ctx.jsonVariable).") var json = false
        @Option(help: "What the variable is for.") var description: String?
        func run() async throws {
            var text = value
            if value == "-" { text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
            if json {
                do { _ = try JSONValue.parse(text) } catch { throw CLIError("--json: the value is not JSON: \(error)", code: 2) }
            }
            var body: [String: JSONValue] = ["value": .string(text)]
            if let description { body["description"] = .string(description) }
            _ = try await APIClient(settings: try Settings.fromEnvironment()).put("/api/v1/variables/\(APIClient.segment(key))", .object(body))
            print("variable \(key) set")
        }
    }

    struct Delete: AsyncParsableCommand {
        @Argument var key: String
        func run() async throws {
            _ = try await APIClient(settings: try Settings.fromEnvironment()).delete("/api/v1/variables/\(APIClient.segment(key))")
            print("deleted variable \(key)")
        }
    }
}

/// `flowctl secret-key`: make a key for FLOWKIT_SECRET_KEY, and seal what is stored again
/// after a new key was put first.
struct SecretKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret-key", abstract: "Make and rotate the key that seals stored connections and variables.",
        discussion: """
            Rotation: put the new key first on every API and worker (FLOWKIT_SECRET_KEY=NEW,OLD) and restart them, run \
            `flowctl secret-key rotate` (needs FLOWKIT_DATABASE_URL and the same FLOWKIT_SECRET_KEY), then drop OLD.
            """,
        subcommands: [New.self, Rotate.self])

    struct New: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a new random key (32 bytes, base64).")
        func run() async throws { print(SecretKeyring.newKey()) }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Seal every stored connection and variable again with the first key of FLOWKIT_SECRET_KEY.")
        func run() async throws {
            guard let keyring = try SecretKeyring.fromEnvironment() else {
                throw CLIError("\(SecretKeyring.variable) is not set: give it NEW,OLD (the new key first)", code: 2)
            }
            let settings = try Settings.fromEnvironment()
            let store = SchedulerStore(db: PGPool(try settings.databaseOrLocal(), size: 1, label: "secret-key-rotate"))
            let r = try await WriteActor.$current.withValue(localActor()) { try await store.resealSecrets(keyring: keyring, now: Date()) }
            print("sealed again with key \(keyring.primaryKeyId): \(r.connections) connection\(r.connections == 1 ? "" : "s"), \(r.variables) variable\(r.variables == 1 ? "" : "s")")
        }
    }
}
