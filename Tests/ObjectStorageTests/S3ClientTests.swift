import Crypto
import FlowKitTesting
import Foundation
@testable import ObjectStorage
import Testing

/// The S3 client against a real S3-compatible server (moto's, with SigV4 checked), boto3 the
/// second client: what one writes, the other reads.
@Suite("S3 client against moto", .serialized)
struct S3ClientTests {
    func withMoto(_ body: (MotoServer, S3Client) async throws -> Void) async throws {
        let moto = try await MotoServer.start()
        defer { moto.stop() }
        let client = try S3Client(url: moto.connectionURL(), name: "lake")
        try await client.createBucket("example")
        try await body(moto, client)
    }

    static func temp(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-s3-\(UUID().uuidString)-\(name)").path
    }

    /// A file of `mib` MiB of varied bytes; its hex SHA-256.
    static func bigFile(_ path: String, mib: Int) throws -> String {
        FileManager.default.createFile(atPath: path, contents: nil)
        let h = try #require(FileHandle(forWritingAtPath: path))
        defer { try? h.close() }
        var hasher = SHA256()
        var block = [UInt8](repeating: 0, count: 1 << 20)
        for i in 0..<mib {
            for j in stride(from: 0, to: block.count, by: 4096) { block[j] = UInt8(truncatingIfNeeded: i &* 31 &+ j / 4096) }
            let d = Data(block)
            hasher.update(data: d)
            h.write(d)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func sha256(file path: String) throws -> String {
        let h = try #require(FileHandle(forReadingAtPath: path))
        defer { try? h.close() }
        var hasher = SHA256()
        while let d = try h.read(upToCount: 1 << 20), !d.isEmpty { hasher.update(data: d) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    @Test("put, head, list with a prefix, get, copy, delete; boto3 reads what was written and writes what is read")
    func basics() async throws {
        try await withMoto { moto, s3 in
            try await s3.put(bucket: "example", key: "landing/día 1.csv", data: Data("a,b\n1,2\n".utf8))
            #expect(try moto.boto3("print(s3.get_object(Bucket='example', Key='landing/día 1.csv')['Body'].read().decode())") == "a,b\n1,2")
            try moto.boto3("s3.put_object(Bucket='example', Key='landing/x+y.csv', Body=b'hello')")
            #expect(String(decoding: try await s3.get(bucket: "example", key: "landing/x+y.csv"), as: UTF8.self) == "hello")
            let head = try #require(try await s3.head(bucket: "example", key: "landing/x+y.csv"))
            #expect(head.size == 5 && head.etag == "5d41402abc4b2a76b9719d911017c592")   // MD5 of "hello"
            #expect(try await s3.head(bucket: "example", key: "landing/none") == nil)
            let listed = try await s3.list(bucket: "example", prefix: "landing/")
            #expect(listed.objects.map(\.key) == ["landing/día 1.csv", "landing/x+y.csv"])
            #expect(listed.serverDate != nil)
            try await s3.copy(bucket: "example", from: "landing/x+y.csv", to: "archive/landing/x+y.csv")
            #expect(try moto.boto3("print(s3.get_object(Bucket='example', Key='archive/landing/x+y.csv')['Body'].read().decode())") == "hello")
            let deleted = try await s3.delete(bucket: "example", prefix: "landing/")
            #expect(deleted.count == 2)
            #expect(try await s3.list(bucket: "example", prefix: "landing/").objects.isEmpty)
            try await s3.delete(bucket: "example", key: "archive/landing/x+y.csv")
            #expect(try moto.boto3("print(s3.list_objects_v2(Bucket='example').get('KeyCount'))") == "0")
        }
    }

    @Test("a listing of more than one page (1,000 keys each) is read whole")
    func paging() async throws {
        try await withMoto { moto, s3 in
            try moto.boto3("""
                for i in range(1205): s3.put_object(Bucket='example', Key='many/%05d' % i, Body=b'')
                """)
            let all = try await s3.list(bucket: "example", prefix: "many/")
            #expect(all.objects.count == 1205)
            #expect(all.objects.last?.key == "many/01204")
            #expect(try await s3.list(bucket: "example", prefix: "many/", limit: 10).objects.count == 10)
        }
    }

    @Test("a 64 MiB upload goes in parts and boto3 reads it back byte for byte; a download streams to disk, checked by hash")
    func multipart() async throws {
        try await withMoto { moto, s3 in
            let source = Self.temp("big.bin"), target = Self.temp("back.bin")
            defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: target) }
            let hash = try Self.bigFile(source, mib: 64)
            let up = try await s3.upload(bucket: "example", key: "big/64.bin", from: source)
            #expect(up.bytes == 64 << 20 && up.parts == 8)
            #expect(up.etag.hasSuffix("-8"))   // S3's ETag of a multipart object: MD5 of the parts' MD5s, dash, count
            let remote = try moto.boto3("""
                h = hashlib.sha256()
                for chunk in s3.get_object(Bucket='example', Key='big/64.bin')['Body'].iter_chunks(1 << 20): h.update(chunk)
                print(h.hexdigest())
                """)
            #expect(remote == hash)
            let down = try await s3.download(bucket: "example", key: "big/64.bin", to: target)
            #expect(down.bytes == 64 << 20)
            #expect(try Self.sha256(file: target) == hash)
            // No multipart upload is left open.
            #expect(try moto.boto3("print(len(s3.list_multipart_uploads(Bucket='example').get('Uploads', [])))") == "0")
        }
    }

    @Test("streaming: a 192 MiB object goes up and comes back without this process holding it: upload memory is bounded by the parts in flight, a download's by nothing")
    func boundedMemory() async throws {
        try await withMoto { _, s3 in
            let source = Self.temp("stream.bin"), target = Self.temp("stream-back.bin")
            defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: target) }
            let hash = try Self.bigFile(source, mib: 192)
            let sampler = RSSSampler()
            var base = sampler.start()
            try await s3.upload(bucket: "example", key: "stream.bin", from: source)
            let uploadGrowth = (sampler.stop() - base) >> 20
            base = sampler.start()
            try await s3.download(bucket: "example", key: "stream.bin", to: target)
            let downloadGrowth = (sampler.stop() - base) >> 20
            #expect(try Self.sha256(file: target) == hash)
            // Four 8 MiB parts in flight, each also copied once by Foundation's HTTP stack, and the
            // allocator's slack: about 90 MiB here, whatever the object's size. Holding the object
            // whole would take 192 MiB or more.
            #expect(uploadGrowth < 128, "resident memory grew by \(uploadGrowth) MiB during a 192 MiB upload")
            #expect(downloadGrowth < 32, "resident memory grew by \(downloadGrowth) MiB during a 192 MiB download")
        }
    }

