import Crypto
import FlowJSON
public import Foundation
#if canImport(FoundationNetworking)
public import FoundationNetworking
#endif

/// One object as a listing or a `HEAD` shows it.
public struct S3Object: Sendable, Equatable {
    public var key: String
    public var size: Int
    /// Without the quotes S3 puts around it.
    public var etag: String
    public var lastModified: Date

    public init(key: String, size: Int, etag: String, lastModified: Date) {
        self.key = key; self.size = size; self.etag = etag; self.lastModified = lastModified
    }
}

/// What a listing found, and the server's clock when it answered (its `Date` header), against
/// which "unchanged for N seconds" is measured without trusting the worker's clock.
public struct S3Listing: Sendable {
    public var objects: [S3Object]
    public var serverDate: Date?
}

/// What an upload or a download moved.
public struct S3Transfer: Sendable, Equatable {
    public var bucket: String
    public var key: String
    public var bytes: Int
    public var etag: String
    /// Parts of a multipart upload (0 for a single request).
    public var parts: Int
}

/// An answer from S3 that is not a success, or a request that got no answer; the message names
/// the request, the server, S3's error code and message, and for a refused signature the
/// connection whose key or secret to check.
public struct S3Error: Error, CustomStringConvertible, Sendable {
    public var status: Int?
    public var code: String?
    public var message: String
    public var description: String { message }
}

/// A client for an S3-compatible store: requests signed with SigV4, objects streamed between
/// files and the store (a download is written to disk as it arrives; an upload above
/// `multipartThreshold` goes in parts of `partSize`, `parallelParts` at a time, so memory holds
/// at most that many parts whatever the object's size).
public struct S3Client: Sendable {
    public let connection: S3Connection
    /// The connection's name, for messages.
    public let name: String
    public var multipartThreshold = 16 * 1024 * 1024
    public var partSize = 8 * 1024 * 1024
    public var parallelParts = 4
    let session: URLSession
    let signer: SigV4Signer

    public init(_ connection: S3Connection, name: String = "s3", session: URLSession = .shared) {
        self.connection = connection
        self.name = name
        self.session = session
        signer = SigV4Signer(credentials: connection.credentials, region: connection.region)
    }

    /// A client for the connection URL `url` (see `S3Connection`).
    public init(url: String, name: String = "s3") throws {
        self.init(try S3Connection(parsing: url, name: name), name: name)
    }

    // MARK: Objects

    /// Every object whose key starts with `prefix` (all pages, in key order), up to `limit`.
    public func list(bucket: String, prefix: String = "", limit: Int = .max) async throws -> S3Listing {
        var objects: [S3Object] = [], token: String?, serverDate: Date?
        repeat {
            var query = [("list-type", "2"), ("prefix", prefix)]
            if let token { query.append(("continuation-token", token)) }
            if limit < 1000 { query.append(("max-keys", String(max(1, limit - objects.count)))) }
            let r = try await send("GET", bucket: bucket, query: query)
            serverDate = serverDate ?? r.date
            let xml = Substring(r.text)
            for c in S3XML.elements("Contents", in: xml) {
                guard let key = S3XML.value("Key", in: c) else { continue }
                objects.append(S3Object(key: key, size: Int(S3XML.value("Size", in: c) ?? "") ?? 0,
                                        etag: Self.unquote(S3XML.value("ETag", in: c) ?? ""),
                                        lastModified: S3XML.value("LastModified", in: c).flatMap(Instant.parse) ?? .distantPast))
            }
            token = S3XML.value("IsTruncated", in: xml) == "true" ? S3XML.value("NextContinuationToken", in: xml) : nil
        } while token != nil && objects.count < limit
        return S3Listing(objects: Array(objects.prefix(limit)), serverDate: serverDate)
    }

    /// The object at `key`, or nil when there is none.
    public func head(bucket: String, key: String) async throws -> S3Object? {
        let r = try await send("HEAD", bucket: bucket, key: key, allow: [404])
        guard r.status != 404 else { return nil }
        return S3Object(key: key, size: Int(r.header("content-length") ?? "") ?? 0, etag: Self.unquote(r.header("etag") ?? ""),
                        lastModified: r.header("last-modified").flatMap(Self.parseHTTPDate) ?? .distantPast)
    }

    /// A small object's bytes, in memory (use `download` for anything large).
    public func get(bucket: String, key: String) async throws -> Data {
        try await send("GET", bucket: bucket, key: key).body
    }

