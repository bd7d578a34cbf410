"""In-process compare-and-set throughput of machines and artifacts (no sockets).

    python bench/cas_micro.py                      # SQLite (temp file) and PostgreSQL
    python bench/cas_micro.py --only sqlite --calls 3000

Creates an app with ``create_app``, one machine and one artifact, then calls
``service("machines").compare_and_set`` for each field and the artifacts plugin's
``ArtifactsService.update`` (header and body together) sequentially, and prints calls/s and this
process's CPU per call. PostgreSQL: a fresh database ``hs_micro_<pid>`` on
127.0.0.1:5432, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

from happy_socket_artifacts import ArtifactsService, Part

from happy_socket import Settings, create_app

PG = "postgresql://postgres@127.0.0.1:5432/"


def report(db: str, what: str, calls: int, wall: float, cpu: float) -> None:
    name = db.split(":")[0]
    print(f"{name:10} {what:12} {calls / wall:7,.0f}/s  {1e6 * cpu / calls:5.0f} µs CPU")


async def measure(db: str, calls: int) -> None:
    app = create_app(Settings(db=db, secret="s" * 32))
    await app.startup()
    try:
        machines = app.service("machines")
        await machines.create_or_load("bench-user", "bench-machine", "meta")
        for field, version in (("metadata", 1), ("daemonState", 0)):
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(calls):
                version = await machines.compare_and_set(
                    "bench-user", "bench-machine", field, f"value {i}", version
                )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            report(db, field, calls, wall, cpu)
        store = app.service(ArtifactsService)
        await store.create("bench-user", "bench-artifact", b"h", b"b", b"k")
        version = 1
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(calls):
            data = f"value {i}".encode()
            outcome = await store.update(
                "bench-user", "bench-artifact", Part(data, version), Part(data, version)
            )
            assert outcome.is_changed
            version = int(outcome.current["header_version"])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        report(db, "artifact", calls, wall, cpu)
    finally:
        await app.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sqlite,pg")
    parser.add_argument("--calls", type=int, default=1500)
    args = parser.parse_args()
    targets = args.only.split(",")
    if "sqlite" in targets:
        with tempfile.TemporaryDirectory() as work:
            asyncio.run(measure(f"sqlite:///{Path(work) / 'micro.db'}", args.calls))
    if "pg" in targets:
        name = f"hs_micro_{os.getpid()}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
        try:
            asyncio.run(measure(PG + name, args.calls))
        finally:
            drop = ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", name]
            subprocess.run(drop, check=False)


if __name__ == "__main__":
    main()
