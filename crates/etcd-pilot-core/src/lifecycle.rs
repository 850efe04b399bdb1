//! Autoscaling lifecycle hooks: what a queue message means (`read`), and what to do about a
//! terminating instance whose member may still exist (`next_step`).
//!
//! The autoscaling group holds a terminating instance in `Terminating:Wait` and posts a
//! message; the coordinator removes that instance's member (the plan does, as soon as the
//! quorum allows, leadership moved first), and only then lets the termination continue. While
//! it waits, it sends heartbeats so the hook does not time out.

use std::time::Duration;

use serde::Deserialize;

/// A lifecycle action to finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// The instance being terminated: the member's name.
    pub instance_id: String,
    /// Its autoscaling group.
    pub group: String,
    /// The hook's name.
    pub hook: String,
    /// The token that identifies this action to `CompleteLifecycleAction`.
    pub token: String,
}

/// What a queue message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// An instance is terminating: remove its member, then complete the action.
    Terminating(Termination),
    /// The notification the group sends when a hook is created, or another transition
    /// (launching, another tool's hook): nothing to do.
    Ignored {
        /// The group it names, if any.
        group: Option<String>,
        /// Whether it is the hook's test notification (deleted when the group is the
        /// pilot's); any other message is some hook's, left for its owner.
        test: bool,
        /// Why, for the log.
        reason: String,
    },
    /// Not a lifecycle message the pilot understands: another producer's, left in the queue.
    Malformed {
        /// What is wrong with it.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    event: Option<String>,
    lifecycle_transition: Option<String>,
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: Option<String>,
    auto_scaling_group_name: Option<String>,
    lifecycle_hook_name: Option<String>,
    lifecycle_action_token: Option<String>,
}

/// The transition this module acts on.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// Reads a message body. A body wrapped by an SNS subscription (`{"Type": "Notification",
/// "Message": "..."}`) is unwrapped first.
pub fn read(body: &str) -> Message {
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(err) => {
            return Message::Malformed {
                problem: format!("not JSON: {err}"),
            };
        }
    };
    let value = match (value.get("Type"), value.get("Message")) {
        (Some(t), Some(serde_json::Value::String(inner))) if t == "Notification" => {
            match serde_json::from_str(inner) {
                Ok(inner) => inner,
                Err(err) => {
                    return Message::Malformed {
                        problem: format!("an SNS notification whose Message is not JSON: {err}"),
                    };
                }
            }
        }
        _ => value,
    };
    let raw: Raw = match serde_json::from_value(value) {
        Ok(raw) => raw,
        Err(err) => {
            return Message::Malformed {
                problem: format!("unexpected fields: {err}"),
            };
        }
    };
    let group = raw
        .auto_scaling_group_name
        .clone()
        .filter(|g| !g.is_empty());
    if raw.event.as_deref() == Some("autoscaling:TEST_NOTIFICATION") {
        return Message::Ignored {
            group,
            test: true,
            reason: "the test notification sent when the hook was created".to_owned(),
        };
    }
    match raw.lifecycle_transition.as_deref() {
        Some(TERMINATING) => {}
        Some(other) => {
            return Message::Ignored {
                group,
                test: false,
                reason: format!("transition {other} needs nothing from the pilot"),
            };
        }
        None => {
            return Message::Malformed {
                problem: "no LifecycleTransition".to_owned(),
            };
        }
    }
    let fields = [
        ("EC2InstanceId", raw.ec2_instance_id),
        ("AutoScalingGroupName", raw.auto_scaling_group_name),
        ("LifecycleHookName", raw.lifecycle_hook_name),
        ("LifecycleActionToken", raw.lifecycle_action_token),
    ];
    let missing: Vec<&str> = fields
        .iter()
        .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        return Message::Malformed {
            problem: format!("a terminating message without {}", missing.join(", ")),
        };
    }
    let [instance_id, group, hook, token] = fields.map(|(_, v)| v.unwrap_or_default());
    Message::Terminating(Termination {
        instance_id,
        group,
        hook,
        token,
    })
}

