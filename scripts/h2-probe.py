#!/usr/bin/python3
"""Sends one deliberately odd HTTP/2 exchange to a server and prints what came back as JSON.

Frames are built with hyperframe and HPACK with hpack (both from the `h2` distribution, apt
python3-h2), never through h2's connection state machine: the point is to send what a correct
client would refuse to. Usage: h2-probe.py CASE PORT [AUTHORITY]
"""
import json
import socket
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Probe:
    def __init__(self, port, authority):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.authority = authority
        self.enc = Encoder()
        self.dec = Decoder()
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        self.buf = b""
        self.auto_window = True
        self.result = {"responses": {}, "resets": {}, "goaway": None, "closed": False, "pings_acked": 0}

    def send(self, *frames):
        flat = []
        for f in frames:
            flat += f if isinstance(f, list) else [f]
        data = b"".join(f.serialize() for f in flat)
        try:
            self.sock.sendall(data)
        except OSError:
            self.result["closed"] = True

    def headers(self, stream, fields, end_stream=True):
        """HEADERS, plus CONTINUATION frames when the block exceeds the default frame size."""
        block = self.enc.encode(fields, huffman=False)
        pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)] or [b""]
        f = HeadersFrame(stream)
        f.data = pieces[0]
        if end_stream:
            f.flags.add("END_STREAM")
        frames = [f]
        for piece in pieces[1:]:
            c = ContinuationFrame(stream)
            c.data = piece
            frames.append(c)
        frames[-1].flags.add("END_HEADERS")
        return frames

    def request(self, stream, extra=(), method="GET", path="/", end_stream=True, authority=True):
        fields = [(":method", method), (":scheme", "http"), (":path", path)]
        if authority:
            fields.append((":authority", self.authority))
        return self.headers(stream, fields + list(extra), end_stream)

    def read(self, until, timeout=5.0):
        """Reads frames until `until(result)` is true, the peer closes, or the time is up."""
        deadline = time.time() + timeout
        while time.time() < deadline and not until(self.result):
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                self.result["closed"] = True
                break
            if not chunk:
                self.result["closed"] = True
                break
            self.buf += chunk
            self._frames()
        return self.result

    def _frames(self):
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            self._handle(frame)

    def _handle(self, f):
        r = self.result
        sid = str(f.stream_id)
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(f, PingFrame) and "ACK" in f.flags:
            r["pings_acked"] += 1
        elif isinstance(f, HeadersFrame):
            fields = dict(self.dec.decode(f.data, raw=False))
            resp = r["responses"].setdefault(sid, {"body": "", "ended": False})
            if ":status" in fields:
                resp["status"] = int(fields[":status"])
                resp["headers"] = fields
            else:
                resp["trailers"] = fields
            if "END_STREAM" in f.flags:
                resp["ended"] = True
        elif isinstance(f, DataFrame):
            resp = r["responses"].setdefault(sid, {"body": "", "ended": False})
            resp["body"] += f.data.decode("utf-8", "replace")
            if f.data and self.auto_window:
                # Keep the windows open so that large bodies arrive.
                self.send(WindowUpdateFrame(0, window_increment=len(f.data)),
                          WindowUpdateFrame(f.stream_id, window_increment=len(f.data)))
            if "END_STREAM" in f.flags:
                resp["ended"] = True
        elif isinstance(f, RstStreamFrame):
            r["resets"][sid] = f.error_code
        elif isinstance(f, GoAwayFrame):
            r["goaway"] = f.error_code


def answered(stream):
    return lambda r: str(stream) in r["resets"] or r["responses"].get(str(stream), {}).get("ended") or r["goaway"] is not None


