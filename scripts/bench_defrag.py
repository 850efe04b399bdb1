#!/usr/bin/env python3
"""Defragmentation of a ~1 GiB fragmented database on 3 members, under a writer, side by side.

Each side starts a 3-member etcd 3.5.16 cluster, writes `--size-mib` MiB of 1 MiB values,
deletes every other one and compacts: every member's file stays ~1 GiB while half of it
holds data. Then it is defragmented (each member's 512 MiB of data copied into a new file,
its reads and writes blocked meanwhile):

- etcd-pilot: `etcd-pilot local up` with its defaults (a member is defragmented once a
  quarter of its file and at least 64 MiB of it are free): the coordinator does it on its
  own, one member at a time through its lock, followers first, the leader last after
  leadership moves away. Per member, the time is the pilot's (`took_ms` in its log).
- By hand: a bare cluster, `etcdctl defrag --cluster --command-timeout=10m` (etcdctl goes
  through the member list in order, one member after the other, the leader wherever it
  falls; with the default 5 s timeout it gives up on a 1 GiB member while etcd goes on).
  Per member, the time is etcd's own ("starting defragment" to "finished defragment").

Total time runs from the compaction until every member's file is under 70 % of its size
before. A writer puts small unique keys through the three client URLs in turn (the
v3 JSON gateway, 2 s per attempt; a failed put is retried through the next URLs and
counts as failed only when every URL failed) and reports the longest gap between two
acknowledged writes; every acknowledged key is read back at the end.

Only loopback addresses: the pilot cluster on 127.0.48.0/24, the bare one on 127.0.49.0/24.
Every process started here is stopped by PID.
"""

import argparse
import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_upgrade import Writer, b64, bare_args, healthy, post, stop, wait  # noqa: E402

PILOT_SUBNET = "127.0.48"
BARE_SUBNET = "127.0.49"


def status(ip):
    return post(ip, "/v3/maintenance/status", {}, timeout=5)


def sizes(ips):
    out = []
    for ip in ips:
        try:
            out.append(int(status(ip).get("dbSize", 0)))
        except Exception:
            out.append(None)
    return out


def fragment(ips, size_mib):
    """Writes size_mib values of 1 MiB, deletes every other one, compacts; returns the files'
    sizes (each about size_mib, half of it free)."""
    value = b64("x" * (1 << 20))
    for n in range(size_mib):
        for attempt in range(20):
            try:
                half = "keep" if n % 2 == 0 else "drop"
                post(ips[n % len(ips)], "/v3/kv/put",
                     {"key": b64(f"/bulk/{half}/{n:06d}"), "value": value}, timeout=30)
                break
            except Exception:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"cannot write value {n}")
    post(ips[0], "/v3/kv/deleterange", {"key": b64("/bulk/drop/"), "range_end": b64("/bulk/drop0")},
         timeout=60)
    revision = int(status(ips[0])["header"]["revision"])
    post(ips[0], "/v3/kv/compaction", {"revision": revision, "physical": True}, timeout=300)
    return sizes(ips)


def shrunk(ips, before):
    now = sizes(ips)
    return all(n is not None and b and n * 10 < b * 7 for n, b in zip(now, before))