/// What the consumer does with a message of a queue it may share with other consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// A termination of one of the pilot's groups: hold it until its member is gone.
    Handle,
    /// The hook's test notification for one of the pilot's groups: delete it.
    Delete,
    /// Anything else (a launch, which some other tool's hook waits on; another group's or
    /// producer's message; an unreadable one): not the pilot's to delete; it stays in the
    /// queue for its owner.
    Leave,
}

/// What to do with `message`, given the groups the pilot manages.
pub fn disposition(message: &Message, groups: &[String]) -> Disposition {
    let ours = |group: &str| groups.iter().any(|g| g == group);
    match message {
        Message::Terminating(t) if ours(&t.group) => Disposition::Handle,
        Message::Ignored {
            group: Some(group),
            test: true,
            ..
        } if ours(group) => Disposition::Delete,
        _ => Disposition::Leave,
    }
}

/// Whether the member list still has an entry of the terminating instance: a member named
/// after it, or an unnamed entry (an unstarted learner has no name yet) with its peer URL.
/// A named entry of another instance never counts, even at the same address (a replacement
/// given the freed IP).
pub fn member_present(
    members: &[crate::Member],
    instance_id: &str,
    peer_url: Option<&str>,
) -> bool {
    members.iter().any(|m| {
        m.name.as_ref().is_some_and(|n| n.as_str() == instance_id)
            || (m.name.is_none()
                && peer_url.is_some_and(|url| m.peer_urls.iter().any(|u| u == url)))
    })
}

/// What to do now about a termination the coordinator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The member is gone: complete the action (CONTINUE) and delete the message.
    Complete,
    /// The member is still there: send a heartbeat (and keep the message hidden).
    Heartbeat,
    /// The member is still there and the last heartbeat is recent: nothing yet.
    Wait,
}

