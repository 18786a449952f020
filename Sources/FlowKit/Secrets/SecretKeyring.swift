import Crypto
public import Foundation

/// The keys that seal connections and variables: AES-256-GCM, from `FLOWKIT_SECRET_KEY`.
///
/// The variable holds one or more keys, comma-separated, each 32 random bytes in base64 (or 64
/// hex digits) — `flowctl secret-key new` prints one. The first key seals; every key opens, so a
/// key is rotated by putting the new one first (`NEW,OLD`) on every process, running
/// `flowctl secret-key rotate` (which seals every stored value again with the first key), then
/// dropping the old one — Airflow's Fernet rotation, with AES-GCM.
///
/// A sealed value is `fk1:<key id>:<base64 of nonce, ciphertext and tag>`; the key id (8 hex
/// digits of a hash of the key) says which key opens it, and a value is bound to what it is
/// (`connection:warehouse`), so that a sealed value moved to another name does not open.
public struct SecretKeyring: Sendable {
    /// The environment variable the keys come from.
    public static let variable = "FLOWKIT_SECRET_KEY"

    struct Key: Sendable {
        let id: String
        let key: SymmetricKey
    }
    let keys: [Key]

    /// The id of the key that seals.
    public var primaryKeyId: String { keys[0].id }
    /// Every key's id, the sealing one first.
    public var keyIds: [String] { keys.map(\.id) }

    /// Keys from `spec` (`KEY[,OLDKEY…]`); errors name the variable and the key at fault.
    public init(_ spec: String) throws {
        let parts = spec.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw SecretError("\(Self.variable) is empty: set it to a key from `flowctl secret-key new`") }
        var keys: [Key] = []
        for (i, p) in parts.enumerated() {
            guard let bytes = Self.decodeKey(p) else {
                throw SecretError("\(Self.variable): key \(i + 1) of \(parts.count) is not 32 bytes in base64 or 64 hex digits "
                                  + "(make one with `flowctl secret-key new` or `openssl rand -base64 32`)")
            }
            keys.append(Key(id: Self.keyId(bytes), key: SymmetricKey(data: bytes)))
        }
        self.keys = keys
    }

    /// The keyring of `FLOWKIT_SECRET_KEY`, or nil when it is unset.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> SecretKeyring? {
        guard let v = environment[variable], !v.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        return try SecretKeyring(v)
    }

    /// A new random key, in base64.
    public static func newKey() -> String {
        Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }).base64EncodedString()
    }

    static func decodeKey(_ text: String) -> [UInt8]? {
        if text.count == 64, text.allSatisfy(\.isHexDigit) {
            var out: [UInt8] = []
            var i = text.startIndex
            while i < text.endIndex {
                let j = text.index(i, offsetBy: 2)
                out.append(UInt8(text[i..<j], radix: 16)!)
                i = j
            }
            return out
        }
        guard let d = Data(base64Encoded: text), d.count == 32 else { return nil }
        return Array(d)
    }

    static func keyId(_ bytes: [UInt8]) -> String {
        Crypto.SHA256.hash(data: Data("flowkit-secret-key-id:".utf8) + Data(bytes)).prefix(4).map { String(format: "%02x", $0) }.joined()
    }

    /// `plaintext` sealed with the first key, bound to `context` (e.g. `connection:warehouse`).
    public func seal(_ plaintext: String, context: String) throws -> String {
        let k = keys[0]
        let box = try AES.GCM.seal(Data(plaintext.utf8), using: k.key, authenticating: Data(context.utf8))
        return "fk1:\(k.id):\(box.combined!.base64EncodedString())"
    }

    /// The key id a sealed value names, or nil when it is not a sealed value.
    public static func keyId(of sealed: String) -> String? {
        let parts = sealed.split(separator: ":", maxSplits: 2)
        guard parts.count == 3, parts[0] == "fk1" else { return nil }
        return String(parts[1])
    }

    /// Opens a sealed value; errors say whether the key is missing or the value was altered.
    public func open(_ sealed: String, context: String) throws -> String {
        let parts = sealed.split(separator: ":", maxSplits: 2)
        guard parts.count == 3, parts[0] == "fk1", let combined = Data(base64Encoded: String(parts[2])) else {
            throw SecretError("\(context) is not a sealed value FlowKit wrote")
        }
        guard let k = keys.first(where: { $0.id == parts[1] }) else {
            throw SecretError("\(context) is sealed with key \(parts[1]), which \(Self.variable) here does not hold (it holds \(keyIds.joined(separator: ", "))): "
                              + "give every process the same keys")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: combined)
            let plain = try AES.GCM.open(box, using: k.key, authenticating: Data(context.utf8))
            guard let s = String(data: plain, encoding: .utf8) else { throw SecretError("\(context) is not text") }
            return s
        } catch let e as SecretError {
            throw e
        } catch {
            throw SecretError("\(context) does not open with key \(k.id): it was altered, or sealed for another name")
        }
    }
}

/// A problem with the secret keys or a sealed value; the message says what to do.
public struct SecretError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
