#!/usr/bin/env python3
"""Holds N idle keep-alive connections to a proxy and reports the proxy's resident memory per
connection (issue 9: "10,000 idle keep-alive connections, RSS per connection").

Each connection makes one request and reads the whole response, so that the proxy has parsed,
routed and forwarded on it (an idle connection that never spoke costs less than a used one);
then every connection stays open and silent while the proxy's RSS is read again.

  idle-clients.py PORT COUNT PID   (PID: the proxy; its child processes are counted too)
Prints one line: `idle: N connections, rss before B KiB, after A KiB, per connection P KiB, failed F`.
"""
import os, selectors, socket, sys, time


def rss_kib(pid):
    """VmRSS of pid and of its children (nginx's workers), in KiB."""
    pids = [pid]
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    port, count, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    request = b"GET /13 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    # Warm the proxy (upstream connection, first allocations) before the baseline.
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            while s.recv(65536):
                pass
    time.sleep(1.0)
    before = rss_kib(pid)
    socks, failed = [], 0
    sel = selectors.DefaultSelector()
    # Open in batches of 500 with the requests in flight together, like a client pool would.
    for start in range(0, count, 500):
        batch = []
        for _ in range(min(500, count - start)):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(request)
                s.setblocking(False)
                batch.append(s)
                sel.register(s, selectors.EVENT_READ, bytearray())
            except OSError:
                failed += 1
        pending = len(batch)
        deadline = time.time() + 30
        while pending and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                buf = key.data
                try:
                    chunk = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    failed += 1
                    sel.unregister(key.fileobj)
                    pending -= 1
                    continue
                buf += chunk
                head, sep, body = bytes(buf).partition(b"\r\n\r\n")
                if sep and len(body) >= 13:
                    sel.unregister(key.fileobj)
                    pending -= 1
        failed += pending
        socks += batch
    time.sleep(2.0)
    after = rss_kib(pid)
    held = len(socks) - failed
    per = (after - before) / held if held else float("nan")
    print(f"idle: {held} connections, rss before {before} KiB, after {after} KiB, per connection {per:.2f} KiB, failed {failed}")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
