import HotPathCases
import SluiceHTTP1
#if canImport(Glibc)
import Glibc
#endif

// Runs one hot-path operation ITERATIONS times, for callgrind to count its instructions:
//   HotPathInstructions CASE ITERATIONS
// `instructions.sh` collects only inside `measured` (callgrind's --toggle-collect) and runs each
// case at two iteration counts, so setup (the 10,000-Ingress table) and one-time costs cancel out.
// Synchronous and single-threaded on purpose: valgrind 3.19 dies when libdispatch starts a thread.

/// The only code callgrind counts.
@inline(never)
func measured(_ iterations: Int, _ operation: (Int) -> Void) {
    for i in 0..<iterations { operation(i) }
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let iterations = Int(arguments[2]), iterations > 0 else {
    print("usage: HotPathInstructions CASE ITERATIONS\ncases: parse-get parse-post parse-response route \(HotPathCases.balancers.map { balanceCase($0.balance) }.joined(separator: " "))")
    exit(64)
}

func balanceCase(_ b: some Any) -> String { "balance-\(b)" }

var sink = 0
switch arguments[1] {
case "parse-get":
    var parser = HTTP1Parser(kind: .request)
    HotPathCases.getRequest.withUnsafeBytes { p in
        measured(iterations) { _ in HotPathCases.parseGet(&parser, p) }
    }
case "parse-post":
    var parser = HTTP1Parser(kind: .request)
    HotPathCases.postRequest.withUnsafeBytes { p in
        measured(iterations) { _ in sink &+= HotPathCases.parseChunkedPost(&parser, p) }
    }
case "parse-response":
    var parser = HTTP1Parser(kind: .response)
    HotPathCases.response.withUnsafeBytes { p in
        measured(iterations) { _ in sink &+= HotPathCases.parseResponse(&parser, p) }
    }
case "route":
    // The table and the requests are built before the count starts.
    sink = HotPathCases.table.routes.count + HotPathCases.requests.count
    let scratch = HotPathCases.RouteScratch()
    measured(iterations) { i in if HotPathCases.route(i, scratch) { sink &+= 1 } }
case let name where name.hasPrefix("balance-"):
    guard let b = HotPathCases.balancers.first(where: { balanceCase($0.balance) == name }) else {
        print("unknown case \(name)")
        exit(64)
    }
    let pool = HotPathCases.pool(b.balance)
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15
    var k: Int64 = 0
    measured(iterations) { _ in HotPathCases.balance(pool, &h, &k) }
    sink = Int(k)
default:
    print("unknown case \(arguments[1])")
    exit(64)
}
// Printed so that the work cannot be optimised away.
print("\(arguments[1]) \(iterations) \(sink)")
