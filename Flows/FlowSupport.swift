import FlowKit
import Foundation

/// Where flows write files: `FLOWKIT_DATA_DIR`, or `.flowkit/data` under the working directory.
func dataDirectory(_ parts: String...) throws -> URL {
    let base = ProcessInfo.processInfo.environment["FLOWKIT_DATA_DIR"].map { URL(fileURLWithPath: $0) }
        ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".flowkit/data")
    let dir = parts.reduce(base) { $0.appendingPathComponent($1) }
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A resource shipped with the flows (in `Flows/Resources`).
func resource(_ path: String) throws -> URL {
    guard let base = Bundle.module.url(forResource: "Resources", withExtension: nil) else {
        throw TaskError("the Flows resource bundle is missing (it ships beside the flowctl binary)")
    }
    let url = base.appendingPathComponent(path)
    guard FileManager.default.fileExists(atPath: url.path) else { throw TaskError("missing resource \(url.path)") }
    return url
}