def main():
    case, port = sys.argv[1], int(sys.argv[2])
    p = Probe(port, sys.argv[3] if len(sys.argv) > 3 else "h2.local")
    if case == "get":
        p.send(p.request(1))
        p.read(answered(1))
    elif case == "uppercase-name":
        p.send(p.request(1, [("X-Upper", "1")]))
        p.read(answered(1))
    elif case == "connection-field":
        p.send(p.request(1, [("connection", "keep-alive")]))
        p.read(answered(1))
    elif case == "value-whitespace":
        p.send(p.request(1, [("x-pad", " padded ")]))
        p.read(answered(1))
    elif case == "authority-host-mismatch":
        p.send(p.request(1, [("host", "other.local")]))
        p.read(answered(1))
    elif case == "host-only":
        p.send(p.request(1, [("host", p.authority)], authority=False))
        p.read(answered(1))
    elif case == "cookie-crumbs":
        p.send(p.request(1, [("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]))
        p.read(answered(1))
    elif case == "content-length-mismatch":
        p.send(p.request(1, [("content-length", "10")], method="POST", end_stream=False))
        d = DataFrame(1, data=b"abc")
        d.flags.add("END_STREAM")
        p.send(d)
        p.read(answered(1))
    elif case == "rapid-reset":
        # Open and cancel streams as fast as possible (CVE-2023-44487), then ask for a response.
        frames = []
        for i in range(3000):
            sid = 1 + 2 * i
            frames += [p.request(sid), RstStreamFrame(sid, error_code=8)]
        p.send(*frames)
        p.read(lambda r: r["goaway"] is not None, timeout=5)
    elif case == "ping-flood":
        p.send(*[PingFrame(0, opaque_data=b"12345678") for _ in range(5000)])
        p.read(lambda r: r["goaway"] is not None)
    elif case == "settings-flood":
        p.send(*[SettingsFrame(0) for _ in range(5000)])
        p.read(lambda r: r["goaway"] is not None)
    elif case == "empty-data-flood":
        p.send(p.request(1, method="POST", end_stream=False))
        p.send(*[DataFrame(1, data=b"") for _ in range(5000)])
        p.read(lambda r: r["goaway"] is not None)
    elif case == "window-overflow":
        p.send(WindowUpdateFrame(0, window_increment=2**31 - 1), WindowUpdateFrame(0, window_increment=2**31 - 1))
        p.read(lambda r: r["goaway"] is not None)
    elif case == "many-fields":
        p.send(p.request(1, [("x-f%d" % i, "v") for i in range(150)]))
        p.read(answered(1))
    elif case == "long-path":
        p.send(p.request(1, path="/" + "a" * 20000))
        p.read(answered(1))
    elif case in ("over-concurrency", "over-concurrency-acked"):
        # Open 8 slow streams at once: before the server's SETTINGS were acknowledged (the client
        # could not know the limit yet), or after.
        if case == "over-concurrency-acked":
            p.read(lambda r: False, timeout=0.3)
        p.send(*[p.request(1 + 2 * i, path="/slow?delay_ms=800") for i in range(8)])
        p.read(lambda r: all(answered(1 + 2 * i)(r) for i in range(8)), timeout=10)
        for r in p.result["responses"].values():
            r["body"] = r["body"][:60]
    elif case == "tiny-window":
        # A slow reader by flow control: a 1-byte window and a request for a large body, held
        # open for a few seconds without ever opening the window.
        p.auto_window = False
        s = SettingsFrame(0)
        s.settings[SettingsFrame.INITIAL_WINDOW_SIZE] = 1
        p.send(s, p.request(1, path="/big?bytes=200000000"))
        p.read(lambda r: False, timeout=float(sys.argv[4]) if len(sys.argv) > 4 else 3.0)
        p.result["body_bytes"] = len(p.result["responses"].get("1", {}).get("body", ""))
        for r in p.result["responses"].values():
            r["body"] = r["body"][:100]
    else:
        raise SystemExit("unknown case " + case)
    p.read(lambda r: False, timeout=0.2)
    print(json.dumps(p.result))


if __name__ == "__main__":
    main()
