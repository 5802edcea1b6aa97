#!/usr/bin/env python3
"""N slow clients (one request-head byte per second each) against a proxy, while one fast
client measures ordinary requests. Prints JSON: how many slow clients were answered 408 or
closed, and the fast client's request times. Usage: slow-clients.py PORT N SECONDS"""
import asyncio, json, sys, time

PORT, N, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
HEAD = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"

async def slow(result):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    except OSError:
        result["connect_failed"] += 1
        return
    result["connected"] += 1
    deadline = time.time() + SECONDS
    i = 0
    answer = b""
    was_reset = False
    while time.time() < deadline:
        if i < len(HEAD) - 2:  # never complete the head
            try:
                writer.write(HEAD[i:i + 1]); await writer.drain(); i += 1
            except OSError:
                break
        try:
            chunk = await asyncio.wait_for(reader.read(1024), timeout=1.0)
            if not chunk:
                result["closed"] += 1
                break
            answer += chunk
            if answer.startswith(b"HTTP/1.1 408"):
                # Answered: now only the close is awaited, however long this loop lags. With a
                # thousand coroutines on a loaded machine, waiting for it one lagging iteration
                # at a time missed closes that had happened (all 1,000 got their 408 once,
                # but only 876 had seen the end by the deadline).
                rest = await asyncio.wait_for(reader.read(), timeout=10.0)
                answer += rest
                result["closed"] += 1
                break
        except asyncio.TimeoutError:
            pass
        except OSError:
            # A byte sent after the proxy closed draws a reset, which can discard the 408.
            result["closed"] += 1
            was_reset = True
            break
    if answer.startswith(b"HTTP/1.1 408"):
        result["got_408"] += 1
    elif was_reset:
        result["reset"] += 1
    writer.close()

async def fast(times):
    end = time.time() + SECONDS
    while time.time() < end:
        t0 = time.time()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            writer.write(b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
        except OSError:
            data = b""
        if data.startswith(b"HTTP/1.1 200"):
            times.append((time.time() - t0) * 1000)
        else:
            times.append(-1)
        await asyncio.sleep(0.1)

async def main():
    result = {"connected": 0, "connect_failed": 0, "closed": 0, "reset": 0, "got_408": 0}
    times = []
    await asyncio.gather(*[slow(result) for _ in range(N)], fast(times))
    ok = sorted(t for t in times if t >= 0)
    result["fast_requests"] = len(times)
    result["fast_failed"] = sum(1 for t in times if t < 0)
    result["fast_p50_ms"] = ok[len(ok) // 2] if ok else None
    result["fast_max_ms"] = ok[-1] if ok else None
    print(json.dumps(result))

asyncio.run(main())
