#!/usr/bin/env python3
"""Start-up time to /health/ready = 200 (migrated and empty database) and idle resident memory.

Loopback PostgreSQL without TLS, so sslmode=disable (compose's setting); the default sslmode=prefer
is measured too. Usage: [BIN=path] bench/startup.py [runs]   (needs target/release/cloud-optimizer, or
the binary BIN names, and PostgreSQL on 127.0.0.1)
"""
import os, socket, statistics, subprocess, sys, time, urllib.request

BIN = os.environ.get("BIN") or os.path.join(os.path.dirname(__file__), "..", "target", "release", "cloud-optimizer")
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def psql(sql):
    subprocess.run(["psql", f"{PG}/postgres", "-qc", sql], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=0.5) as r:
            return r.status == 200
    except Exception:
        return False


def start(db, params=""):
    port = free_port()
    env = {"DATABASE_URL": f"{PG}/{db}{params}", "PORT": str(port), "METRICS_PORT": "0", "LOG_LEVEL": "warn",
           "KB_PATH": os.path.join(os.path.dirname(__file__), "..", "data", "compliance")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready(port):
        if proc.poll() is not None:
            raise SystemExit("server exited")
        time.sleep(0.002)
    return proc, time.perf_counter() - t0


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def main():
    empty, migrated, prefer, rss = [], [], [], []
    for i in range(RUNS):
        db = f"bench_startup_{os.getpid()}_{i}"
        psql(f"DROP DATABASE IF EXISTS {db}"); psql(f"CREATE DATABASE {db}")
        proc, t = start(db, "?sslmode=disable"); empty.append(t); proc.terminate(); proc.wait()
        proc, t = start(db); prefer.append(t); proc.terminate(); proc.wait()
        proc, t = start(db, "?sslmode=disable"); migrated.append(t)
        time.sleep(2)  # idle (the KB read into memory after start-up included), then measure
        rss.append(rss_mb(proc.pid)); proc.terminate(); proc.wait()
        psql(f"DROP DATABASE {db}")
    f = lambda xs: f"median {statistics.median(xs)*1000:.0f} ms (min {min(xs)*1000:.0f}, max {max(xs)*1000:.0f})"
    print(f"runs: {RUNS}")
    print(f"ready on an empty database (migrations + KB load): {f(empty)}")
    print(f"ready on a migrated database with the KB loaded:   {f(migrated)}")
    print(f"  the same with sslmode=prefer (TLS attempt refused): {f(prefer)}")
    print(f"idle RSS after start: median {statistics.median(rss):.1f} MB (max {max(rss):.1f})")


main()