    /// Writes `data` to `key`.
    @discardableResult
    public func put(bucket: String, key: String, data: Data, contentType: String? = nil) async throws -> String {
        var headers: [(String, String)] = []
        if let contentType { headers.append(("content-type", contentType)) }
        let r = try await send("PUT", bucket: bucket, key: key, headers: headers, body: data)
        return Self.unquote(r.header("etag") ?? "")
    }

    /// Streams `key` into the file at `path` (replaced when it exists), never holding it in memory.
    @discardableResult
    public func download(bucket: String, key: String, to path: String) async throws -> S3Transfer {
        let target = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
        let r = try await send("GET", bucket: bucket, key: key, toFile: target)
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
        return S3Transfer(bucket: bucket, key: key, bytes: size, etag: Self.unquote(r.header("etag") ?? ""), parts: 0)
    }

    /// Uploads the file at `path` to `key`: one request up to `multipartThreshold`, a multipart
    /// upload above it (aborted if a part fails, so no orphan parts are billed).
    @discardableResult
    public func upload(bucket: String, key: String, from path: String, contentType: String? = nil) async throws -> S3Transfer {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw S3Error(status: nil, code: nil, message: "cannot upload \(path) to s3://\(bucket)/\(key): the file cannot be opened")
        }
        defer { try? handle.close() }
        let size = Int(try handle.seekToEnd())
        try handle.seek(toOffset: 0)
        if size <= multipartThreshold {
            let data = try handle.readToEnd() ?? Data()
            let etag = try await put(bucket: bucket, key: key, data: data, contentType: contentType)
            return S3Transfer(bucket: bucket, key: key, bytes: data.count, etag: etag, parts: 0)
        }
        return try await multipartUpload(bucket: bucket, key: key, handle: handle, size: size, contentType: contentType)
    }

    func multipartUpload(bucket: String, key: String, handle: FileHandle, size: Int, contentType: String?) async throws -> S3Transfer {
        var headers: [(String, String)] = []
        if let contentType { headers.append(("content-type", contentType)) }
        let started = try await send("POST", bucket: bucket, key: key, query: [("uploads", "")], headers: headers)
        guard let uploadId = S3XML.value("UploadId", in: Substring(started.text)) else {
            throw S3Error(status: started.status, code: nil, message: "S3 at \(connection.displayEndpoint) started no multipart upload of s3://\(bucket)/\(key): its answer has no UploadId")
        }
        do {
            let partSize = max(self.partSize, 5 * 1024 * 1024)
            let count = (size + partSize - 1) / partSize
            var etags = [String](repeating: "", count: count)
            try await withThrowingTaskGroup(of: (Int, String).self) { group in
                var inFlight = 0
                for n in 0..<count {
                    // Read in order on this task; at most `parallelParts` parts are in memory.
                    guard let chunk = try handle.read(upToCount: partSize), !chunk.isEmpty else {
                        throw S3Error(status: nil, code: nil, message: "the file being uploaded to s3://\(bucket)/\(key) shrank while it was read")
                    }
                    if inFlight >= max(1, parallelParts), let (i, etag) = try await group.next() {
                        etags[i] = etag; inFlight -= 1
                    }
                    group.addTask {
                        let r = try await send("PUT", bucket: bucket, key: key,
                                               query: [("partNumber", String(n + 1)), ("uploadId", uploadId)], body: chunk)
                        return (n, r.header("etag") ?? "")
                    }
                    inFlight += 1
                }
                for try await (i, etag) in group { etags[i] = etag }
            }
            let parts = etags.enumerated().map { "<Part><PartNumber>\($0.offset + 1)</PartNumber><ETag>\(S3XML.escape($0.element))</ETag></Part>" }
            let body = Data(("<CompleteMultipartUpload>" + parts.joined() + "</CompleteMultipartUpload>").utf8)
            let done = try await send("POST", bucket: bucket, key: key, query: [("uploadId", uploadId)], body: body, errorsIn200: true)
            return S3Transfer(bucket: bucket, key: key, bytes: size,
                              etag: Self.unquote(S3XML.value("ETag", in: Substring(done.text)) ?? ""), parts: count)
        } catch {
            _ = try? await send("DELETE", bucket: bucket, key: key, query: [("uploadId", uploadId)], allow: [404])
            throw error
        }
    }

    /// Copies `from` to `to` on the server (no bytes pass through here); objects up to 5 GiB.
    @discardableResult
    public func copy(bucket: String, from: String, to: String, sourceBucket: String? = nil) async throws -> String {
        let source = "/" + (sourceBucket ?? bucket) + "/" + SigV4Signer.encode(from, keepSlash: true)
        let r = try await send("PUT", bucket: bucket, key: to, headers: [("x-amz-copy-source", source)], errorsIn200: true)
        return Self.unquote(S3XML.value("ETag", in: Substring(r.text)) ?? "")
    }

    /// Deletes `key` (no error when it does not exist, as S3 answers).
    public func delete(bucket: String, key: String) async throws {
        _ = try await send("DELETE", bucket: bucket, key: key, allow: [404])
    }

    /// Deletes every object under `prefix`, 1,000 per request; returns their keys.
    @discardableResult
    public func delete(bucket: String, prefix: String) async throws -> [String] {
        let keys = try await list(bucket: bucket, prefix: prefix).objects.map(\.key)
        var start = 0
        while start < keys.count {
            let batch = keys[start..<min(start + 1000, keys.count)]
            let xml = "<Delete><Quiet>true</Quiet>" + batch.map { "<Object><Key>\(S3XML.escape($0))</Key></Object>" }.joined() + "</Delete>"
            let body = Data(xml.utf8)
            let md5 = Data(Insecure.MD5.hash(data: body)).base64EncodedString()
            let r = try await send("POST", bucket: bucket, query: [("delete", "")], headers: [("content-md5", md5)], body: body)
            let errors = S3XML.elements("Error", in: Substring(r.text))
            if let first = errors.first {
                throw S3Error(status: r.status, code: S3XML.value("Code", in: first),
                              message: "S3 at \(connection.displayEndpoint) did not delete \(errors.count) of the keys under s3://\(bucket)/\(prefix), "
                                  + "among them `\(S3XML.value("Key", in: first) ?? "?")`: \(S3XML.value("Code", in: first) ?? "?"): \(S3XML.value("Message", in: first) ?? "")")
            }
            start += batch.count
        }
        return keys
    }

    /// Creates `bucket` (for tests and development stores); an existing one of ours is fine.
    public func createBucket(_ bucket: String) async throws {
        var body: Data?
        if connection.region != "us-east-1" {
            body = Data("<CreateBucketConfiguration><LocationConstraint>\(connection.region)</LocationConstraint></CreateBucketConfiguration>".utf8)
        }
        _ = try await send("PUT", bucket: bucket, body: body, allow: [409])
    }

    // MARK: Requests

    struct Answer {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers[name] }
        var date: Date? { header("date").flatMap(S3Client.parseHTTPDate) }
    }

    /// The URL of a request, the path as signed, and the `Host` header.
    func target(bucket: String?, key: String?, query: [(String, String)]) -> (url: URL, path: String, host: String) {
        var host = connection.endpoint.host ?? ""
        if host.contains(":") && !host.hasPrefix("[") { host = "[\(host)]" }   // an IPv6 address
        if let port = connection.endpoint.port { host += ":\(port)" }
        var path = ""
        if let bucket, !bucket.isEmpty {
            if connection.pathStyle { path = "/" + SigV4Signer.encode(bucket) } else { host = bucket + "." + host }
        }
        if let key { path += "/" + SigV4Signer.encode(key, keepSlash: true) }
        if path.isEmpty { path = "/" }
        let q = query.map { $0.1.isEmpty && ["uploads", "delete"].contains($0.0) ? SigV4Signer.encode($0.0) : SigV4Signer.encode($0.0) + "=" + SigV4Signer.encode($0.1) }
            .joined(separator: "&")
        // Every part is percent-encoded above, so the URL always parses.
        let url = URL(string: "\(connection.endpoint.scheme ?? "https")://\(host)\(path)\(q.isEmpty ? "" : "?" + q)")
            ?? connection.endpoint
        return (url, path, host)
    }

    /// Sends one signed request, retrying what may be retried (no answer, 500, 502, 503, 504:
    /// S3's "try again") three times with backoff; a status outside 2xx and `allow` is an `S3Error`.
    func send(_ method: String, bucket: String? = nil, key: String? = nil, query: [(String, String)] = [],
              headers extra: [(String, String)] = [], body: Data? = nil, toFile: URL? = nil, allow: Set<Int> = [],
              errorsIn200: Bool = false) async throws -> Answer {
        let (url, path, host) = target(bucket: bucket, key: key, query: query)
        let what = "\(method) \(url.path)\(url.query.map { "?" + $0 } ?? "") on \(connection.displayEndpoint)"
        var attempt = 0
        while true {
            attempt += 1
            let payloadHash = body.map { SigV4Signer.sha256Hex($0) } ?? SigV4Signer.emptyPayloadHash
            let now = Date()
            var headers = extra + [("host", host), ("x-amz-date", SigV4Signer.stamps(now).stamp), ("x-amz-content-sha256", payloadHash)]
            // Without one, Foundation labels a body as a form, which servers then try to parse.
            if body != nil && !extra.contains(where: { $0.0.lowercased() == "content-type" }) {
                headers.append(("content-type", method == "POST" ? "application/xml" : "application/octet-stream"))
            }
            if let token = connection.credentials.sessionToken { headers.append(("x-amz-security-token", token)) }
            let signed = signer.sign(method: method, path: path, query: query, headers: headers, payloadHash: payloadHash, date: now)
            var request = URLRequest(url: url, timeoutInterval: 120)
            request.httpMethod = method
            for (k, v) in headers where k != "host" { request.setValue(v, forHTTPHeaderField: k) }
            request.setValue(signed.authorization, forHTTPHeaderField: "Authorization")
            if let body { request.httpBody = body; request.setValue(String(body.count), forHTTPHeaderField: "Content-Length") }
            let answer: Answer
            do {
                answer = try await perform(request, toFile: toFile)
            } catch let error as S3Error {
                throw error
            } catch {
                if attempt < 4 && !(error is CancellationError) {
                    try await Task.sleep(for: .milliseconds(250 << attempt))
                    continue
                }
                throw S3Error(status: nil, code: nil, message: "S3 at \(connection.displayEndpoint) did not answer \(what): \(error.localizedDescription)")
            }
            if (200..<300).contains(answer.status) || allow.contains(answer.status) {
                // A copy or a completed multipart upload may fail after its 200 has been sent.
                if errorsIn200, answer.text.contains("<Error>") {
                    throw error(answer, what)
                }
                return answer
            }
            if [500, 502, 503, 504].contains(answer.status) && attempt < 4 {
                try await Task.sleep(for: .milliseconds(250 << attempt))
                continue
            }
            throw error(answer, what)
        }
    }

    func perform(_ request: URLRequest, toFile: URL?) async throws -> Answer {
        func headers(_ r: URLResponse) -> (Int, [String: String]) {
            guard let h = r as? HTTPURLResponse else { return (0, [:]) }
            var out: [String: String] = [:]
            for (k, v) in h.allHeaderFields { out[String(describing: k).lowercased()] = String(describing: v) }
            return (h.statusCode, out)
        }
        guard let toFile else {
            let (data, response) = try await session.data(for: request)
            let (status, h) = headers(response)
            return Answer(status: status, headers: h, body: data)
        }
        let (temp, response) = try await session.download(for: request)
        let (status, h) = headers(response)
        guard (200..<300).contains(status) else {
            let body = (try? Data(contentsOf: temp)) ?? Data()
            try? FileManager.default.removeItem(at: temp)
            return Answer(status: status, headers: h, body: body)
        }
        _ = try? FileManager.default.removeItem(at: toFile)
        do {
            try FileManager.default.moveItem(at: temp, to: toFile)
        } catch {
            // Another file system: copy, then drop the temporary file.
            try FileManager.default.copyItem(at: temp, to: toFile)
            try? FileManager.default.removeItem(at: temp)
        }
        return Answer(status: status, headers: h, body: Data())
    }

    func error(_ a: Answer, _ what: String) -> S3Error {
        let xml = Substring(a.text)
        let code = S3XML.value("Code", in: xml) ?? a.header("x-amz-error-code") ?? (a.status == 404 ? "NoSuchKey" : nil)
        let message = S3XML.value("Message", in: xml) ?? a.header("x-amz-error-message") ?? HTTPURLResponse.localizedString(forStatusCode: a.status)
        var text = "S3 answered \(a.status) \(code ?? "")".trimmingCharacters(in: .whitespaces) + " to \(what): \(message)"
        switch code {
        case "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId", "ExpiredToken", "InvalidToken":
            text += " — check the access key and secret of connection `\(name)`"
        case "AccessDenied":
            text += " — the access key of connection `\(name)` may not do this"
        case "NoSuchBucket":
            text += " — the bucket does not exist on this server"
        case "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect":
            text += " — check the region of connection `\(name)` (it is \(connection.region))"
        default: break
        }
        return S3Error(status: a.status, code: code, message: text)
    }

    // MARK: Formats

    static func unquote(_ s: String) -> String {
        s.count >= 2 && s.hasPrefix("\"") && s.hasSuffix("\"") ? String(s.dropFirst().dropLast()) : s
    }

    /// `Fri, 04 Dec 2026 05:06:07 GMT`.
    static func parseHTTPDate(_ s: String) -> Date? {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f.date(from: s)
    }
}
