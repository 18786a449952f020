public import Foundation

/// A SQL task (`FlowBuilder.sql`): statements run on a worker against a named connection, with
/// Airflow's template names bound as parameters, never spliced into the text.
public struct SQLTaskSpec: Sendable, Codable, Hashable {
    /// The connection's name (`FLOWKIT_CONN_<NAME>` on the worker).
    public var connection: String
    /// The statements, as written (templates included). Empty for a task that only copies.
    public var sql: String
    /// The resource file the statements were read from, when they came from one.
    public var file: String?
    /// All statements in one transaction (the default), or each on its own.
    public var transaction: Bool
    /// A bulk load after the statements: a file streamed with `COPY … FROM STDIN`.
    public var copy: SQLCopy?
    /// Statements run after the load (a count, a check), in the same transaction.
    public var afterCopy: String?
    /// The shape of the result (absent: `.rows`, so other tasks' hashes stay).
    public var returning: SQLResultShape?
    /// Why the task cannot run (its file could not be read when the flow was defined); the
    /// flow's validation refuses the flow with it.
    public var problem: String?

    public init(connection: String, sql: String, file: String? = nil, transaction: Bool = true, copy: SQLCopy? = nil, problem: String? = nil) {
        self.connection = connection; self.sql = sql; self.file = file; self.transaction = transaction; self.copy = copy; self.problem = problem
    }
}

/// What a SQL task returns from its last statement.
public enum SQLResultShape: String, Sendable, Codable, Hashable {
    /// `{"columns", "rows", "rowCount", "truncated"}` (or `{"rowsAffected"}`), and `rowsCopied` after a load.
    case rows
    /// The first row as an object, `{"column": value, …}` (`{}` when none): for a statement that
    /// computes a few figures, as Airflow's `fetch_one` handler.
    case firstRow
}

/// `COPY table FROM STDIN` of a file on the worker.
public struct SQLCopy: Sendable, Codable, Hashable {
    /// The file's path on the worker, absolute or relative to its data directory (`FLOWKIT_DATA_DIR`,
    /// default `.flowkit/data`); Airflow's template names may appear in it (`in/{{ ds }}.csv`).
    public var path: String
    /// The table (optionally schema-qualified, `staging.air_quality`).
    public var table: String
    public var format: SQLCopyFormat

    public init(path: String, table: String, format: SQLCopyFormat) { self.path = path; self.table = table; self.format = format }
}

/// The format of a file `COPY` reads.
public enum SQLCopyFormat: Sendable, Codable, Hashable {
    case csv(header: Bool = true, delimiter: String = ",")
    case text

    /// The `WITH (…)` options of the `COPY` statement.
    public var copyOptions: String {
        switch self {
        case .csv(let header, let delimiter):
            let d = delimiter.replacingOccurrences(of: "'", with: "''")
            return "FORMAT csv, HEADER \(header ? "true" : "false"), DELIMITER '\(d)'"
        case .text: return "FORMAT text"
        }
    }
}

/// Where a bulk load reads from.
public enum SQLCopySource: Sendable {
    /// A file on the worker: an absolute path, or one relative to the worker's data directory.
    case file(String)
}

extension FlowBuilder {
    /// A SQL task: `sql` (one or more statements separated by `;`) runs on a worker against the
    /// connection `connection`, all statements in one transaction unless `transaction` is false,
    /// with the task's timeout as `statement_timeout`; cancel and timeout cancel the statement.
    /// `{{ ds }}`, `{{ ds_nodash }}`, `{{ logical_date }}`, `{{ data_interval_start }}`,
    /// `{{ data_interval_end }}`, `{{ run_id }}` and `{{ params.NAME }}` become bound parameters.
    /// The result is the last statement's: `{"columns", "rows", "rowCount", "truncated"}` when it
    /// returns rows, `{"rowsAffected"}` otherwise; with `returning: .firstRow`, its first row as an
    /// object. With `copyFrom`, the file is streamed into `into` with `COPY … FROM STDIN` after
    /// `sql` (which may create or empty the table) and before `afterCopy` (a count, a check), and
    /// a `.rows` result gains `"rowsCopied"`.
    @discardableResult
    public func sql(_ id: String, connection: String, sql: String = "", transaction: Bool = true,
                    copyFrom: SQLCopySource? = nil, into table: String? = nil, format: SQLCopyFormat = .csv(), afterCopy: String? = nil,
                    returning: SQLResultShape = .rows, after upstream: [TaskRef] = [], description: String = "", retry: RetryPolicy? = nil,
                    timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil, triggerRule: TriggerRule? = nil,
                    pool: String? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        var spec = SQLTaskSpec(connection: connection, sql: sql, transaction: transaction)
        spec.afterCopy = afterCopy
        spec.returning = returning == .rows ? nil : returning
        if let copyFrom {
            guard case .file(let path) = copyFrom, let table else {
                spec.problem = "task `\(id)`: `copyFrom:` needs `into:` the table to load"
                return addSQL(id, spec, upstream, description, retry, timeout, queue, priority, triggerRule, pool)
            }
            spec.copy = SQLCopy(path: path, table: table, format: format)
        }
        if spec.copy == nil && SQLScript.statements(sql).isEmpty {
            spec.problem = "task `\(id)` has no SQL statement"
        }
        return addSQL(id, spec, upstream, description, retry, timeout, queue, priority, triggerRule, pool)
    }

