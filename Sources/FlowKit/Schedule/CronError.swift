/// Why a cron expression or a time zone was rejected, naming the field and value at fault.
public enum CronError: Error, Equatable, CustomStringConvertible, Sendable {
    case wrongFieldCount(expression: String, count: Int)
    case invalidField(expression: String, field: String, position: Int, value: String, reason: String)
    case unknownPreset(expression: String)
    case neverFires(expression: String, reason: String)
    case unknownTimeZone(String)

    public var description: String {
        switch self {
        case .wrongFieldCount(let e, let n):
            return "cron `\(e)`: expected 5 fields (minute hour day-of-month month day-of-week), found \(n)"
        case .invalidField(let e, let f, let pos, let v, let why):
            return "cron `\(e)`: field \(pos) (\(f)) value `\(v)`: \(why)"
        case .unknownPreset(let e):
            return "cron `\(e)`: unknown preset; use one of @hourly @daily @midnight @weekly @monthly @quarterly @yearly @annually"
        case .neverFires(let e, let why):
            return "cron `\(e)` can never fire: \(why)"
        case .unknownTimeZone(let z):
            return "unknown time zone `\(z)`: use an IANA name such as `Europe/Madrid` or `UTC`"
        }
    }
}
