import Testing
@testable import FlowKit

@Suite("Retry policy")
struct RetryPolicyTests {
    @Test("a fixed delay stays the same for every try")
    func fixed() {
        let p = RetryPolicy(retries: 3, delay: .seconds(30))
        #expect((1...3).map { p.delay(afterTry: $0, unit: 0.5) } == [30, 30, 30])
        #expect(p.maxTries == 4)
    }

    @Test("exponential backoff doubles and is capped")
    func exponential() {
        let p = RetryPolicy(retries: 6, delay: .seconds(10), backoff: 2, maxDelay: .seconds(60))
        #expect((1...5).map { p.baseDelay(afterTry: $0) } == [10, 20, 40, 60, 60])
    }

    @Test("jitter moves the delay by at most its fraction either way")
    func jitter() {
        let p = RetryPolicy(retries: 1, delay: .seconds(100), jitter: 0.1)
        #expect(p.delay(afterTry: 1, unit: 0) == 90)
        #expect(p.delay(afterTry: 1, unit: 0.5) == 100)
        #expect(abs(p.delay(afterTry: 1, unit: 0.999_999) - 110) < 0.001)
    }
}