    @Test("a wrong secret: S3's 403 SignatureDoesNotMatch, named with the connection to check; a missing key and bucket are named too")
    func refusals() async throws {
        try await withMoto { moto, _ in
            let wrong = try S3Client(url: moto.connectionURL(secret: "not-the-secret"), name: "lake")
            do {
                _ = try await wrong.list(bucket: "example")
                Issue.record("a wrong secret was accepted")
            } catch let e as S3Error {
                #expect(e.status == 403 && e.code == "SignatureDoesNotMatch")
                #expect(e.message.contains("check the access key and secret of connection `lake`"))
                #expect(!e.message.contains("not-the-secret"))
            }
            let s3 = try S3Client(url: moto.connectionURL(), name: "lake")
            do {
                _ = try await s3.get(bucket: "example", key: "missing.csv")
                Issue.record("a missing key was read")
            } catch let e as S3Error {
                #expect(e.status == 404 && e.code == "NoSuchKey" && e.message.contains("/example/missing.csv"))
            }
            do {
                _ = try await s3.list(bucket: "nobucket")
                Issue.record("a missing bucket was listed")
            } catch let e as S3Error {
                #expect(e.code == "NoSuchBucket" && e.message.contains("the bucket does not exist"))
            }
        }
    }
}

/// Samples this process's resident set (from /proc/self/statm) every 20 ms until stopped.
final class RSSSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var peak = 0, running = false

    static func rss() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }

    /// Starts sampling; returns the resident set now.
    func start() -> Int {
        let now = Self.rss()
        lock.withLock { peak = now; running = true }
        Thread.detachNewThread { [self] in
            while lock.withLock({ running }) {
                let r = Self.rss()
                lock.withLock { peak = max(peak, r) }
                usleep(20_000)
            }
        }
        return now
    }

    /// Stops sampling; returns the highest resident set seen.
    func stop() -> Int { lock.withLock { running = false; return max(peak, Self.rss()) } }
}
