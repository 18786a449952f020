public import Foundation

/// Where an S3-compatible store is and how to sign for it, read from a named connection's URL:
///
/// * `s3://ACCESS_KEY:SECRET@host:port/?region=eu-west-1&path_style=true` — any S3-compatible
///   server (MinIO, LocalStack, Ceph, moto) over HTTPS; add `tls=false` for plain HTTP;
/// * `http://ACCESS_KEY:SECRET@host:port/?…` or `https://…` — the same, the scheme saying which;
/// * `s3://ACCESS_KEY:SECRET@/?region=eu-west-1` (no host, or the host `aws`) — AWS itself,
///   `https://s3.REGION.amazonaws.com`, with virtual-hosted-style requests.
///
/// Keys and secrets are percent-encoded in the URL (AWS secrets may hold `/` and `+`). Without a
/// key pair in the URL, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are
/// used; without `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`. `session_token`
/// in the query passes temporary credentials. `path_style` defaults to true except on AWS.
public struct S3Connection: Sendable, Equatable {
    /// `scheme://host[:port]`, without a path.
    public var endpoint: URL
    public var region: String
    /// `https://host/bucket/key` (true) or `https://bucket.host/key` (false).
    public var pathStyle: Bool
    public var credentials: AWSCredentials

    public init(endpoint: URL, region: String, pathStyle: Bool, credentials: AWSCredentials) {
        self.endpoint = endpoint; self.region = region; self.pathStyle = pathStyle; self.credentials = credentials
    }

    /// A connection string that is not an S3 connection, with what is wrong.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Parses `url` (the value of connection `name`, which only names it in errors).
    public init(parsing url: String, name: String = "s3", environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        func invalid(_ why: String) -> Invalid {
            Invalid(description: "connection `\(name)` is not an S3 connection: \(why) (expected s3://ACCESS_KEY:SECRET@host:port/?region=…&path_style=true)")
        }
        guard let c = URLComponents(string: url), let scheme = c.scheme?.lowercased() else { throw invalid("it is not a URL") }
        guard ["s3", "http", "https"].contains(scheme) else { throw invalid("its scheme is `\(scheme)`") }
        var options: [String: String] = [:]
        for item in c.queryItems ?? [] { options[item.name.lowercased()] = item.value ?? "" }
        func flag(_ key: String) throws -> Bool? {
            guard let v = options[key] else { return nil }
            switch v.lowercased() {
            case "true", "1", "yes", "on": return true
            case "false", "0", "no", "off": return false
            default: throw invalid("`\(key)=\(v)` is neither true nor false")
            }
        }
        region = options["region"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["AWS_REGION"] ?? environment["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let host = c.host ?? ""
        let aws = host.isEmpty || host.lowercased() == "aws"
        let tls = try flag("tls") ?? true
        let secure = scheme == "https" || (scheme == "s3" && tls)
        if aws {
            endpoint = URL(string: "https://s3.\(region).amazonaws.com")!
        } else {
            var e = URLComponents()
            e.scheme = secure ? "https" : "http"
            e.host = host
            e.port = c.port
            guard let u = e.url else { throw invalid("`\(host)` is not a host name") }
            endpoint = u
        }
        pathStyle = try flag("path_style") ?? !(aws || host.lowercased().hasSuffix(".amazonaws.com"))
        let user = c.user?.removingPercentEncoding ?? c.user
        let password = c.password?.removingPercentEncoding ?? c.password
        let token = options["session_token"].flatMap { $0.isEmpty ? nil : $0 }
        if let user, !user.isEmpty {
            guard let password, !password.isEmpty else { throw invalid("it names access key `\(user)` without its secret") }
            credentials = AWSCredentials(accessKeyId: user, secretAccessKey: password, sessionToken: token)
        } else if let id = environment["AWS_ACCESS_KEY_ID"], let secret = environment["AWS_SECRET_ACCESS_KEY"], !id.isEmpty, !secret.isEmpty {
            credentials = AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: token ?? environment["AWS_SESSION_TOKEN"])
        } else {
            throw invalid("it has no access key (put ACCESS_KEY:SECRET in the URL, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        }
    }

    /// `endpoint` as `scheme://host[:port]`, for messages.
    public var displayEndpoint: String { endpoint.absoluteString }
}
