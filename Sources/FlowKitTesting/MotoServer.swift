import Foundation

/// A real S3-compatible server for tests: moto's (`moto[server]` from PyPI, in the virtualenv
/// `scripts/s3/venv.sh` makes; `make test` makes it first) on a loopback port, with boto3 beside
/// it as a second client. Authentication is on, as on AWS: `start()` creates an IAM user with an
/// access key through moto's API, then makes moto check every request's SigV4 signature, so a
/// wrong secret is refused as S3 refuses it.
public final class MotoServer: @unchecked Sendable {
    public let port: Int
    public let python: String
    public let accessKey: String
    public let secretKey: String
    let process: Process
    let log: URL

    /// `http://127.0.0.1:PORT`.
    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// A FlowKit S3 connection URL for this server (the secret replaced by `secret` when given).
    public func connectionURL(secret: String? = nil) -> String {
        let s = (secret ?? secretKey).addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        return "s3://\(accessKey):\(s)@127.0.0.1:\(port)/?region=us-east-1&path_style=true&tls=false"
    }

    /// The virtualenv's python, or an error saying how to make it (never a skip).
    public static func venvPython() throws -> String {
        let path = TestServers.repositoryRoot + "/.flowkit/venv-s3/bin/python"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestServers.Missing(variable: "the S3 test virtualenv .flowkit/venv-s3 (moto[server], boto3; scripts/s3/venv.sh, which make test runs)")
        }
        return path
    }

    init(port: Int, python: String, accessKey: String, secretKey: String, process: Process, log: URL) {
        self.port = port; self.python = python; self.accessKey = accessKey; self.secretKey = secretKey; self.process = process; self.log = log
    }

    /// Starts a moto server on a free loopback port and waits until it answers.
    public static func start() async throws -> MotoServer {
        let python = try venvPython()
        let port = try freePort()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-moto-\(port).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-m", "moto.server", "-H", "127.0.0.1", "-p", String(port)]
        let out = try FileHandle(forWritingTo: log)
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while !isListening(port: port) {
            guard p.isRunning, Date() < deadline else {
                kill(p.processIdentifier, SIGKILL)
                throw TestServers.Missing(variable: "a moto server on port \(port) (it did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? ""))")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        // An IAM user with full access and a key, then authentication from the next request on.
        let keys = try runPython(python, """
            import boto3, json, urllib.request
            iam = boto3.client("iam", endpoint_url="http://127.0.0.1:\(port)", region_name="us-east-1",
                               aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
            iam.create_user(UserName="flowkit")
            iam.put_user_policy(UserName="flowkit", PolicyName="all", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
            k = iam.create_access_key(UserName="flowkit")["AccessKey"]
            urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:\(port)/moto-api/reset-auth", data=b"0", method="POST",
                                                          headers={"Content-Type": "text/plain"})).read()
            print(k["AccessKeyId"] + " " + k["SecretAccessKey"])
            """).split(separator: " ").map(String.init)
        guard keys.count == 2 else { throw TestServers.Missing(variable: "an access key from moto (got \(keys))") }
        return MotoServer(port: port, python: python, accessKey: keys[0], secretKey: keys[1], process: p, log: log)
    }

    public func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: log)
    }

    /// Runs `script` with boto3, `s3` bound to a client of this server (with the test key);
    /// returns its standard output, trimmed. A failing script throws with its standard error.
    @discardableResult
    public func boto3(_ script: String) throws -> String {
        try Self.runPython(python, """
            import boto3, hashlib, json, os, sys
            from botocore.config import Config
            s3 = boto3.client("s3", endpoint_url="\(endpoint)", region_name="us-east-1",
                              aws_access_key_id="\(accessKey)", aws_secret_access_key="\(secretKey)",
                              config=Config(s3={"addressing_style": "path"}))
            """ + "\n" + script)
    }

    static func runPython(_ python: String, _ script: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = ["-c", script]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Both pipes drain while the script runs: a full one would block it.
        nonisolated(unsafe) var errData = Data()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); done.signal() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        let errText = String(decoding: errData, as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ScriptFailed(description: "boto3 script failed (\(p.terminationStatus)): \(errText.suffix(2000))")
        }
        return String(decoding: outData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public struct ScriptFailed: Error, CustomStringConvertible { public let description: String }
}
