import NIOCore

extension ByteBuffer {
    /// Adds bytes that just arrived to the unread bytes a parser has not consumed yet.
    ///
    /// When nothing is pending the incoming buffer is taken as it is (no copy: the common case of
    /// a whole request per read). Otherwise the unread bytes are first re-based into a fresh view,
    /// so that growing it copies only those bytes, never a whole receive buffer whose earlier
    /// slices are still in flight to the other side.
    @inlinable
    public mutating func receive(_ incoming: ByteBuffer) {
        if readableBytes == 0 {
            self = incoming
        } else {
            self = slice()
            var more = incoming
            writeBuffer(&more)
        }
    }
}
