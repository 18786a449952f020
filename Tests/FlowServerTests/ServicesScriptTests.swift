import Foundation
import Testing
@testable import FlowCommands

@Suite("One way to start local servers")
struct ServicesScriptTests {
    @Test("flowctl standalone carries exactly scripts/services.sh (regenerate with scripts/embed_services.sh)")
    func embeddedScriptMatches() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/services.sh")
        #expect(EmbeddedServicesScript.text == (try String(contentsOf: file, encoding: .utf8)).trimmingTrailingNewline)
    }
}

extension String {
    /// The script's text as the generated literal holds it (a multi-line literal drops the last newline).
    var trimmingTrailingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
