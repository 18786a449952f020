public import FlowKit
import Foundation

/// What a task gets from the connections and variables store: the sealed values its message
/// carries, opened with the keys the workers share, under the worker's own `FLOWKIT_CONN_*` and
/// `FLOWKIT_VAR_*` (a worker's own value wins: a secrets backend, or a per-host override). A
/// task that declares something found in neither fails before its body runs, naming it.
public struct TaskSecrets: Sendable {
    /// The worker's own connections and variables (from its environment).
    public let ownConnections: [String: String]
    public let ownVariables: [String: String]
    /// The keys of `FLOWKIT_SECRET_KEY`, or why there are none usable.
    public let keyring: Result<SecretKeyring?, SecretError>
    public let workerName: String

    public init(environment: [String: String], workerName: String) {
        ownConnections = namedConnections(environment)
        ownVariables = namedVariables(environment)
        do { keyring = .success(try SecretKeyring.fromEnvironment(environment)) } catch let e as SecretError { keyring = .failure(e) } catch {
            keyring = .failure(SecretError("\(error)"))
        }
        self.workerName = workerName
    }

    /// The connections and variables of one try: the worker's own, plus what the message carries
    /// that the worker lacks. Throws, naming the first missing one and where to set it, when the
    /// task needs something neither has.
    public func resolve(carried: JSONValue?, connections needed: [String], variables neededVariables: [String])
        throws -> (connections: [String: String], variables: [String: String]) {
        var connections = ownConnections
        var variables: [String: String] = [:]
        // A name with `-` or `.` is set on a worker as FLOWKIT_CONN_MY_DB / FLOWKIT_VAR_MY_DB.
        for n in needed where connections[n] == nil { if let c = ownConnections[TaskNeeds.environmentKey(n)] { connections[n] = c } }
        for n in neededVariables { if let v = ownVariables[TaskNeeds.environmentKey(n)] { variables[n] = v } }
        if let carried {
            for (kind, names) in [("connection", carried["connections"]?.objectValue ?? [:]), ("variable", carried["variables"]?.objectValue ?? [:])] {
                for (name, value) in names {
                    if kind == "connection" ? connections[name] != nil : variables[name] != nil { continue }  // the worker's own wins
                    guard let sealed = value.stringValue else { continue }
                    let keys: SecretKeyring
                    switch keyring {
                    case .failure(let e): throw TaskError("\(kind) `\(name)` came sealed, but this worker's \(SecretKeyring.variable) is unusable: \(e)")
                    case .success(nil):
                        throw TaskError("\(kind) `\(name)` came sealed from the store, and worker `\(workerName)` has no \(SecretKeyring.variable) "
                                        + "to open it: give it the same key as the API and schedulers")
                    case .success(let k?): keys = k
                    }
                    let plain: String
                    do { plain = try keys.open(sealed, context: "\(kind):\(name)") } catch { throw TaskError("\(kind) `\(name)`: \(error)") }
                    if kind == "connection" { connections[name] = plain } else { variables[name] = plain }
                }
            }
        }
        for n in needed where connections[n] == nil {
            throw TaskError("connection `\(n)` is not set: set it with `flowctl connections set \(n) --uri URL` "
                            + "(or \(TaskNeeds.environmentName(connection: n)) on worker `\(workerName)`)")
        }
        for n in neededVariables where variables[n] == nil {
            throw TaskError("variable `\(n)` is not set: set it with `flowctl variables set \(n) VALUE` "
                            + "(or \(TaskNeeds.environmentName(variable: n)) on worker `\(workerName)`)")
        }
        return (connections, variables)
    }
}
