import CLinuxIO
import Glibc
import NIOCore

/// The socket calls SluiceIO's channels and listeners share, on raw descriptors.
enum Socket {
    @discardableResult
    static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) -> Int32 {
        var value = value
        return setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The socket's pending error (a failed connect's, a reset's), cleared by reading it.
    static func pendingError(_ fd: Int32) -> Int32 {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 { return errno }
        return error
    }

    static func localAddress(_ fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return rc == 0 ? address(storage) : nil
    }

    /// An IPv4 or IPv6 address as NIOCore spells it (nil for other families).
    static func address(_ storage: sockaddr_storage) -> SocketAddress? {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &storage) { SocketAddress($0.load(as: sockaddr_in.self)) }
        case AF_INET6:
            return withUnsafeBytes(of: &storage) { SocketAddress($0.load(as: sockaddr_in6.self)) }
        default:
            return nil
        }
    }

    /// True for the any-address (0.0.0.0 or ::), where a connection's local address is known
    /// only from the socket.
    static func isWildcard(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let a): return a.address.sin_addr.s_addr == 0
        case .v6(let a):
            return withUnsafeBytes(of: a.address.sin6_addr) { $0.allSatisfy { $0 == 0 } }
        case .unixDomainSocket: return false
        }
    }
}
