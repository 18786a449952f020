import FlowKit
import Foundation
import Testing

@Suite("SQL scripts: statements and bound templates")
struct SQLScriptTests {
    let values = SQLScript.values(runId: "manual__1", logicalDate: Date(timeIntervalSince1970: 1_764_720_000),   // 2025-12-03T00:00:00Z
                                  dataIntervalStart: Date(timeIntervalSince1970: 1_764_633_600), dataIntervalEnd: Date(timeIntervalSince1970: 1_764_720_000),
                                  params: ["n": 3, "name": "x'); DROP TABLE victims; --", "none": .null, "flag": true])

    @Test("a script splits at top-level semicolons only: not inside quotes, identifiers, dollar quotes or comments")
    func split() {
        let script = """
            SELECT 'a;b' AS "c;d"; -- one; two
            DO $body$ BEGIN PERFORM 1; END $body$;
            /* x; /* nested; */ y; */ SELECT $1::int;
            ;  -- only a comment here;
            """
        let st = SQLScript.statements(script).map { $0.text.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(st.count == 3)
        #expect(st[0] == "SELECT 'a;b' AS \"c;d\"")
        #expect(st[1] == "-- one; two\nDO $body$ BEGIN PERFORM 1; END $body$")
        #expect(st[2].hasSuffix("SELECT $1::int"))
    }

    @Test("templates become numbered parameters, one per distinct name; a conf value never reaches the text")
    func binding() throws {
        let b = try SQLScript.bind("SELECT {{ params.name }}, {{ ds }}, {{params.n}}::int, {{ ds }} -- {{ not_bound }}", values: values, params: ["n", "name", "none", "flag"])
        #expect(b.sql == "SELECT $1, $2, $3::int, $2 -- {{ not_bound }}")
        #expect(b.values == ["x'); DROP TABLE victims; --", "2025-12-03", "3"])
        #expect(!b.sql.contains("DROP"))
        let lit = try SQLScript.bind("WHERE day = '{{ ds }}' AND tag = 'day {{ ds_nodash }} of ''{{ run_id }}'''", values: values, params: [])
        #expect(lit.sql == "WHERE day = $1 AND tag = ('day ' || $2 || ' of ''' || $3 || '''')")
        #expect(lit.values == ["2025-12-03", "20251203", "manual__1"])
        let null = try SQLScript.bind("SELECT {{ params.none }} IS NULL, {{ params.flag }}", values: values, params: ["none", "flag"])
        #expect(null.values == [nil, "true"])
        #expect(values["logical_date"] == "2025-12-03T00:00:00+00:00")
        #expect(values["data_interval_start"] == "2025-12-02T00:00:00+00:00")
    }

    @Test("an unknown name fails naming it and the known ones; a template where no value may stand is refused")
    func refusals() {
        #expect(throws: TaskError.self) { try SQLScript.bind("SELECT {{ dss }}", values: values, params: []) }
        do { _ = try SQLScript.bind("SELECT {{ dss }}", values: values, params: []) } catch {
            #expect("\(error)".contains("`dss`") && "\(error)".contains("ds_nodash") && "\(error)".contains("params.NAME"))
        }
        do { _ = try SQLScript.bind("SELECT {{ params.m }}", values: values, params: ["n", "name"]) } catch {
            #expect("\(error)".contains("no param `m`") && "\(error)".contains("params.n, params.name"))
        }
        #expect(throws: TaskError.self) { try SQLScript.bind("SELECT 1 AS \"{{ ds }}\"", values: values, params: []) }
        #expect(throws: TaskError.self) { try SQLScript.bind("DO $$ BEGIN RAISE NOTICE '{{ ds }}'; END $$", values: values, params: []) }
    }

    @Test("an error position in the bound statement maps back to the line and column as written")
    func positions() throws {
        let script = "SELECT 1;\nSELECT {{ params.name }},\n  {{ ds }} + FROM t"
        let st = SQLScript.statements(script)
        let b = try SQLScript.bind(st[1].text, values: values, params: ["name"])
        // PostgreSQL would report `FROM` at this position (1-based) of the bound text.
        let pos = Array(b.sql.unicodeScalars).indices.first { String(String.UnicodeScalarView(Array(b.sql.unicodeScalars)[$0...])).hasPrefix("FROM") }! + 1
        let (line, column) = SQLScript.lineAndColumn(script, offset: st[1].offset + b.origin[pos - 1])
        #expect(line == 3 && column == 14)
    }

    @Test("a copy's file path takes templates as text; the definition of a SQL task carries its statements")
    func pathsAndDefinitions() throws {
        #expect(try SQLScript.render("data/{{ ds_nodash }}/in.csv", values: values, params: []) == "data/20251203/in.csv")
        #expect(throws: TaskError.self) { try SQLScript.render("data/{{ params.none }}.csv", values: values, params: ["none"]) }
        let flow = Flow("sql_def") { f in
            f.sql("q", connection: "warehouse", sql: "SELECT 1")
            f.sql("load", connection: "warehouse", copyFrom: .file("/tmp/x.csv"), into: "staging.x")
        }
        let d = FlowDefinition(flow)
        #expect(d.task("q")?.kind == "sql" && d.task("q")?.sql?.sql == "SELECT 1")
        #expect(d.task("load")?.sql?.copy == SQLCopy(path: "/tmp/x.csv", table: "staging.x", format: .csv()))
        let changed = Flow("sql_def") { f in
            f.sql("q", connection: "warehouse", sql: "SELECT 2")
            f.sql("load", connection: "warehouse", copyFrom: .file("/tmp/x.csv"), into: "staging.x")
        }
        #expect(try d.contentHash() != FlowDefinition(changed).contentHash())
        let missing = Flow("sql_missing") { f in f.sql("q", connection: "warehouse", file: "/nonexistent/q.sql") }
        #expect(throws: FlowValidationError.self) { try missing.validate() }
        let empty = Flow("sql_empty") { f in f.sql("q", connection: "warehouse", sql: " -- nothing\n;") }
        #expect(throws: FlowValidationError.self) { try empty.validate() }
    }
}
