public import FlowKit
import Foundation

/// Object storage (connection `lake`, an S3-compatible store; bucket `example`):
/// `wait_for_file` waits — deferrable, a poke every 2 s, for up to an hour — for the key of param
/// `key` (default `landing/numbers.csv`); `load` streams it to a temporary file through
/// `ctx.s3("lake")` and returns `{"lines": N}` (newlines, plus one for a last line without
/// one); `archive` moves it to `archive/<key>` (a server-side copy, then the original deleted),
/// and records an event of the asset `s3://example/archive/`.
///
///     FLOWKIT_CONN_LAKE='s3://KEY:SECRET@127.0.0.1:9000/?region=us-east-1&path_style=true&tls=false'
///     flowctl trigger example_s3
///     aws --endpoint-url http://127.0.0.1:9000 s3 cp numbers.csv s3://example/landing/numbers.csv
public let exampleS3 = Flow(
    "example_s3",
    description: "waits for an object in bucket `example` (connection `lake`), counts its lines, then archives it",
    tags: ["example", "s3"],
    params: [Param("key", .string, default: "landing/numbers.csv", description: "the object's key in bucket `example`")]
) { f in
    let wait = f.sensor("wait_for_file", .s3Key(connection: "lake", bucket: "example", key: "{{ params.key }}"),
                        pokeInterval: .seconds(2), timeout: .seconds(3600))
    let load = f.task("load", after: [wait]) { ctx in
        let key = try ctx.render("{{ params.key }}")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-\(ctx.runId)-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let got = try await ctx.s3("lake").download(bucket: "example", key: key, to: path)
        let lines = try countLines(path)
        ctx.log("s3://example/\(key): \(got.bytes) bytes, \(lines) lines")
        return ["lines": .int(lines)]
    }
    f.s3("archive", connection: "lake", bucket: "example", .move(from: "{{ params.key }}", to: "archive/{{ params.key }}"),
         after: [load], outlets: ["s3://example/archive/"])
}

/// Lines in a file, read 1 MiB at a time: its newlines, plus one when it ends without one.
func countLines(_ path: String) throws -> Int {
    guard let h = FileHandle(forReadingAtPath: path) else { throw TaskError("cannot read \(path)") }
    defer { try? h.close() }
    var lines = 0, last: UInt8 = UInt8(ascii: "\n"), any = false
    while let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty {
        any = true
        lines += chunk.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
        last = chunk.last!
    }
    return lines + (any && last != UInt8(ascii: "\n") ? 1 : 0)
}
