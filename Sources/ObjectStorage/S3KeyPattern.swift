/// What a key sensor or a transfer looks for: a literal key, a prefix, or a glob.
///
/// * A pattern with `*`, `?` or `[` is a glob: `*` matches within one path segment (never `/`),
///   `**` across segments, `?` one character other than `/`, `[abc]`, `[a-z]` and `[!abc]` one
///   character of (or not of) a set; `\` makes the next character literal.
/// * A pattern ending in `/` is a prefix: every key under it.
/// * Anything else is one exact key.
///
/// Listing asks the server only for the literal part before the first wildcard (`listPrefix`),
/// so `landing/2026-12-04/*.csv` lists `landing/2026-12-04/` and filters here.
public struct S3KeyPattern: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case exact, prefix, glob }

    public let pattern: String
    public let kind: Kind
    /// The longest literal start of the pattern: what to list.
    public let listPrefix: String
    private let tokens: [Token]

    enum Token: Sendable, Equatable {
        case literal(Character)
        case any            // ?
        case star           // *
        case globstar       // **
        case set([ClosedRange<Character>], negated: Bool)
    }

    public init(_ pattern: String) {
        self.pattern = pattern
        var toks: [Token] = [], prefix = "", literalSoFar = true
        let chars = Array(pattern)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            var token: Token
            switch c {
            case "\\" where i + 1 < chars.count:
                i += 1
                token = .literal(chars[i])
            case "*":
                if i + 1 < chars.count && chars[i + 1] == "*" {
                    token = .globstar
                    while i + 1 < chars.count && chars[i + 1] == "*" { i += 1 }
                } else {
                    token = .star
                }
            case "?": token = .any
            case "[":
                if let (set, negated, end) = Self.parseSet(chars, from: i) {
                    token = .set(set, negated: negated)
                    i = end
                } else {
                    token = .literal("[")
                }
            default: token = .literal(c)
            }
            if case .literal(let l) = token, literalSoFar { prefix.append(l) } else { literalSoFar = false }
            toks.append(token)
            i += 1
        }
        tokens = toks
        if !literalSoFar {
            kind = .glob
        } else if pattern.hasSuffix("/") || pattern.isEmpty {
            kind = .prefix
        } else {
            kind = .exact
        }
        listPrefix = prefix
    }

    /// `[…]` from `start`: its ranges, whether it is negated, and the index of its `]`.
    static func parseSet(_ c: [Character], from start: Int) -> ([ClosedRange<Character>], Bool, Int)? {
        var i = start + 1, negated = false, ranges: [ClosedRange<Character>] = []
        if i < c.count && (c[i] == "!" || c[i] == "^") { negated = true; i += 1 }
        var first = true
        while i < c.count {
            if c[i] == "]" && !first { return (ranges, negated, i) }
            first = false
            var lo = c[i]
            if lo == "\\" && i + 1 < c.count { i += 1; lo = c[i] }
            if i + 2 < c.count && c[i + 1] == "-" && c[i + 2] != "]" {
                let hi = c[i + 2]
                if lo <= hi { ranges.append(lo...hi) }
                i += 3
            } else {
                ranges.append(lo...lo)
                i += 1
            }
        }
        return nil
    }

    public var description: String { pattern }

    /// Whether `key` is what the pattern names.
    public func matches(_ key: String) -> Bool {
        switch kind {
        case .exact: return key == listPrefix       // the pattern with its escapes undone
        case .prefix: return key.hasPrefix(listPrefix)
        case .glob: return Self.match(tokens, Array(key))
        }
    }

    /// Glob matching by dynamic programming over (token, character): linear in their product,
    /// with no backtracking blow-up on patterns like `*a*a*a*b`.
    static func match(_ p: [Token], _ s: [Character]) -> Bool {
        // reach[j]: the first i tokens can match exactly s[0..<j].
        var reach = [Bool](repeating: false, count: s.count + 1)
        reach[0] = true
        for t in p {
            var next = [Bool](repeating: false, count: s.count + 1)
            switch t {
            case .star, .globstar:
                var open = false
                for j in 0...s.count {
                    if reach[j] { open = true }
                    next[j] = open
                    // A single star stops at a slash: it cannot extend past one.
                    if j < s.count && s[j] == "/" && t == .star { open = false }
                }
            default:
                for j in 0..<s.count where reach[j] {
                    let c = s[j]
                    let ok: Bool
                    switch t {
                    case .literal(let l): ok = c == l
                    case .any: ok = c != "/"
                    case .set(let ranges, let negated): ok = c != "/" && (ranges.contains { $0.contains(c) } != negated)
                    default: ok = false
                    }
                    if ok { next[j + 1] = true }
                }
            }
            reach = next
            if !reach.contains(true) { return false }
        }
        return reach[s.count]
    }
}
