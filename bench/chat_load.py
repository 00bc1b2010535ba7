#!/usr/bin/env python3
"""Chat streaming latency and idle-stream memory of a running server (issue #7).

  latency  POST /api/v1/chat with `Accept: text/event-stream`, at 1 and at N concurrent clients
           (each client asks its questions one after another): time from sending the request to
           the `start` event and to the `done` event, p50/p95/p99/max in milliseconds.
  idle     opens M streams that stay open without events (GET /api/v1/chat/messages/{id}/events
           of a message still being answered, which waits for the message's next event and
           sends a keep-alive comment every 15 s) and reports the server's resident memory
           before and with them open, per stream.

    bench/chat_load.py --base-url http://127.0.0.1:8000 --api-key co_... \\
        [--concurrency 50] [--requests 20] [--idle 1000] [--pid SERVER_PID] [--database-url URL]

The questions are those of tests/chat/questions.json, in turn. `idle` needs --pid (to read
/proc/PID/status) and --database-url (psql inserts one message in state `streaming` to follow).
The server must allow the load: RATE_LIMIT_PER_MINUTE and RATE_LIMIT_IP_PER_MINUTE well above
the request count, and no trial limit in the way (TRIAL_MODE=false). Python 3 standard library.
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
QUESTIONS = os.path.join(os.path.dirname(HERE), "tests", "chat", "questions.json")


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


async def open_request(host, port, method, path, key, body=None, accept="text/event-stream"):
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Accept: {accept}\r\nConnection: close\r\n"
    )
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        rest = await reader.read(4096)
        writer.close()
        raise RuntimeError(f"{method} {path}: {status.decode().strip()} {rest[:300]!r}")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return reader, writer


async def ask(host, port, key, question):
    """(ms to `start`, ms to `done`) of one streamed answer."""
    sent = time.perf_counter()
    reader, writer = await open_request(host, port, "POST", "/api/v1/chat", key, {"question": question})
    first = done = None
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if b"event: start" in line and first is None:
                first = time.perf_counter()
            if b"event: done" in line or b"event: error" in line:
                done = time.perf_counter()
                break
    finally:
        writer.close()
    if first is None or done is None:
        raise RuntimeError("stream ended without start/done")
    return (first - sent) * 1000, (done - sent) * 1000


async def latency(host, port, key, questions, concurrency, requests):
    firsts, dones, errors = [], [], []

    async def client(n):
        for i in range(requests):
            q = questions[(n * requests + i) % len(questions)]
            try:
                f, d = await ask(host, port, key, q)
                firsts.append(f)
                dones.append(d)
            except Exception as e:  # counted, never fatal
                errors.append(str(e))

    started = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    wall = time.perf_counter() - started
    # This client shares the machine's cores with the server: its own CPU time is printed so a
    # reader can see how much of the machine the measurement itself took.
    return firsts, dones, errors, wall, time.process_time() - cpu


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle(host, port, key, count, pid, database_url):
    message = str(uuid.uuid4())
    # A message still being answered (as if by another replica), for the streams to follow. The
    # bootstrap key is the nil uuid; other keys: pass their id with --key-id.
    key_id = ARGS.key_id
    sql = (
        "INSERT INTO chat_messages (id, api_key_id, question, status, intent, understanding, billed, created_at) "
        f"VALUES ('{message}', '{key_id}', 'bench', 'streaming', 'requirement_question', "
        "'{\"intent\":\"requirement_question\",\"frameworks\":[],\"services\":[],\"control_ids\":[]}', false, now())"
    )
    subprocess.run(["psql", "-q", database_url, "-c", sql], check=True)
    before = rss_kib(pid)
    streams = []
    path = f"/api/v1/chat/messages/{message}/events"
    for start in range(0, count, 100):
        batch = await asyncio.gather(
            *(open_request(host, port, "GET", path, key) for _ in range(min(100, count - start)))
        )
        streams.extend(batch)
    await asyncio.sleep(2)
    with_streams = rss_kib(pid)
    for _, writer in streams:
        writer.close()
    subprocess.run(
        ["psql", "-q", database_url, "-c", f"DELETE FROM chat_messages WHERE id = '{message}'"],
        check=True,
    )
    return before, with_streams


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default=os.environ.get("CO_API_KEY"))
    p.add_argument("--key-id", default="00000000-0000-0000-0000-000000000000",
                   help="id of the API key (the bootstrap key's is the nil uuid)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--requests", type=int, default=20, help="questions per client")
    p.add_argument("--idle", type=int, default=0, help="idle streams to open (0: skip)")
    p.add_argument("--pid", type=int)
    p.add_argument("--database-url")
    ARGS = p.parse_args()
    if not ARGS.api_key:
        sys.exit("--api-key or CO_API_KEY is required")
    url = urllib.parse.urlparse(ARGS.base_url)
    host, port = url.hostname, url.port or 80
    questions = [q["question"] for q in json.load(open(QUESTIONS))]

    for concurrency in (1, ARGS.concurrency):
        requests = ARGS.requests if concurrency > 1 else ARGS.requests * 5
        firsts, dones, errors, wall, cpu = asyncio.run(
            latency(host, port, ARGS.api_key, questions, concurrency, requests)
        )
        print(
            f"concurrency {concurrency:>3}: {len(dones)} answers in {wall:.1f} s ({len(dones) / wall:.0f}/s), "
            f"{len(errors)} errors | to start p50 {percentile(firsts, 50):.1f} p95 {percentile(firsts, 95):.1f} "
            f"p99 {percentile(firsts, 99):.1f} max {max(firsts or [0]):.1f} ms | to done p50 {percentile(dones, 50):.1f} "
            f"p95 {percentile(dones, 95):.1f} p99 {percentile(dones, 99):.1f} max {max(dones or [0]):.1f} ms"
            f" | client CPU {cpu / wall * 100:.0f} % of one core"
        )
        if errors:
            print("  first error:", errors[0])
    if ARGS.idle:
        if not (ARGS.pid and ARGS.database_url):
            sys.exit("--idle needs --pid and --database-url")
        before, with_streams = asyncio.run(
            idle(host, port, ARGS.api_key, ARGS.idle, ARGS.pid, ARGS.database_url)
        )
        print(
            f"idle streams {ARGS.idle}: RSS {before / 1024:.1f} MiB before, {with_streams / 1024:.1f} MiB open, "
            f"{(with_streams - before) / ARGS.idle:.1f} KiB per stream"
        )


if __name__ == "__main__":
    main()
