// The parts of libnghttp2 that Sluice uses. nghttp2's API is plain functions and enums; the
// shims below exist only where Swift cannot reach a C construct directly (unions and the
// frame-type field of the common frame header).
#ifndef SLUICE_CNGHTTP2_SHIM_H
#define SLUICE_CNGHTTP2_SHIM_H

#include <nghttp2/nghttp2.h>

static inline uint8_t sluice_nghttp2_frame_type(const nghttp2_frame *frame) {
    return frame->hd.type;
}

static inline uint8_t sluice_nghttp2_frame_flags(const nghttp2_frame *frame) {
    return frame->hd.flags;
}

static inline int32_t sluice_nghttp2_frame_stream_id(const nghttp2_frame *frame) {
    return frame->hd.stream_id;
}

static inline size_t sluice_nghttp2_frame_length(const nghttp2_frame *frame) {
    return frame->hd.length;
}

static inline int sluice_nghttp2_headers_category(const nghttp2_frame *frame) {
    return (int)frame->headers.cat;
}

static inline uint32_t sluice_nghttp2_rst_error_code(const nghttp2_frame *frame) {
    return frame->rst_stream.error_code;
}

/// A data provider whose source carries nothing: the read callback finds the stream by id.
static inline nghttp2_data_provider sluice_nghttp2_data_provider(nghttp2_data_source_read_callback cb) {
    nghttp2_data_provider p;
    p.source.ptr = 0;
    p.read_callback = cb;
    return p;
}

#endif
