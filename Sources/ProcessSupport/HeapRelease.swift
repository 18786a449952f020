#if canImport(Glibc)
import Glibc
#endif

/// Returns the heap's free memory to the system (glibc's `malloc_trim`; a no-op elsewhere).
/// glibc keeps freed memory in its arenas for reuse, so a process that once needed much keeps it.
public func releaseFreeHeapMemory() {
    if let f = mallocTrim { _ = f(0) }
}

/// `malloc_trim` is not in Swift's Glibc module (it is declared in malloc.h).
private let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    #if canImport(Glibc)
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
    return unsafeBitCast(sym, to: (@convention(c) (Int) -> Int32).self)
    #else
    return nil
    #endif
}()
