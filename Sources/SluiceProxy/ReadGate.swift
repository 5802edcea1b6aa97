/// Whether a client connection may read now.
///
/// NIO asks to read after each read (auto-read); the HTTP/1.1 handler holds that read back while
/// the upstream cannot take more of the client's bytes (a body or a tunnel), and while pipelined
/// requests past their bound wait, and lets the held read go once neither holds. Holding the
/// read, instead of stopping and restarting reading, costs no `epoll_ctl` (DESIGN.md).
struct ReadGate {
    private(set) var pausedForUpstream = false
    private(set) var pausedForPipeline = false
    /// NIO asked while paused; the read is owed.
    private(set) var held = false

    var isOpen: Bool { !pausedForUpstream && !pausedForPipeline }

    /// NIO asks to read. True: read now. False: the read is held until the gate opens.
    mutating func requestRead() -> Bool {
        if isOpen { return true }
        held = true
        return false
    }

    /// More pipelined bytes wait than the bound allows: stop reading.
    mutating func pauseForPipeline() {
        pausedForPipeline = true
    }

    /// The waiting requests are being served. True: read now (a held read is released).
    mutating func resumePipeline() -> Bool {
        guard pausedForPipeline else { return false }
        pausedForPipeline = false
        return release()
    }

    /// The upstream's writability changed, or the exchange moved on. Client bytes are held back
    /// only while they go upstream (`forwarding`: a request body or a tunnel) and the upstream
    /// cannot take them. True: read now (a held read is released).
    mutating func upstream(writable: Bool, forwarding: Bool) -> Bool {
        let pause = !writable && forwarding
        guard pause != pausedForUpstream else { return false }
        pausedForUpstream = pause
        return pause ? false : release()
    }

    private mutating func release() -> Bool {
        guard held, isOpen else { return false }
        held = false
        return true
    }
}
