"""moto on 127.0.0.1 with the two lifecycle calls moto 5.2.5 does not implement.

CompleteLifecycleAction and RecordLifecycleActionHeartbeat answer HTTP 500 in moto; the
tests need them to succeed and to know when they came.
With HOLD_TERMINATIONS=1, TerminateInstanceInAutoScalingGroup behaves as it does for a group
with a termination lifecycle hook: the instance stays running in Terminating:Wait and a
replacement is launched at once; CompleteLifecycleAction (CONTINUE) then terminates it. Each call is appended as one JSON
line to $LIFECYCLE_LOG, with the member names etcd listed at that moment (asked through the
gRPC gateway of the endpoints in $LIFECYCLE_ETCD_ENDPOINTS, a file the test writes), so a
test can check that a member was removed *before* its termination was completed.
As AWS does, a call about an action that is no longer pending (completed already) answers a
ValidationError ("No active Lifecycle Action found"), recorded with "rejected": true.
This patches moto internals: the version is pinned by scripts/setup.sh.

usage: python moto_server.py PORT
"""

import json
import os
import sys
import time
import urllib.request

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import TerminateInstanceActivity
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
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


# (group, instance) of the actions completed already.
COMPLETED = set()


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
    key = (entry["group"], entry["instance"])
    entry["rejected"] = key in COMPLETED
    with open(os.environ["LIFECYCLE_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")
    if entry["rejected"]:
        raise ValidationError(
            "No active Lifecycle Action found with instance ID " + str(entry["instance"])
        )
    if call == "complete":
        COMPLETED.add(key)
    if call == "complete" and entry["result"] == "CONTINUE" and holding():
        state = find_state(self, entry["instance"])
        if state is not None and state.lifecycle_state == "Terminating:Wait":
            group = state.instance.autoscaling_group
            group.instance_states = [s for s in group.instance_states if s is not state]
            self.autoscaling_backend.ec2_backend.terminate_instances([state.instance.id])
    return EmptyResult()


def holding():
    return os.environ.get("HOLD_TERMINATIONS") == "1"


def find_state(self, instance_id):
    for group in self.autoscaling_backend.autoscaling_groups.values():
        for state in group.instance_states:
            if state.instance.id == instance_id:
                return state
    return None


original_terminate = AutoScalingResponse.terminate_instance_in_auto_scaling_group


def terminate(self):
    if not holding():
        return original_terminate(self)
    state = find_state(self, self._get_param("InstanceId"))
    group = state.instance.autoscaling_group
    original = group.desired_capacity
    state.lifecycle_state = "Terminating:Wait"
    group.replace_autoscaling_group_instances(1, group.get_propagated_tags())
    return ActionResult({"Activity": TerminateInstanceActivity(state.instance, original)})


AutoScalingResponse.terminate_instance_in_auto_scaling_group = terminate


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
