#!/usr/bin/env python3
"""Rolling upgrade of 3 members, etcd 3.4.23 -> 3.5.16, under a writer, measured side by side.

- The pilot: `etcd-pilot local up --etcd-bin <3.4.23>` then `etcd-pilot upgrade --to 3.5.16
  --dir ...` (one member at a time, followers first, the leader last after leadership moves).
- By hand: a bare 3-member 3.4.23 cluster, upgraded by a script in the order etcd's upgrade
  guide gives (https://etcd.io/docs/v3.5/upgrades/upgrade_3_5/): one member at a time,
  followers first, the leader last; each stopped with SIGTERM, started on 3.5.16 with the
  same data and flags, and waited on until /health says true before the next.

The writer puts unique keys through the three client URLs in turn (the v3 JSON gateway,
2 s per attempt); a put that fails is retried through the next URLs, and counts as failed
only when every URL failed. It reports acknowledged writes, failed writes and the longest
gap between two acknowledged writes; every acknowledged key is read back at the end.
Total time runs from the upgrade command (or the script's first stop) until every member
runs 3.5.16 and the cluster version is 3.5.

Only loopback addresses: the pilot cluster on 127.0.44.0/24, the bare one on 127.0.45.0/24.
Every process started here is stopped by PID.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PILOT_SUBNET = "127.0.44"
BARE_SUBNET = "127.0.45"


def post(ip, path, body, timeout=2.0):
    request = urllib.request.Request(
        f"http://{ip}:2379{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def b64(text):
    return base64.b64encode(text.encode()).decode()


def healthy(ip):
    try:
        with urllib.request.urlopen(f"http://{ip}:2379/health", timeout=0.5) as response:
            return json.load(response).get("health") == "true"
    except Exception:
        return False


def versions(ip):
    try:
        with urllib.request.urlopen(f"http://{ip}:2379/version", timeout=0.5) as response:
            return json.load(response)
    except Exception:
        return {}


def wait(what, check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def upgraded(ips, release):
    return all(versions(ip).get("etcdserver") == release for ip in ips) and \
        versions(ips[0]).get("etcdcluster", "").startswith(release.rsplit(".", 1)[0])


class Writer:
    def __init__(self, ips, prefix):
        self.ips, self.prefix = ips, prefix
        self.acked, self.failed, self.longest_gap = [], 0, 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        n, last = 0, time.monotonic()
        while not self.stopped.is_set():
            key = f"{self.prefix}/{n:08d}"
            for k in range(len(self.ips)):
                ip = self.ips[(n + k) % len(self.ips)]
                try:
                    post(ip, "/v3/kv/put", {"key": b64(key), "value": b64(ip)})
                except Exception:
                    continue
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last)
                last = now
                self.acked.append(key)
                break
            else:
                self.failed += 1
            n += 1
            time.sleep(0.02)

    def start(self):
        self.thread.start()

    def finish(self):
        self.stopped.set()
        self.thread.join()
        end = self.prefix + "0"
        for ip in self.ips:
            try:
                found = post(ip, "/v3/kv/range", {"key": b64(self.prefix + "/"), "range_end": b64(end),
                                                  "keys_only": True, "limit": 0}, timeout=10)
                keys = {base64.b64decode(kv["key"]).decode() for kv in found.get("kvs", [])}
                lost = [k for k in self.acked if k not in keys]
                if lost:
                    raise RuntimeError(f"{len(lost)} acknowledged writes lost, first {lost[:3]}")
                return
            except RuntimeError:
                raise
            except Exception:
                continue
        raise RuntimeError("no member answered the final read")


def stop(proc, sig=signal.SIGTERM, timeout=30):
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pilot_run(pilot, old, new, workdir, run):
    ips = [f"{PILOT_SUBNET}.{i}" for i in range(1, 4)]
    folder = os.path.join(workdir, f"pilot{run}")
    up = subprocess.Popen([pilot, "local", "up", "--members", "3", "--dir", folder, "--etcd-bin", old,
                           "--subnet", PILOT_SUBNET],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait("the pilot cluster", lambda: all(healthy(ip) for ip in ips))
        writer = Writer(ips, f"/bench{run}")
        writer.start()
        time.sleep(2)
        start = time.monotonic()
        subprocess.run([pilot, "upgrade", "--to", new, "--dir", folder], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("3.5.16 everywhere", lambda: upgraded(ips, "3.5.16"))
        total = time.monotonic() - start
        time.sleep(1)
        writer.finish()
        return total, writer
    finally:
        stop(up, signal.SIGINT, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def bare_args(binary, folder, i, subnet=BARE_SUBNET, token="bench-upgrade"):
    """The flags of bare member b{i} of a 3-member cluster on {subnet}.1-3."""
    ip = f"{subnet}.{i}"
    initial = ",".join(f"b{j}=http://{subnet}.{j}:2380" for j in range(1, 4))
    return [binary, f"--name=b{i}", f"--data-dir={folder}/b{i}",
            f"--listen-peer-urls=http://{ip}:2380", f"--initial-advertise-peer-urls=http://{ip}:2380",
            f"--listen-client-urls=http://{ip}:2379", f"--advertise-client-urls=http://{ip}:2379",
            f"--initial-cluster={initial}", "--initial-cluster-state=new",
            f"--initial-cluster-token={token}", "--logger=zap", "--log-outputs=stderr"]


def leader_index(ips):
    for i, ip in enumerate(ips, start=1):
        try:
            status = post(ip, "/v3/maintenance/status", {})
            if status.get("leader") == status.get("header", {}).get("member_id"):
                return i
        except Exception:
            continue
    raise RuntimeError("no leader")


def hand_run(old, new, workdir, run):
    ips = [f"{BARE_SUBNET}.{i}" for i in range(1, 4)]
    folder = os.path.join(workdir, f"bare{run}")
    spawn = lambda binary, i: subprocess.Popen(bare_args(binary, folder, i), stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    procs = {i: spawn(old, i) for i in range(1, 4)}
    try:
        wait("the bare cluster", lambda: all(healthy(ip) for ip in ips))
        writer = Writer(ips, f"/hand{run}")
        writer.start()
        time.sleep(2)
        start = time.monotonic()
        leader = leader_index(ips)
        for i in [j for j in range(1, 4) if j != leader] + [leader]:
            stop(procs[i])
            procs[i] = spawn(new, i)
            wait(f"b{i} healthy", lambda: healthy(ips[i - 1]))
        wait("3.5.16 everywhere", lambda: upgraded(ips, "3.5.16"))
        total = time.monotonic() - start
        time.sleep(1)
        writer.finish()
        return total, writer
    finally:
        for proc in procs.values():
            stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pilot", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "/var/tmp/etcd-pilot-target"), "release", "etcd-pilot"))
    parser.add_argument("--old", default=os.environ.get("ETCD_BIN_34", "/usr/bin/etcd"))
    parser.add_argument("--new", default=os.environ.get("ETCD_BIN_3516", "/opt/etcd-pilot-etcd-3.5.16/usr/bin/etcd"))
    args = parser.parse_args()
    for path in (args.pilot, args.old, args.new):
        if not os.path.isfile(path):
            sys.exit(f"missing {path}: run scripts/setup.sh and build the release binary")
    results = {"pilot": [], "hand": []}
    with tempfile.TemporaryDirectory(prefix="etcd-pilot-bench-upgrade-") as workdir:
        for run in range(args.runs):
            results["pilot"].append(pilot_run(args.pilot, args.old, args.new, workdir, run))
            results["hand"].append(hand_run(args.old, args.new, workdir, run))
            for name in ("pilot", "hand"):
                total, writer = results[name][-1]
                print(f"run {run + 1} {name:5}: {total:6.2f} s, {len(writer.acked)} acked, "
                      f"{writer.failed} failed, longest gap {writer.longest_gap * 1000:.0f} ms", flush=True)

    def med(name, f):
        return statistics.median(f(t, w) for t, w in results[name])

    rows = [
        ("total time (s)", lambda t, w: t, "{:.2f}"),
        ("longest gap between acked writes (ms)", lambda t, w: w.longest_gap * 1000, "{:.0f}"),
        ("failed writes (on every member)", lambda t, w: w.failed, "{:.0f}"),
        ("acknowledged writes", lambda t, w: len(w.acked), "{:.0f}"),
    ]
    print(f"\nrolling upgrade of 3 members, etcd 3.4.23 -> 3.5.16, under a writer; median of {args.runs} runs")
    print(f"{'':42} {'etcd-pilot':>12} {'by hand':>12} {'ratio':>8}")
    for label, f, fmt in rows:
        p, h = med("pilot", f), med("hand", f)
        ratio = f"{p / h:.2f}" if h else "-"
        print(f"{label:42} {fmt.format(p):>12} {fmt.format(h):>12} {ratio:>8}")


if __name__ == "__main__":
    main()
