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
            let list = try APIClient.typed(v, as: ConnectionList.self, answering: "GET /api/v1/connections").connections
            print(table(["CONNECTION", "TYPE", "HOST", "PORT", "LOGIN", "SCHEMA", "UPDATED", "DESCRIPTION"], list.map { c in
                [c.name, c.type, c.host ?? "-", c.port.map(String.init) ?? "-", c.login ?? "-", c.schema ?? "-", shortTime(c.updatedAt), c.description]
            }))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a connection, its secret masked.")
        @Argument var name: String
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let path = "/api/v1/connections/\(APIClient.segment(name))"
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).get(path)
            if json { printJSON(raw); return }
            let c = try APIClient.typed(raw, as: ConnectionRecord.self, answering: "GET \(path)")
            print("\(name): \(c.uri)")
            print("  updated \(shortTime(c.updatedAt)) by \(c.updatedBy ?? "-")\(c.description.isEmpty ? "" : "  — \(c.description)")")
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
            let path = "/api/v1/connections/\(APIClient.segment(name))"
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).write("PUT", path, body: ConnectionBody(uri: value, description: description))
            let c = try APIClient.typed(raw, as: ConnectionRecord.self, answering: "PUT \(path)")
            print("connection \(name) set: \(c.uri)")
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
            let list = try APIClient.typed(v, as: VariableList.self, answering: "GET /api/v1/variables").variables
            print(table(["VARIABLE", "VALUE", "UPDATED", "DESCRIPTION"], list.map { x in
                [x.key, x.value.count > 60 ? String(x.value.prefix(57)) + "…" : x.value, shortTime(x.updatedAt), x.description]
            }))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a variable's value.")
        @Argument var key: String
        @Flag(help: "Print the whole record as JSON.") var json = false
        func run() async throws {
            let path = "/api/v1/variables/\(APIClient.segment(key))"
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get(path)
            if json { printJSON(v); return }
            print(try APIClient.typed(v, as: VariableRecord.self, answering: "GET \(path)").value)
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
            _ = try await APIClient(settings: try Settings.fromEnvironment())
                .write("PUT", "/api/v1/variables/\(APIClient.segment(key))", body: VariableBody(value: .string(text), description: description))
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