    /// A SQL task whose statements are read from `file` when the flow is defined (so that
    /// changing the file makes a new flow version): a path relative to `resources` (the flows
    /// package's resource directory, e.g. `Bundle.module.resourceURL`), or an absolute one.
    @discardableResult
    public func sql(_ id: String, connection: String, file: String, resources: URL? = nil, transaction: Bool = true,
                    returning: SQLResultShape = .rows, after upstream: [TaskRef] = [], description: String = "", retry: RetryPolicy? = nil,
                    timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil, triggerRule: TriggerRule? = nil,
                    pool: String? = nil, fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        let url = file.hasPrefix("/") || resources == nil ? URL(fileURLWithPath: file) : resources!.appendingPathComponent(file)
        var spec = SQLTaskSpec(connection: connection, sql: "", file: file, transaction: transaction)
        spec.returning = returning == .rows ? nil : returning
        do {
            spec.sql = try String(contentsOf: url, encoding: .utf8)
            if SQLScript.statements(spec.sql).isEmpty { spec.problem = "task `\(id)`: \(url.path) holds no SQL statement" }
        } catch {
            spec.problem = "task `\(id)` cannot read its SQL file \(url.path): \(error.localizedDescription)"
        }
        return addSQL(id, spec, upstream, description, retry, timeout, queue, priority, triggerRule, pool)
    }

    private func addSQL(_ id: String, _ spec: SQLTaskSpec, _ upstream: [TaskRef], _ description: String, _ retry: RetryPolicy?,
                        _ timeout: Duration?, _ queue: String?, _ priority: Int?, _ triggerRule: TriggerRule?, _ pool: String?) -> TaskRef {
        add(FlowTask(id: id, body: .sql(spec), upstream: upstream.map(\.id),
                     options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule, pool: pool),
                     description: description))
    }
}

/// A SQL script cut into statements, each with its templates turned into bound parameters.
public enum SQLScript {
    /// One statement of a script: its text and where it starts in the script (in Unicode scalars).
    public struct Statement: Sendable, Equatable {
        public var text: String
        public var offset: Int
    }

    /// The statements of `script`, split at top-level `;` (not inside quotes, dollar quotes or
    /// comments); empty statements (only blanks and comments) are dropped.
    public static func statements(_ script: String) -> [Statement] {
        let s = Array(script.unicodeScalars)
        var out: [Statement] = []
        var start = 0, i = 0, meaningful = false
        func close(_ end: Int) {
            if meaningful { out.append(Statement(text: String(String.UnicodeScalarView(s[start..<end])), offset: start)) }
            start = end + 1
            meaningful = false
        }
        while i < s.count {
            let c = s[i]
            if c == "-" && i + 1 < s.count && s[i + 1] == "-" {
                while i < s.count && s[i] != "\n" { i += 1 }
                continue
            }
            if c == "/" && i + 1 < s.count && s[i + 1] == "*" {
                i = skipBlockComment(s, i)
                continue
            }
            if c == ";" { close(i); i += 1; continue }
            if !c.properties.isWhitespace { meaningful = true }
            if c == "'" || c == "\"" { i = skipQuoted(s, i, c); continue }
            if c == "$", let tag = dollarTag(s, i) { i = skipDollar(s, i, tag); continue }
            i += 1
        }
        close(s.count)
        return out
    }

    /// The names a template may use, for error messages.
    public static let knownNames = ["ds", "ds_nodash", "logical_date", "data_interval_start", "data_interval_end", "run_id", "params.NAME"]

    /// A statement ready to send: `$n` where its templates were, the values in order, and for
    /// each Unicode scalar of `sql` the offset in the statement as written (for error positions).
    public struct Bound: Sendable, Equatable {
        public var sql: String
        public var values: [String?]
        public var origin: [Int]
    }

