import FlowKit
import FlowKitTesting
import Flows
import Foundation
import PostgresClient
import Testing
@testable import WorkerRuntime
import Scheduler

/// A copy of the example project with a model that fails at run time and one whose test fails.
let brokenDbtProject: URL = {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-dbt-tests-\(getpid())")
    try? FileManager.default.removeItem(at: dir)
    try? FileManager.default.createDirectory(at: dir.appendingPathComponent("models"), withIntermediateDirectories: true)
    let files = [
        "dbt_project.yml": "name: broken\nversion: \"1.0\"\nconfig-version: 2\nprofile: flowkit_broken\nmodel-paths: [\"models\"]\n",
        "profiles.yml": """
            flowkit_broken:
              target: dev
              outputs:
                dev:
                  type: postgres
                  host: "{{ env_var('FLOWKIT_CONN_WAREHOUSE_HOST') }}"
                  port: "{{ env_var('FLOWKIT_CONN_WAREHOUSE_PORT') | as_number }}"
                  user: "{{ env_var('FLOWKIT_CONN_WAREHOUSE_USER') }}"
                  password: "{{ env_var('FLOWKIT_CONN_WAREHOUSE_PASSWORD') }}"
                  dbname: "{{ env_var('FLOWKIT_CONN_WAREHOUSE_DBNAME') }}"
                  schema: dbt_broken
                  threads: 1
            """,
        "models/ok.sql": "select 1 as id union all select 1 as id\n",
        // A table, so that dbt evaluates it (a view would be created without running it).
        "models/divides.sql": "{{ config(materialized='table') }}\nselect 1 / (select count(*) - count(*) from {{ ref('ok') }}) as boom\n",
        "models/schema.yml": "version: 2\nmodels:\n  - name: ok\n    columns:\n      - name: id\n        data_tests: [unique]\n",
    ]
    for (name, text) in files { try? Data(text.utf8).write(to: dir.appendingPathComponent(name)) }
    return dir
}()

let dbtChecks = Flow("dbt_checks") { f in
    let ok = f.dbt("build_ok", project: brokenDbtProject.path, command: .build, select: ["ok"])
    // After `ok` exists (its test fails, so whatever its outcome).
    f.dbt("run_divides", project: brokenDbtProject.path, command: .run, select: ["divides"], after: [ok], triggerRule: .allDone)
}

@Suite("dbt tasks end to end", .serialized)
struct DbtTaskEndToEndTests {
    @Test("example_dbt_models: a task per model and per model's tests, wired by the manifest, all successful; dbt's failures name the model or test")
    func dbtModels() async throws {
        try await withSystem(flows: allFlows + [dbtChecks], workers: 0) { sys in
            let home = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-dbt-home-\(UUID().uuidString)")
            setenv("FLOWKIT_HOME", home.path, 1)
            setenv("FLOWKIT_CONN_WAREHOUSE", sys.url, 1)
            defer { unsetenv("FLOWKIT_HOME"); try? FileManager.default.removeItem(at: home) }
            sys.startWorker("w1")

            let run = try await sys.trigger("example_dbt_models")
            #expect(try await sys.waitForRun(run, timeout: 600) == "success")
            let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
            #expect(Set(tis.keys) == ["marts.cities", "marts.province_population", "marts.province_population.test",
                                      "marts.province_share", "marts.province_share.test"])
            #expect(tis.values.allSatisfy { $0.state == "success" })
            #expect(tis["marts.cities"]?.result == ["models": 0, "tests": 0, "seeds": 1, "failed": [], "cities": 10])
            #expect(tis["marts.province_population"]?.result == ["models": 1, "tests": 0, "seeds": 0, "failed": [], "province_population": 3])
            #expect(tis["marts.province_population.test"]?.result == ["models": 0, "tests": 3, "seeds": 0, "failed": []])
            #expect(tis["marts.province_share.test"]?.result == ["models": 0, "tests": 3, "seeds": 0, "failed": []])
            // The order is the manifest's: a model after the tests of the model it reads.
            let pop = try #require(tis["marts.province_population.test"]?.endedAt), share = try #require(tis["marts.province_share"]?.startedAt)
            #expect(share >= pop)
            let conn = PGConnection(sys.url, label: "test-sql")
            defer { conn.close() }
            let rows = try await conn.run { s in try s.query("SELECT sum(share_pct)::float8 AS total FROM example_dbt.province_share").first?.doubleOrNull("total") }
            #expect(abs((rows ?? 0) - 100) < 0.1)

            let checks = try await sys.trigger("dbt_checks")
            #expect(try await sys.waitForRun(checks, timeout: 600) == "failed")
            let c = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: checks).map { ($0.taskId, $0) })
            let unique = try #require(c["build_ok"]?.error)
            #expect(unique.contains("test `unique_ok_id") && unique.contains("failed"))
            let divides = try #require(c["run_divides"]?.error)
            #expect(divides.contains("model `divides` errored") && divides.contains("division by zero") && divides.contains("compiled SQL: /"), "\(divides)")
            let log = try await sys.store.logs(runId: checks, taskId: "run_divides", tryNumber: 1, after: 0).lines.map(\.line).joined(separator: "\n")
            #expect(log.contains("dbt: run --project-dir"))
        }
    }
}
