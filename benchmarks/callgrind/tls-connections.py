#!/usr/bin/env python3
"""One TLS connection per request, in sequence, resuming the previous session like wrk does
(or not, with --full): the per-connection cost of the TLS listener for callgrind/run.sh.
Prints "status codes: N 2xx" in h2load's words so run.sh checks both loads the same way.

    tls-connections.py [--full] -n N https://127.0.0.1:PORT/
"""
import argparse, socket, ssl, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("-n", type=int, required=True)
ap.add_argument("--full", action="store_true", help="no session resumption")
ap.add_argument("url")
a = ap.parse_args()
u = urllib.parse.urlsplit(a.url)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
request = f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.hostname}\r\nConnection: close\r\n\r\n".encode()
session, ok, resumed = None, 0, 0
for _ in range(a.n):
    with socket.create_connection((u.hostname, u.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=u.hostname, session=None if a.full else session) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            resumed += s.session_reused
            if data.startswith(b"HTTP/1.1 2"):
                ok += 1
            session = s.session
print(f"status codes: {ok} 2xx ({resumed} resumed)")