    /// Replaces each `{{ name }}` of `statement` with a parameter (`$1`, `$2`, …; one per
    /// distinct name), looking its value up in `values` (`nil` value: SQL NULL). A template that
    /// is a whole string literal (`'{{ ds }}'`) becomes the parameter itself; one inside a longer
    /// literal becomes a concatenation (`('day ' || $1)`, text). Templates in comments are left
    /// alone. An unknown name, or a template inside a quoted identifier or a dollar-quoted body
    /// (where no parameter can go), is an error naming it.
    public static func bind(_ statement: String, values: [String: String?], params: [String]) throws -> Bound {
        let s = Array(statement.unicodeScalars)
        var out: [Unicode.Scalar] = [], origin: [Int] = [], bound: [String?] = [], numbers: [String: Int] = [:]
        func emit(_ text: String, at o: Int) { for u in text.unicodeScalars { out.append(u); origin.append(o) } }
        func number(_ name: String, at o: Int) throws -> String {
            if let n = numbers[name] { return "$\(n)" }
            bound.append(try lookup(name, values: values, params: params))
            numbers[name] = bound.count
            return "$\(bound.count)"
        }
        var i = 0
        while i < s.count {
            let c = s[i]
            if let (name, end) = template(s, i) {
                emit(try number(name, at: i), at: i)
                i = end
                continue
            }
            if c == "-" && i + 1 < s.count && s[i + 1] == "-" {
                while i < s.count && s[i] != "\n" { out.append(s[i]); origin.append(i); i += 1 }
                continue
            }
            if c == "/" && i + 1 < s.count && s[i + 1] == "*" {
                let end = skipBlockComment(s, i)
                for j in i..<end { out.append(s[j]); origin.append(j) }
                i = end
                continue
            }
            if c == "\"" || (c == "$" && dollarTag(s, i) != nil) {
                let end = c == "\"" ? skipQuoted(s, i, c) : skipDollar(s, i, dollarTag(s, i)!)
                if let t = (i..<end).first(where: { template(s, $0) != nil }), let (name, _) = template(s, t) {
                    let place = c == "\"" ? "a quoted identifier" : "a dollar-quoted body"
                    throw TaskError("template `{{ \(name) }}` at offset \(t + 1) is inside \(place), where no parameter can go: "
                                    + "templates become bound parameters and may stand only where a value may")
                }
                for j in i..<end { out.append(s[j]); origin.append(j) }
                i = end
                continue
            }
            if c == "'" {
                let end = skipQuoted(s, i, c)
                guard (i..<end).contains(where: { template(s, $0) != nil }) else {
                    for j in i..<end { out.append(s[j]); origin.append(j) }
                    i = end
                    continue
                }
                // A literal with templates: its pieces around the parameters, concatenated.
                var parts: [(text: String, at: Int)] = [], literal = "", litStart = i + 1, j = i + 1
                let close = end - 1   // the closing quote
                while j < close {
                    if let (name, tEnd) = template(s, j) {
                        if !literal.isEmpty { parts.append(("'" + literal + "'", litStart)) }
                        parts.append((try number(name, at: j), j))
                        literal = ""; j = tEnd; litStart = j
                        continue
                    }
                    literal.unicodeScalars.append(s[j])
                    if s[j] == "'" { literal.unicodeScalars.append(s[j + 1]); j += 1 }   // '' stays ''
                    j += 1
                }
                if !literal.isEmpty { parts.append(("'" + literal + "'", litStart)) }
                if parts.count == 1 {
                    emit(parts[0].text, at: parts[0].at)
                } else {
                    emit("(", at: i)
                    for (k, p) in parts.enumerated() {
                        if k > 0 { emit(" || ", at: p.at) }
                        emit(p.text, at: p.at)
                    }
                    emit(")", at: close)
                }
                i = end
                continue
            }
            out.append(c); origin.append(i)
            i += 1
        }
        return Bound(sql: String(String.UnicodeScalarView(out)), values: bound, origin: origin)
    }

    /// The value of template `name`, or an error naming it and the names it could have been.
    static func lookup(_ name: String, values: [String: String?], params: [String]) throws -> String? {
        if let v = values[name] { return v }
        if name.hasPrefix("params.") {
            let known = params.sorted().map { "params.\($0)" }.joined(separator: ", ")
            throw TaskError("unknown template name `\(name)`: the run has no param `\(name.dropFirst(7))`"
                            + (params.isEmpty ? " (the flow declares none)" : " (its params: \(known))"))
        }
        throw TaskError("unknown template name `\(name)`: known names are \(knownNames.joined(separator: ", "))")
    }

    /// `text` with its templates replaced by their values as text (for a file path, never for
    /// SQL); a NULL value is an error.
    public static func render(_ text: String, values: [String: String?], params: [String]) throws -> String {
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView(), i = 0
        while i < s.count {
            if let (name, end) = template(s, i) {
                guard let v = try lookup(name, values: values, params: params) else {
                    throw TaskError("template `{{ \(name) }}` is null and cannot be part of `\(text)`")
                }
                out.append(contentsOf: v.unicodeScalars)
                i = end
                continue
            }
            out.append(s[i])
            i += 1
        }
        return String(out)
    }

