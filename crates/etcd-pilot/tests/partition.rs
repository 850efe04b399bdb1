//! A minority partition: the cluster runs inside a network namespace this test creates, and
//! iptables rules inside it cut one member off. The member is still listed in discovery, so
//! it must not be removed; after healing it catches up with the writes it missed.
//!
//! The test runs twice: outside, it creates the namespace and runs this same test binary
//! inside it (`ip netns exec`), then deletes the namespace; inside, it runs the scenario, so
//! the whole harness works unchanged on the namespace's own loopback.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test code.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Version, etcd_bin, get, put};

const INSIDE: &str = "PILOT_TEST_INSIDE_NETNS";
const TEST: &str = "a_partitioned_member_still_listed_is_not_removed_and_catches_up";

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap_or_else(|err| {
        panic!("{program} {args:?}: {err} (the partition test needs iproute2 and iptables, run as root)")
    });
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

/// Deletes the namespace when the outer test ends, however it ends.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_member_still_listed_is_not_removed_and_catches_up() {
    if std::env::var_os(INSIDE).is_some() {
        return inside().await;
    }
    if etcd_bin(Version::V35).is_none() {
        return;
    }
    let name = format!("etcd-pilot-test-{}", std::process::id());
    run("ip", &["netns", "add", &name]);
    let namespace = Namespace(name);
    run("ip", &["-n", &namespace.0, "link", "set", "lo", "up"]);
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("ip")
        .args(["netns", "exec", &namespace.0])
        .arg(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the scenario failed inside the namespace:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "the scenario did not run:\n{text}"
    );
}

fn iptables(action: &str, from: &str, to: &str) {
    run(
        "iptables",
        &[action, "INPUT", "-s", from, "-d", to, "-j", "DROP"],
    );
}

async fn inside() {
    let Some(cluster) = common::running(39, 3, Version::V35).await else {
        return;
    };
    let isolated = cluster.nodes[2].ip.clone();
    let member = common::member_id(&cluster.nodes[2].client_url()).await;
    put(&cluster.nodes[0].client_url(), "before", "1").await;
    let offsets: Vec<usize> = cluster.nodes.iter().map(|n| n.log().len()).collect();

    for other in [&cluster.nodes[0].ip, &cluster.nodes[1].ip] {
        iptables("-A", &isolated, other);
        iptables("-A", other, &isolated);
    }
    // Far beyond remove_after (2 s in tests): the majority keeps serving, m3 stays a member.
    for i in 0..30 {
        put(
            &cluster.nodes[0].client_url(),
            &format!("during/{i:02}"),
            "x",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut client = common::connect(&[cluster.nodes[0].client_url()])
        .await
        .unwrap();
    let members = client.member_list().await.unwrap();
    assert!(
        members.members().iter().any(|m| m.id() == member),
        "the partitioned member was removed:\n{}",
        cluster.logs()
    );
    let plan = cluster.pilot_status(0).await.unwrap();
    assert_eq!(plan["plan"]["next"], "converged", "{plan}");

    for other in [&cluster.nodes[0].ip, &cluster.nodes[1].ip] {
        iptables("-D", &isolated, other);
        iptables("-D", other, &isolated);
    }
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    assert_eq!(
        common::member_id(&cluster.nodes[2].client_url()).await,
        member
    );
    assert_eq!(
        get(&cluster.nodes[2].client_url(), "during/29")
            .await
            .as_deref(),
        Some("x")
    );
    for (node, offset) in cluster.nodes.iter().zip(offsets) {
        let log = node.log_since(offset);
        assert!(!log.contains("membership change"), "{}: {log}", node.name);
    }
}
