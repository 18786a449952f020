/// A command a shell task runs: an argv, or a script for `/bin/sh -c`.
///
/// Run conf and params reach the command as environment variables (`FLOWKIT_PARAM_<NAME>`),
/// never spliced into the script text, so a conf value cannot inject shell syntax.
public struct ShellCommand: Sendable, Hashable, Codable {
    public var argv: [String]
    public var environment: [String: String]
    public var workingDirectory: String?

    public init(argv: [String], environment: [String: String] = [:], workingDirectory: String? = nil) {
        self.argv = argv
        self.environment = environment
        self.workingDirectory = workingDirectory
    }

    /// A `/bin/sh -c` script.
    public static func script(_ script: String, environment: [String: String] = [:], workingDirectory: String? = nil) -> ShellCommand {
        ShellCommand(argv: ["/bin/sh", "-c", script], environment: environment, workingDirectory: workingDirectory)
    }
}
