import Foundation

/// The OpenAPI 3.1 document of the API (`Sources/FlowServer/openapi.json`, served as is).
public enum OpenAPIDocument {
    public static let text: String = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
              let s = try? String(contentsOf: url, encoding: .utf8) else { return "{}" }
        return s
    }()
}
