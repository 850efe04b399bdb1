#!/usr/bin/env python3
"""AWS benchmarks against moto on loopback, measured side by side in one run.

1. A terminated instance -> its member removed -> the group told to continue
   (CompleteLifecycleAction), through the lifecycle hook, vs the same termination seen by
   discovery alone (the member disappears from the group and is removed after remove_after).
2. The replacement instance's pilot started -> cluster back at 3 healthy voters.
3. Pilot resident memory with the aws provider, Route53 records and the lifecycle consumer,
   vs a static-provider pilot (`local up`), both idle.

moto runs through tests/aws/moto_server.py (which adds the lifecycle calls moto lacks); each
instance gets a small metadata server (IMDSv2) on <its ip>:2377. Only loopback addresses are
used: the group's subnet 127.0.61.0/24, the static cluster on `local up`'s 127.0.10.0/24
(do not run `make up` meanwhile), moto on 127.0.0.1. Every process started here is stopped by PID.
"""

import argparse
import glob
import http.server
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

import boto3

from bench import default_etcd, default_pilot

HERE = os.path.dirname(os.path.abspath(__file__))
MOTO = os.path.join(HERE, "..", "crates", "etcd-pilot", "tests", "aws", "moto_server.py")
VENV_PYTHON = "/opt/etcd-pilot-venv/bin/python"
PORT = 21600
SUBNET = "127.0.61"
STATIC_SUBNET = "127.0.10"  # where `local up` runs
REGION = "us-east-1"
GROUP = "etcd"
HOOK = "etcd-terminate"
REMOVE_AFTER = 30


