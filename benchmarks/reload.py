#!/usr/bin/env python3
"""Reload benchmark (issue 4): 10,000 Ingresses, reloaded while wrk loads the proxy.

Reports, for the manifests in one file and split over many files:
  - reload visibility: time from a file write to the first request served by the new route (p50, p99)
  - the data plane's p99 latency during reloads against a quiet run (same proxy, same load)
Every process is started here and ended by PID; every load run is bounded by wrk's -d.
"""
import http.client, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, ".build/release/sluice"))
INGRESSES = int(os.environ.get("INGRESSES", "10000"))
RELOADS = int(os.environ.get("RELOADS", "10"))
DURATION = int(os.environ.get("DURATION", "10"))

def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(port, host, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": host}); r = c.getresponse(); r.read(); return r.status
    finally:
        c.close()

def wrk_p99(port, host, seconds):
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", f"http://127.0.0.1:{port}/svc100/deep"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    v = float(m.group(1)); u = m.group(2)
    p99 = v / 1000 if u == "us" else v * 1000 if u == "s" else v
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert not errs, f"quiet run had non-2xx responses: {out}"
    return p99, rps, 0, "Socket errors" in out

def run(files):
    d = tempfile.mkdtemp(prefix="sluice-reload-")
    procs = []
    try:
        bport, pport = free_port(), free_port()
        procs.append(subprocess.Popen([SLUICE, "echo", "--listen", f"127.0.0.1:{bport}", "--name", "bench"], stdout=subprocess.DEVNULL))
        subprocess.run([SLUICE, "bench-routes", "--ingresses", str(INGRESSES), "--hosts", "2000", "--write", d,
                        "--files", str(files), "--endpoint", f"127.0.0.1:{bport}", "--write-only"], check=True)
        # The log lives outside the watched folder: writing it must not look like a rules change.
        logpath = d.rstrip("/") + ".log"
        log = open(logpath, "w")
        procs.append(subprocess.Popen([SLUICE, "serve", "--rules", d, "--http", f"127.0.0.1:{pport}", "--https", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "1"], stdout=log, stderr=log))
        wait_port(bport); wait_port(pport, 120)
        host = "host100.example.com"
        assert get(pport, host, "/svc100/deep") == 200, "the generated route does not answer"
        quiet = wrk_p99(pport, host, DURATION)
        # Reloads under load: each write adds a route for a new host to the last file.
        target = os.path.join(d, f"generated-{files - 1}.yaml")
        base = open(target).read()
        load = subprocess.Popen(["wrk", "-t1", "-c50", f"-d{DURATION}s", "--latency", "-H", f"Host: {host}", f"http://127.0.0.1:{pport}/svc100/deep"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        visible = []
        for i in range(RELOADS):
            newhost = f"new{i}.example.com"
            extra = f"""
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: new{i}, namespace: bench}}
spec:
  rules: [{{host: {newhost}, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: svc1, port: {{number: 80}}}}}}}}]}}}}]
"""
            tmp = target + ".tmp"
            with open(tmp, "w") as f: f.write(base + extra)
            t0 = time.time()
            os.rename(tmp, target)
            while get(pport, newhost) != 200:
                if time.time() - t0 > 30: raise RuntimeError("reload never visible")
                time.sleep(0.005)
            visible.append((time.time() - t0) * 1000)
            if os.environ.get("VERBOSE"): print(f"reload {i}: visible after {visible[-1]:.0f} ms", file=sys.stderr)
            time.sleep(max(0.0, DURATION / (RELOADS + 1) - visible[-1] / 1000))
        out = load.communicate(timeout=DURATION + 60)[0]
        m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
        v = float(m.group(1)); u = m.group(2)
        busy_p99 = v / 1000 if u == "us" else v * 1000 if u == "s" else v
        errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        visible.sort()
        p99v = visible[min(len(visible) - 1, int(len(visible) * 0.99))]
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".yaml"))
        log.flush()
        server_ms = [int(x) for x in re.findall(r"reload applied.*? ms=(\d+)|ms=(\d+) phases", open(logpath).read()) for x in x if x]
        print(f"| {files} | {size // 1024} KiB | {statistics.median(visible):.0f} ms | {p99v:.0f} ms | "
              f"{statistics.median(server_ms) if server_ms else float('nan'):.0f} ms | {quiet[0]:.2f} ms | {busy_p99:.2f} ms | "
              f"{busy_p99 / quiet[0]:.2f} | {(int(errs.group(1)) if errs else 0)} non-2xx{', socket errors' if 'Socket errors' in out else ''} |")
        sys.stdout.flush()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try: p.wait(timeout=40)
            except subprocess.TimeoutExpired: p.kill()
        if not os.environ.get("KEEP"):
            shutil.rmtree(d, ignore_errors=True)
            if os.path.exists(d.rstrip("/") + ".log"): os.remove(d.rstrip("/") + ".log")
        else: print("kept", d, file=sys.stderr)

print(f"{INGRESSES} Ingresses over 2,000 hosts; {RELOADS} reloads under wrk -t1 -c50 -d{DURATION}s; one worker")
print("| files | size | visible p50 | visible p99 | swap (server) p50 | quiet p99 | p99 during reloads | ratio | errors |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for files in [int(x) for x in os.environ.get("FILES", "1 100").split()]:
    run(files)
