"""moto on 127.0.0.1 with the two lifecycle calls moto 5.2.5 does not implement.

CompleteLifecycleAction and RecordLifecycleActionHeartbeat answer HTTP 500 in moto; the
tests need them to succeed and to know when they came. Each call is appended as one JSON
line to $LIFECYCLE_LOG, with the member names etcd listed at that moment (asked through the
gRPC gateway of the endpoints in $LIFECYCLE_ETCD_ENDPOINTS, a file the test writes), so a
test can check that a member was removed *before* its termination was completed.
This patches moto internals: the version is pinned by scripts/setup.sh.

usage: python moto_server.py PORT
"""

import json
import os
import sys
import time
import urllib.request

from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult
from moto.server import ThreadedMotoServer


def member_names():
    path = os.environ.get("LIFECYCLE_ETCD_ENDPOINTS", "")
    try:
        endpoints = open(path).read().split()
    except OSError:
        return None
    for endpoint in endpoints:
        try:
            request = urllib.request.Request(
                endpoint + "/v3/cluster/member/list", data=b"{}", method="POST"
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                members = json.load(response).get("members", [])
                return sorted(m.get("name", "") for m in members)
        except Exception:
            continue
    return None


def record(self, call):
    entry = {
        "call": call,
        "time": time.time(),
        "group": self._get_param("AutoScalingGroupName"),
        "hook": self._get_param("LifecycleHookName"),
        "token": self._get_param("LifecycleActionToken"),
        "instance": self._get_param("InstanceId"),
        "result": self._get_param("LifecycleActionResult"),
        "members": member_names(),
    }
    with open(os.environ["LIFECYCLE_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")
    return EmptyResult()


AutoScalingResponse.complete_lifecycle_action = lambda self: record(self, "complete")
AutoScalingResponse.record_lifecycle_action_heartbeat = lambda self: record(self, "heartbeat")

if __name__ == "__main__":
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]))
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
