import NIOCore
import Testing
@testable import SluiceUpstream

/// `Endpoint.key` stands in for `==` where the idle pool compares endpoints on every request:
/// equal keys must mean the same socket address, and `==` must never be looser than the key.
@Suite struct EndpointTests {
    @Test func keysFollowAddressPortAndHost() throws {
        let a = try Endpoint(host: "127.0.0.1", port: 8080)
        let same = try Endpoint(host: "127.0.0.1", port: 8080)
        let otherPort = try Endpoint(host: "127.0.0.1", port: 8081)
        let otherAddress = try Endpoint(host: "127.0.0.2", port: 8080)
        #expect(a.key.exact)
        #expect(a.key == same.key && a == same)
        #expect(a.key != otherPort.key && a != otherPort)
        #expect(a.key != otherAddress.key && a != otherAddress)
    }

    @Test func ipv6AddressesUseAllTheirBytes() throws {
        let a = try Endpoint(host: "::1", port: 443)
        let b = try Endpoint(host: "::2", port: 443)
        let c = try Endpoint(host: "fe80::1", port: 443)
        #expect(a.key.exact && b.key.exact)
        #expect(a.key != b.key)
        #expect(a.key != c.key)
        #expect(try Endpoint(parsing: "[::1]:443").key == a.key)
    }

    @Test func theSameAddressUnderAnotherNameStaysAnotherEndpoint() throws {
        let byNumber = Endpoint(address: try SocketAddress(ipAddress: "127.0.0.1", port: 80))
        let byName = try Endpoint(host: "localhost", port: 80)
        guard case .v4 = byName.address else { return }  // localhost may resolve to ::1 first
        #expect(byNumber != byName)
        #expect(byNumber.key != byName.key)
    }

    @Test func unixSocketsHaveNoExactKey() throws {
        let e = Endpoint(address: try SocketAddress(unixDomainSocketPath: "/tmp/sluice-test.sock"))
        #expect(!e.key.exact)
    }
}