def client(service):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{PORT}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Metadata(http.server.BaseHTTPRequestHandler):
    answers = {}

    def do_PUT(self):
        self.reply(200, "bench-token", {"x-aws-ec2-metadata-token-ttl-seconds": "21600"})

    def do_GET(self):
        if not self.headers.get("x-aws-ec2-metadata-token"):
            return self.reply(401, "")
        value = self.answers.get(self.path)
        self.reply(200 if value is not None else 404, value or "")

    def reply(self, code, body, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def metadata_server(ip, instance):
    handler = type("M", (Metadata,), {"answers": {
        "/latest/meta-data/instance-id": instance,
        "/latest/meta-data/local-ipv4": ip,
        "/latest/meta-data/placement/region": REGION,
    }})
    server = http.server.ThreadingHTTPServer((ip, 2377), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def instances():
    groups = client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    ids = [i["InstanceId"] for i in groups["AutoScalingGroups"][0]["Instances"]]
    out = client("ec2").describe_instances(
        InstanceIds=ids, Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
    found = {i["InstanceId"]: i["PrivateIpAddress"]
             for r in out["Reservations"] for i in r["Instances"]}
    return found


def members(ip):
    request = urllib.request.Request(f"http://{ip}:2379/v3/cluster/member/list", data=b"{}")
    with urllib.request.urlopen(request, timeout=1) as response:
        return json.load(response).get("members", [])


def voters_healthy(ips, expected):
    try:
        listed = members(ips[0])
    except Exception:
        return False
    names = sorted(m.get("name", "") for m in listed if not m.get("isLearner"))
    if names != sorted(expected) or len(listed) != len(expected):
        return False
    for ip in ips:
        try:
            with urllib.request.urlopen(f"http://{ip}:2379/health", timeout=0.5) as r:
                if json.load(r).get("health") != "true":
                    return False
        except Exception:
            return False
    return True


def wait(what, check, timeout=120.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise RuntimeError(f"timed out waiting for {what}")


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_node(node):
    """Power loss: the pilot and its etcd killed."""
    stop(node["proc"], signal.SIGKILL)
    pid_file = os.path.join(node["dir"], "data", "etcd.pid")
    try:
        pid = int(open(pid_file).read().split()[0])
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pilot", default=default_pilot())
    parser.add_argument("--etcd", default=default_etcd())
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="etcd-pilot-bench-aws-")
    lifecycle_log = os.path.join(work, "lifecycle.jsonl")
    endpoints_file = os.path.join(work, "etcd-endpoints")
    moto = subprocess.Popen(
        [VENV_PYTHON, MOTO, str(PORT)],
        env={**os.environ, "LIFECYCLE_LOG": lifecycle_log, "LIFECYCLE_ETCD_ENDPOINTS": endpoints_file},
        stdout=open(os.path.join(work, "moto.log"), "w"), stderr=subprocess.STDOUT)
    nodes = {}
    servers = []
    static = None
    try:
        wait("moto", lambda: subprocess.run(
            ["curl", "-fs", "-o", "/dev/null", f"http://127.0.0.1:{PORT}/"]).returncode == 0, 60, 0.2)
        ec2 = client("ec2")
        vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{SUBNET}.0/24")["Subnet"]["SubnetId"]
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ec2.create_launch_template(LaunchTemplateName="etcd",
                                   LaunchTemplateData={"ImageId": image, "InstanceType": "t3.small"})
        asg = client("autoscaling")
        asg.create_auto_scaling_group(
            AutoScalingGroupName=GROUP, LaunchTemplate={"LaunchTemplateName": "etcd", "Version": "$Latest"},
            MinSize=0, MaxSize=9, DesiredCapacity=3, VPCZoneIdentifier=subnet)
        queue = client("sqs").create_queue(QueueName="etcd-lifecycle")["QueueUrl"]
        zone = client("route53").create_hosted_zone(
            Name="pilot.test.", CallerReference="bench")["HostedZone"]["Id"].split("/")[-1]
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{PORT}",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "ETCD_PILOT_LOG": "info,etcd_output=warn"}
        config = (
            f'cluster_name = "bench"\ndata_dir = "{{dir}}/data"\n[etcd]\nbin = "{args.etcd}"\n'
            f'[discovery]\nprovider = "aws"\naws_groups = "{GROUP}"\naws_regions = "{REGION}"\n'
            f'[dns]\nprovider = "route53"\nzone_id = "{zone}"\ndomain = "etcd.pilot.test"\n'
            f'[lifecycle]\nqueue_url = "{queue}"\nheartbeat_interval = "5s"\n'
            f'[timers]\nremove_after = "{REMOVE_AFTER}s"\n')

        def start(instance, ip):
            servers.append(metadata_server(ip, instance))
            d = os.path.join(work, instance)
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "pilot.toml")
            open(path, "w").write(config.replace("{dir}", d))
            node_env = {**env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://{ip}:2377"}
            proc = subprocess.Popen([args.pilot, "agent", "--config", path], env=node_env,
                                    stdout=open(os.path.join(d, "pilot.log"), "w"), stderr=subprocess.STDOUT)
            nodes[instance] = {"ip": ip, "dir": d, "proc": proc}

        for instance, ip in sorted(instances().items(), key=lambda kv: kv[1]):
            start(instance, ip)
        wait("3 healthy voters", lambda: voters_healthy([n["ip"] for n in nodes.values()], list(nodes)))
        with open(endpoints_file, "w") as f:
            f.write("\n".join(f"http://{n['ip']}:2379" for n in nodes.values()))

        def coordinator():
            for name, node in nodes.items():
                try:
                    with urllib.request.urlopen(f"http://{node['ip']}:2378/v1/status", timeout=1) as r:
                        if (json.load(r).get("plan") or {}).get("coordinator"):
                            return name
                except Exception:
                    pass
            return None

        def replace(victim, hook):
            """Terminates `victim`; returns (removed, completed or None, rejoined) seconds."""
            alive = [n for n in nodes if n != victim]
            client("autoscaling").terminate_instance_in_auto_scaling_group(
                InstanceId=victim, ShouldDecrementDesiredCapacity=False)
            t0 = time.monotonic()
            if hook:
                client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps({
                    "Origin": "AutoScalingGroup", "LifecycleHookName": HOOK, "Destination": "EC2",
                    "AccountId": "123456789012", "RequestId": victim,
                    "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                    "AutoScalingGroupName": GROUP, "Service": "AWS Auto Scaling",
                    "Time": "2026-11-22T09:00:00.000Z", "EC2InstanceId": victim,
                    "LifecycleActionToken": f"token-{victim}"}))
            else:
                # Without a hook the instance is simply gone.
                kill_node(nodes[victim])
            ips = [nodes[n]["ip"] for n in alive]
            wait("removal", lambda: victim not in [m.get("name") for m in members(ips[0])], 180, 0.05)
            removed = time.monotonic() - t0
            completed = None
            if hook:
                def done():
                    try:
                        return any(json.loads(l).get("instance") == victim and json.loads(l)["call"] == "complete"
                                   for l in open(lifecycle_log))
                    except OSError:
                        return False
                wait("CompleteLifecycleAction", done, 60, 0.05)
                completed = time.monotonic() - t0
                kill_node(nodes[victim])
            del nodes[victim]
            new = [(i, ip) for i, ip in instances().items() if i not in nodes]
            assert len(new) == 1, new
            t1 = time.monotonic()
            start(*new[0])
            wait("3 healthy voters", lambda: voters_healthy([n["ip"] for n in nodes.values()], list(nodes)), 120)
            rejoined = time.monotonic() - t1
            with open(endpoints_file, "w") as f:
                f.write("\n".join(f"http://{n['ip']}:2379" for n in nodes.values()))
            return removed, completed, rejoined

        hook_rows, plain_rows = [], []
        for _ in range(args.rounds):
            for hook, rows in ((True, hook_rows), (False, plain_rows)):
                c = coordinator()
                victim = next(n for n in sorted(nodes) if n != c)
                rows.append(replace(victim, hook))
                time.sleep(6)  # etcd refuses a removal for 5 s after a member (re)joins
        time.sleep(10)
        aws_rss = max(rss_kib(n["proc"].pid) for n in nodes.values())
        aws_anon = max(rss_kib(n["proc"].pid, "RssAnon") for n in nodes.values())

        static_dir = os.path.join(work, "static")
        static = subprocess.Popen(
            [args.pilot, "local", "up", "--members", "3", "--dir", static_dir,
             "--etcd-bin", args.etcd],
            stdout=open(os.path.join(work, "static.log"), "w"), stderr=subprocess.STDOUT)
        static_ips = [f"{STATIC_SUBNET}.{i}" for i in (1, 2, 3)]
        wait("static cluster", lambda: voters_healthy(static_ips, ["m1", "m2", "m3"]), 120, 0.1)
        time.sleep(10)
        pids = [int(open(p).read().split()[0]) for p in glob.glob(os.path.join(static_dir, "m*", "pilot.pid"))]
        static_rss = max(rss_kib(p) for p in pids)
        static_anon = max(rss_kib(p, "RssAnon") for p in pids)

        med = lambda rows, i: statistics.median(r[i] for r in rows)
        print(f"\netcd-pilot AWS figures, moto on loopback, median of {args.rounds} rounds, remove_after {REMOVE_AFTER}s\n")
        print(f"| figure | with the lifecycle hook | discovery only | ratio |")
        print(f"|---|---|---|---|")
        print(f"| terminated instance -> member removed | {med(hook_rows, 0):.2f} s | {med(plain_rows, 0):.2f} s | {med(hook_rows, 0) / med(plain_rows, 0):.2f} |")
        print(f"| terminated instance -> CompleteLifecycleAction (after the removal) | {med(hook_rows, 1):.2f} s | | |")
        print(f"| replacement pilot started -> 3 healthy voters | {med(hook_rows, 2):.2f} s | {med(plain_rows, 2):.2f} s | |")
        print(f"\n| pilot peak RSS, idle | aws provider + Route53 + lifecycle | static provider | ratio |")
        print(f"|---|---|---|---|")
        print(f"| resident (VmRSS), max of 3 pilots | {aws_rss / 1024:.1f} MiB | {static_rss / 1024:.1f} MiB | {aws_rss / static_rss:.2f} |")
        print(f"| of which private (RssAnon) | {aws_anon / 1024:.1f} MiB | {static_anon / 1024:.1f} MiB | {aws_anon / static_anon:.2f} |")
        print(f"\nrounds (removed, completed, rejoined): hook {hook_rows}, discovery only {plain_rows}")
    finally:
        if static is not None:
            stop(static, signal.SIGINT)
        for node in nodes.values():
            stop(node["proc"])
        for server in servers:
            server.shutdown()
        stop(moto)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