def pilot_run(pilot, etcd, workdir, run, size_mib):
    ips = [f"{PILOT_SUBNET}.{i}" for i in range(1, 4)]
    folder = os.path.join(workdir, f"pilot{run}")
    up = subprocess.Popen([pilot, "local", "up", "--members", "3", "--dir", folder, "--etcd-bin", etcd,
                           "--subnet", PILOT_SUBNET],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait("the pilot cluster", lambda: all(healthy(ip) for ip in ips))
        before = fragment(ips, size_mib)
        writer = Writer(ips, f"/bench{run}")
        writer.start()
        start = time.monotonic()
        wait("every member defragmented", lambda: shrunk(ips, before), timeout=1800)
        total = time.monotonic() - start
        time.sleep(1)
        writer.finish()
        per_member = []
        for m in range(1, 4):
            log = os.path.join(folder, f"m{m}", "pilot.log")
            with open(log, encoding="utf-8", errors="replace") as f:
                text = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
                per_member += [int(x) / 1000 for x in re.findall(r"defragmented: .* took_ms=(\d+)", text)]
        return total, writer, before, per_member
    finally:
        stop(up, signal.SIGINT, timeout=60)
        if os.environ.get("BENCH_KEEP"):
            shutil.copytree(folder, os.environ["BENCH_KEEP"], dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("data", "*.db", "wal", "snap"))
        shutil.rmtree(folder, ignore_errors=True)


def etcd_defrag_times(path):
    """Seconds of each defragmentation etcd logged (`starting defragment` to `finished`)."""
    times, started = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "defragment" not in line:
                continue
            try:
                ts = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00"))
            except Exception:
                continue
            if "starting defragment" in line:
                started = ts
            elif "finished defragment" in line and started:
                times.append((ts - started).total_seconds())
                started = None
    return times


def hand_run(etcd, etcdctl, workdir, run, size_mib):
    ips = [f"{BARE_SUBNET}.{i}" for i in range(1, 4)]
    folder = os.path.join(workdir, f"bare{run}")
    os.makedirs(folder, exist_ok=True)
    logs = {i: open(os.path.join(folder, f"b{i}.log"), "w") for i in range(1, 4)}
    procs = {i: subprocess.Popen(bare_args(etcd, folder, i, BARE_SUBNET, "bench-defrag"), stdout=subprocess.DEVNULL, stderr=logs[i],
                                 stdin=subprocess.DEVNULL) for i in range(1, 4)}
    try:
        wait("the bare cluster", lambda: all(healthy(ip) for ip in ips))
        before = fragment(ips, size_mib)
        writer = Writer(ips, f"/hand{run}")
        writer.start()
        start = time.monotonic()
        subprocess.run([etcdctl, "defrag", "--cluster", "--command-timeout=10m",
                        "--endpoints", ",".join(f"http://{ip}:2379" for ip in ips)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("every member defragmented", lambda: shrunk(ips, before), timeout=1800)
        total = time.monotonic() - start
        time.sleep(1)
        writer.finish()
        per_member = []
        for i in range(1, 4):
            logs[i].flush()
            per_member += etcd_defrag_times(os.path.join(folder, f"b{i}.log"))
        return total, writer, before, per_member
    finally:
        for proc in procs.values():
            stop(proc)
        for log in logs.values():
            log.close()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--pilot-only", action="store_true", help="skip the etcdctl side")
    parser.add_argument("--pilot", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "/var/tmp/etcd-pilot-target"), "release", "etcd-pilot"))
    parser.add_argument("--etcd", default=os.environ.get("ETCD_BIN_3516", "/opt/etcd-pilot-etcd-3.5.16/usr/bin/etcd"))
    args = parser.parse_args()
    etcdctl = os.path.join(os.path.dirname(args.etcd), "etcdctl")
    for path in (args.pilot, args.etcd, etcdctl):
        if not os.path.isfile(path):
            sys.exit(f"missing {path}: run scripts/setup.sh and build the release binary")
    results = {"pilot": [], "hand": []}
    with tempfile.TemporaryDirectory(prefix="etcd-pilot-bench-defrag-", dir="/var/tmp") as workdir:
        for run in range(args.runs):
            results["pilot"].append(pilot_run(args.pilot, args.etcd, workdir, run, args.size_mib))
            if args.pilot_only:
                total, writer, before, per_member = results["pilot"][-1]
                print(f"pilot: {total:.2f} s, per member {per_member}, gap {writer.longest_gap:.2f} s")
                continue
            results["hand"].append(hand_run(args.etcd, etcdctl, workdir, run, args.size_mib))
            for name in ("pilot", "hand"):
                total, writer, before, per_member = results[name][-1]
                print(f"run {run + 1} {name:5}: files {[round(b / 2**20) for b in before]} MiB, "
                      f"{total:6.2f} s in all, per member {[round(t, 2) for t in per_member]} s, "
                      f"{len(writer.acked)} acked, {writer.failed} failed, "
                      f"longest gap {writer.longest_gap * 1000:.0f} ms", flush=True)

    if args.pilot_only:
        return

    def med(name, f):
        return statistics.median(f(*r) for r in results[name])

    rows = [
        ("total time (s)", lambda t, w, b, p: t, "{:.2f}"),
        ("longest time of one member (s)", lambda t, w, b, p: max(p) if p else float("nan"), "{:.2f}"),
        ("longest gap between acked writes (ms)", lambda t, w, b, p: w.longest_gap * 1000, "{:.0f}"),
        ("failed writes (on every member)", lambda t, w, b, p: w.failed, "{:.0f}"),
        ("acknowledged writes", lambda t, w, b, p: len(w.acked), "{:.0f}"),
        ("acknowledged writes per second", lambda t, w, b, p: len(w.acked) / t, "{:.1f}"),
    ]
    print(f"\ndefragmentation of 3 members with ~{args.size_mib} MiB files, under a writer; "
          f"median of {args.runs} run(s)")
    print(f"{'':42} {'etcd-pilot':>12} {'etcdctl':>12} {'ratio':>8}")
    for label, f, fmt in rows:
        p, h = med("pilot", f), med("hand", f)
        ratio = f"{p / h:.2f}" if h else "-"
        print(f"{label:42} {fmt.format(p):>12} {fmt.format(h):>12} {ratio:>8}")


if __name__ == "__main__":
    main()
