import Foundation

/// Just enough XML for S3's answers (`ListBucketResult`, `InitiateMultipartUploadResult`,
/// `CopyObjectResult`, `DeleteResult`, `Error`): flat elements found by name, their text with
/// the five entities and numeric references decoded. S3 never nests an element in one of the
/// same name, so a scan for the closing tag is exact.
enum S3XML {
    /// The raw inner text of every `<name>…</name>` (and `<name/>`, as empty) in `xml`, in order.
    static func elements(_ name: String, in xml: Substring) -> [Substring] {
        var out: [Substring] = []
        let open = "<" + name, close = "</" + name + ">"
        var rest = xml[...]
        while let start = rest.range(of: open) {
            let afterName = start.upperBound
            guard afterName < rest.endIndex else { break }
            let next = rest[afterName]
            // `<Key>` must not match `<KeyCount>`.
            guard next == ">" || next == " " || next == "/" || next == "\n" || next == "\t" else { rest = rest[afterName...]; continue }
            guard let tagEnd = rest[afterName...].firstIndex(of: ">") else { break }
            if rest[rest.index(before: tagEnd)] == "/" {
                out.append(rest[tagEnd..<tagEnd])
                rest = rest[rest.index(after: tagEnd)...]
                continue
            }
            let bodyStart = rest.index(after: tagEnd)
            guard let end = rest[bodyStart...].range(of: close) else { break }
            out.append(rest[bodyStart..<end.lowerBound])
            rest = rest[end.upperBound...]
        }
        return out
    }

    /// The decoded text of the first `<name>` in `xml`.
    static func value(_ name: String, in xml: Substring) -> String? {
        elements(name, in: xml).first.map { decode($0) }
    }

    /// `&amp;` `&lt;` `&gt;` `&quot;` `&apos;` and `&#…;` references decoded.
    static func decode(_ s: Substring) -> String {
        guard s.contains("&") else { return String(s) }
        var out = "", i = s.startIndex
        while i < s.endIndex {
            if s[i] == "&", let semi = s[i...].prefix(12).firstIndex(of: ";") {
                let entity = s[s.index(after: i)..<semi]
                var replacement: String?
                switch entity {
                case "amp": replacement = "&"
                case "lt": replacement = "<"
                case "gt": replacement = ">"
                case "quot": replacement = "\""
                case "apos": replacement = "'"
                default:
                    if entity.hasPrefix("#x") || entity.hasPrefix("#X"), let v = UInt32(entity.dropFirst(2), radix: 16), let u = Unicode.Scalar(v) {
                        replacement = String(Character(u))
                    } else if entity.hasPrefix("#"), let v = UInt32(entity.dropFirst()), let u = Unicode.Scalar(v) {
                        replacement = String(Character(u))
                    }
                }
                if let replacement {
                    out += replacement
                    i = s.index(after: semi)
                    continue
                }
            }
            out.append(s[i])
            i = s.index(after: i)
        }
        return out
    }

    /// `text` escaped for an element's content.
    static func escape(_ text: String) -> String {
        var out = ""
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(ch)
            }
        }
        return out
    }
}