    /// The template values of a try: Airflow's names, from the run's dates (UTC), and each param
    /// as text (a string as is, a number or boolean as written, null as SQL NULL, arrays and
    /// objects as JSON).
    public static func values(runId: String, logicalDate: Date, dataIntervalStart: Date, dataIntervalEnd: Date,
                              params: [String: JSONValue]) -> [String: String?] {
        var v: [String: String?] = [
            "ds": day(logicalDate), "ds_nodash": day(logicalDate).replacingOccurrences(of: "-", with: ""),
            "logical_date": instant(logicalDate), "data_interval_start": instant(dataIntervalStart),
            "data_interval_end": instant(dataIntervalEnd), "run_id": runId,
        ]
        for (k, p) in params {
            switch p {
            case .null: v["params." + k] = .some(nil)
            case .string(let s): v["params." + k] = s
            case .bool(let b): v["params." + k] = b ? "true" : "false"
            default: v["params." + k] = p.compactJSON
            }
        }
        return v
    }

    /// `2026-12-03`, in UTC.
    static func day(_ d: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day], from: d)
        return String(format: "%04d-%02d-%02d", c.year!, c.month!, c.day!)
    }

    /// `2026-12-03T05:00:00+00:00`, as Airflow renders a logical date.
    static func instant(_ d: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second, .nanosecond], from: d)
        let micro = (c.nanosecond ?? 0) / 1000
        let base = String(format: "%04d-%02d-%02dT%02d:%02d:%02d", c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
        return base + (micro > 0 ? String(format: ".%06d", micro) : "") + "+00:00"
    }

    /// Line and column (from 1) of scalar offset `offset` in `script`.
    public static func lineAndColumn(_ script: String, offset: Int) -> (line: Int, column: Int) {
        var line = 1, column = 1
        for (k, u) in script.unicodeScalars.enumerated() {
            if k >= offset { break }
            if u == "\n" { line += 1; column = 1 } else { column += 1 }
        }
        return (line, column)
    }

    // MARK: - Lexing

    /// `{{ name }}` at `i`: the name and the index after the closing braces.
    static func template(_ s: [Unicode.Scalar], _ i: Int) -> (String, Int)? {
        guard i + 1 < s.count, s[i] == "{", s[i + 1] == "{" else { return nil }
        var j = i + 2, name = ""
        while j + 1 < s.count, !(s[j] == "}" && s[j + 1] == "}") {
            if s[j] == "\n" || s[j] == "{" { return nil }
            name.unicodeScalars.append(s[j])
            j += 1
        }
        guard j + 1 < s.count else { return nil }
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        return (trimmed, j + 2)
    }

    /// The index after a quoted string or identifier starting at `i` (a doubled quote escapes it).
    static func skipQuoted(_ s: [Unicode.Scalar], _ i: Int, _ q: Unicode.Scalar) -> Int {
        var j = i + 1
        while j < s.count {
            if s[j] == q {
                if j + 1 < s.count && s[j + 1] == q { j += 2; continue }
                return j + 1
            }
            j += 1
        }
        return s.count
    }

    static func skipBlockComment(_ s: [Unicode.Scalar], _ i: Int) -> Int {
        var j = i + 2, depth = 1
        while j < s.count && depth > 0 {
            if s[j] == "/" && j + 1 < s.count && s[j + 1] == "*" { depth += 1; j += 2; continue }
            if s[j] == "*" && j + 1 < s.count && s[j + 1] == "/" { depth -= 1; j += 2; continue }
            j += 1
        }
        return j
    }

    /// The tag of a dollar quote opening at `i` (`$$` or `$tag$`), or nil when `$` starts
    /// something else (a parameter `$1`).
    static func dollarTag(_ s: [Unicode.Scalar], _ i: Int) -> String? {
        if i > 0, s[i - 1].properties.isAlphabetic || s[i - 1] == "_" || ("0"..."9").contains(s[i - 1]) { return nil }
        var j = i + 1, tag = "$"
        while j < s.count {
            let c = s[j]
            if c == "$" { return tag + "$" }
            guard c.properties.isAlphabetic || c == "_" || (j > i + 1 && ("0"..."9").contains(c)) else { return nil }
            tag.unicodeScalars.append(c)
            j += 1
        }
        return nil
    }

    static func skipDollar(_ s: [Unicode.Scalar], _ i: Int, _ tag: String) -> Int {
        let t = Array(tag.unicodeScalars)
        var j = i + t.count
        while j + t.count <= s.count {
            if Array(s[j..<(j + t.count)]) == t { return j + t.count }
            j += 1
        }
        return s.count
    }
}