/// The next step for a termination: `member_present` says whether the member list still has
/// a member of that instance; `since_heartbeat` how long ago the last heartbeat (or the
/// message's receipt) was.
pub fn next_step(
    member_present: bool,
    since_heartbeat: Duration,
    heartbeat_every: Duration,
) -> Step {
    if !member_present {
        Step::Complete
    } else if since_heartbeat >= heartbeat_every {
        Step::Heartbeat
    } else {
        Step::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(transition: &str, instance: &str) -> String {
        serde_json::json!({
            "Origin": "AutoScalingGroup",
            "LifecycleHookName": "etcd-terminate",
            "Destination": "EC2",
            "AccountId": "123456789012",
            "RequestId": "4d5d8e9c-0000-0000-0000-000000000000",
            "LifecycleTransition": transition,
            "AutoScalingGroupName": "etcd",
            "Service": "AWS Auto Scaling",
            "Time": "2026-11-22T09:00:00.000Z",
            "EC2InstanceId": instance,
            "LifecycleActionToken": "71514b9d-6a40-4b26-8523-05e7eEXAMPLE"
        })
        .to_string()
    }

    #[test]
    fn messages() {
        let terminating = Message::Terminating(Termination {
            instance_id: "i-0123".into(),
            group: "etcd".into(),
            hook: "etcd-terminate".into(),
            token: "71514b9d-6a40-4b26-8523-05e7eEXAMPLE".into(),
        });
        assert_eq!(read(&body(TERMINATING, "i-0123")), terminating);
        // Through SNS.
        let wrapped =
            serde_json::json!({"Type": "Notification", "Message": body(TERMINATING, "i-0123")});
        assert_eq!(read(&wrapped.to_string()), terminating);
        assert!(matches!(
            read(&body("autoscaling:EC2_INSTANCE_LAUNCHING", "i-0123")),
            Message::Ignored { .. }
        ));
        let test = r#"{"AccountId":"123456789012","RequestId":"x","AutoScalingGroupARN":"arn","AutoScalingGroupName":"etcd","Service":"AWS Auto Scaling","Event":"autoscaling:TEST_NOTIFICATION","Time":"2026-11-22T09:00:00.000Z"}"#;
        assert!(matches!(read(test), Message::Ignored { .. }));
        for bad in [
            "not json",
            "[1, 2]",
            r#"{"LifecycleTransition": 7}"#,
            r#"{"Hello": "world"}"#,
            &body(TERMINATING, ""),
            r#"{"Type": "Notification", "Message": "{oops"}"#,
        ] {
            assert!(matches!(read(bad), Message::Malformed { .. }), "{bad}");
        }
        let Message::Malformed { problem } = read(&body(TERMINATING, "")) else {
            unreachable!()
        };
        assert_eq!(problem, "a terminating message without EC2InstanceId");
    }

    #[test]
    fn only_the_pilot_s_own_groups_messages_are_taken_or_deleted() {
        let groups = vec!["etcd".to_owned(), "etcd-b".to_owned()];
        let other = body(TERMINATING, "i-9").replace("\"etcd\"", "\"web\"");
        let launch_other =
            body("autoscaling:EC2_INSTANCE_LAUNCHING", "i-9").replace("\"etcd\"", "\"web\"");
        let test_other =
            r#"{"AutoScalingGroupName":"web","Event":"autoscaling:TEST_NOTIFICATION"}"#;
        let cases = [
            ("our termination", body(TERMINATING, "i-1")),
            (
                "our launch",
                body("autoscaling:EC2_INSTANCE_LAUNCHING", "i-1"),
            ),
            (
                "our test notification",
                r#"{"AutoScalingGroupName":"etcd-b","Event":"autoscaling:TEST_NOTIFICATION"}"#
                    .to_owned(),
            ),
            ("another group's termination", other),
            ("another group's launch", launch_other),
            ("another group's test notification", test_other.to_owned()),
            (
                "a test notification without a group",
                r#"{"Event":"autoscaling:TEST_NOTIFICATION"}"#.to_owned(),
            ),
            ("another producer's message", "hello".to_owned()),
            (
                "a JSON message of another producer",
                r#"{"order": 7}"#.to_owned(),
            ),
        ];
        let table: Vec<String> = cases
            .iter()
            .map(|(what, b)| format!("{what}: {:?}", disposition(&read(b), &groups)))
            .collect();
        expect_test::expect![[r#"
            [
                "our termination: Handle",
                "our launch: Leave",
                "our test notification: Delete",
                "another group's termination: Leave",
                "another group's launch: Leave",
                "another group's test notification: Leave",
                "a test notification without a group: Leave",
                "another producer's message: Leave",
                "a JSON message of another producer: Leave",
            ]
        "#]]
        .assert_debug_eq(&table);
    }

    #[test]
    fn an_entry_with_the_instance_s_peer_url_keeps_the_termination_waiting() {
        use crate::{Member, MemberId, MemberName};
        let member = |name: Option<&str>, url: &str| Member {
            id: MemberId(1),
            name: name.map(|n| MemberName::new(n).unwrap()),
            peer_urls: vec![url.to_owned()],
            client_urls: Vec::new(),
            is_learner: name.is_none(),
        };
        let url = Some("http://127.0.51.4:2380");
        let others = [member(Some("i-2"), "http://127.0.51.5:2380")];
        assert!(!member_present(&others, "i-1", url));
        let named = [member(Some("i-1"), "http://127.0.51.4:2380")];
        assert!(member_present(&named, "i-1", url));
        assert!(member_present(&named, "i-1", None));
        // Added as a learner, never started: no name, only the peer URL.
        let unstarted = [member(None, "http://127.0.51.4:2380")];
        assert!(member_present(&unstarted, "i-1", url));
        assert!(!member_present(&unstarted, "i-1", None));
        // A replacement that got the freed address is another instance.
        let replacement = [member(Some("i-9"), "http://127.0.51.4:2380")];
        assert!(!member_present(&replacement, "i-1", url));
    }

    #[test]
    fn steps() {
        let every = Duration::from_secs(30);
        assert_eq!(next_step(false, Duration::ZERO, every), Step::Complete);
        assert_eq!(
            next_step(false, Duration::from_secs(99), every),
            Step::Complete
        );
        assert_eq!(next_step(true, Duration::from_secs(29), every), Step::Wait);
        assert_eq!(
            next_step(true, Duration::from_secs(30), every),
            Step::Heartbeat
        );
    }
}
