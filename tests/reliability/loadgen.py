"""A load generator for the reliability tests: `python loadgen.py URL PATH --requests N`.

It runs in a process of its own, so the server under test shares no interpreter (nor GIL) with
the load. `PATH` is a template: `{i}` becomes the request's number, from `--start` on, so every
request is distinct and the tasks it queues can be told apart. Connections are HTTP/1.1
keep-alive over raw asyncio streams (a few microseconds per request, where an HTTP client
library would cost more than the server). Each request waits for its complete response; a
connection that fails is counted as an error and reopened.

It prints one JSON object: requests sent, status counts, errors, and latency percentiles (ms);
with `--by-request`, also each request's status (0: no answer). When the server cannot be
reached any more (it was killed), the requests not yet sent are counted as errors, not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit


async def _one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str
) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run(
    url: str, template: str, requests: int, concurrency: int, start: int, detail: bool = False
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    numbers = iter(range(start, start + requests))
    statuses: Counter[int] = Counter()
    by_request: dict[int, int] = {}
    latencies: list[float] = []
    errors = 0

    async def connection() -> None:
        nonlocal errors
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return  # the server is gone: what is left is counted below
        try:
            for number in numbers:
                begin = time.perf_counter()
                by_request[number] = 0
                try:
                    status = await _one(reader, writer, host, template.format(i=number))
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    try:
                        reader, writer = await asyncio.open_connection(host, port)
                    except OSError:
                        return
                    continue
                latencies.append(time.perf_counter() - begin)
                statuses[status] += 1
                by_request[number] = status
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    errors += requests - len(by_request)  # never sent: the server could not be reached

    def percentile(p: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)

    return {
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "seconds": round(elapsed, 2),
        "rps": round(requests / elapsed) if elapsed else 0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        **({"by_request": {str(k): v for k, v in sorted(by_request.items())}} if detail else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("path", help="path template; {i} is the request number")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--by-request", action="store_true", help="each request's status too")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.url, args.path, args.requests, args.concurrency, args.start, args.by_request)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
