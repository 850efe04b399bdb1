//! Partitions: each test runs inside a network namespace it creates, where routing rules cut
//! some nodes off from the others. On loopback every connection leaves from 127.0.0.1, so a
//! rule cannot name the sending node by address: each node's pilot (and its etcd) runs as its
//! own user, and a `blackhole` rule per (user, destination) cuts the pairs, both ways. The
//! test itself runs as root and reaches every node.
//!
//! Each test runs twice: outside, it creates the namespace and runs this same test binary
//! inside it (`ip netns exec`), then deletes the namespace; inside, it runs the scenario, so
//! the whole harness works unchanged on the namespace's own loopback.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, clippy::print_stdout)] // Test code.

mod common;

use std::process::Command;
use std::time::Duration;

use common::workload::Workload;
use common::{Cluster, Version, etcd_bin, eventually, get, put};

const INSIDE: &str = "PILOT_TEST_INSIDE_NETNS";
/// The first node's user; node `i` runs as `FIRST_UID + i`.
const FIRST_UID: u32 = 40_100;

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|err| {
            panic!("{program} {args:?}: {err} (the partition tests need iproute2 and run as root)")
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

/// Outside: runs `test` of this binary inside a new namespace and checks that it passed.
/// Returns false when the caller is already inside (and should run the scenario).
fn outside(test: &str, tag: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return false;
    }
    if etcd_bin(Version::V35).is_none() {
        return true;
    }
    let name = format!("etcd-pilot-test-{tag}-{}", std::process::id());
    run("ip", &["netns", "add", &name]);
    let namespace = Namespace(name);
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("ip")
        .args(["netns", "exec", &namespace.0])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
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
    println!("{text}");
    true
}

/// Inside the namespace: loopback up, and the local routing table consulted after the
/// rules this test adds (by default it comes first, and every loopback address is local).
fn prepare_namespace() {
    run("ip", &["link", "set", "lo", "up"]);
    run("ip", &["rule", "add", "pref", "32000", "lookup", "local"]);
    run("ip", &["rule", "del", "pref", "0"]);
}

/// Adds (`add`) or deletes (`del`) the rules that cut every node of `side` off from every
/// other node of the cluster, both ways: their pilots, etcd peers and clients alike.
fn cut(cluster: &Cluster, side: &[usize], action: &str) {
    for &a in side {
        for b in (0..cluster.nodes.len()).filter(|b| !side.contains(b)) {
            for (from, to) in [(a, b), (b, a)] {
                let uid = cluster.nodes[from].uid.unwrap().to_string();
                let range = format!("{uid}-{uid}");
                let dest = format!("{}/32", cluster.nodes[to].ip);
                run(
                    "ip",
                    &[
                        "rule",
                        action,
                        "pref",
                        "100",
                        "uidrange",
                        &range,
                        "to",
                        &dest,
                        "blackhole",
                    ],
                );
            }
        }
    }
}

/// A cluster on `subnet` whose pilots run as their own users; `None` outside CI without etcd.
async fn cluster_of_users(subnet: u8, extra: &str) -> Option<Cluster> {
    prepare_namespace();
    let mut cluster = Cluster::with(subnet, 3, etcd_bin(Version::V35)?, extra, &[]);
    cluster.own_users(FIRST_UID);
    cluster.start_all();
    cluster.wait_settled().await;
    Some(cluster)
}

/// Whether the etcd at `endpoint` answers its status with no leader (a cut-off member).
async fn leaderless(endpoint: String) -> Option<()> {
    let mut client = common::connect(&[endpoint]).await.ok()?;
    let status = tokio::time::timeout(Duration::from_secs(2), client.status())
        .await
        .ok()?
        .ok()?;
    (status.leader() == 0).then_some(())
}

/// A minority partition: m3 is cut off from m1 and m2 but still listed in discovery, so it
/// is not removed; after healing it catches up with the writes it missed.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_member_still_listed_is_not_removed_and_catches_up() {
    if outside(
        "a_partitioned_member_still_listed_is_not_removed_and_catches_up",
        "minority",
    ) {
        return;
    }
    let Some(cluster) = cluster_of_users(39, "").await else {
        return;
    };
    let member = common::member_id(&cluster.nodes[2].client_url()).await;
    put(&cluster.nodes[0].client_url(), "before", "1").await;
    let offsets: Vec<usize> = cluster.nodes.iter().map(|n| n.log().len()).collect();

    cut(&cluster, &[2], "add");
    eventually(
        "m3 to lose its leader (the cut holds)",
        Duration::from_secs(20),
        || leaderless(cluster.nodes[2].client_url()),
    )
    .await;
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
    eventually(
        "the majority's coordinator to report m3 down",
        Duration::from_secs(20),
        || async {
            for i in 0..2 {
                let status = cluster.pilot_status(i).await?;
                if status["plan"]["coordinator"] == true
                    && status["plan"]["conditions"].to_string().contains("m3")
                {
                    return Some(());
                }
            }
            None
        },
    )
    .await;

    cut(&cluster, &[2], "del");
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

/// The majority partition seen from the minority: m1 is cut off from m2 and m3, which keep a
/// quorum and take writes. m1 has lost its quorum, but the voters it cannot reach are still
/// listed: it says so and never reseeds (a reseed here would split the cluster in two). After
/// healing, the cluster is the old one, m1 the same member, with every acknowledged write.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_cut_off_from_a_listed_majority_never_reseeds() {
    if outside(
        "a_member_cut_off_from_a_listed_majority_never_reseeds",
        "majority",
    ) {
        return;
    }
    let Some(cluster) = cluster_of_users(91, "quorum_lost_after = \"2s\"\n").await else {
        return;
    };
    let m1 = cluster.nodes[0].client_url();
    let member = common::member_id(&m1).await;
    let cluster_id = common::cluster_id(&m1).await;
    let workload = Workload::start(cluster.endpoints(), cluster_id, "w");
    tokio::time::sleep(Duration::from_secs(1)).await;

    cut(&cluster, &[0], "add");
    let status = cluster.wait_quorum_lost(0, 2).await;
    let quorum = &status["quorum"];
    assert_eq!(
        quorum["unreachable"],
        serde_json::json!(["m2", "m3"]),
        "{status}"
    );
    assert_eq!(quorum["seed"], serde_json::Value::Null, "{status}");
    assert!(
        quorum["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("still listed")),
        "{status}"
    );
    // Well past quorum_lost_after and remove_after (2 s each): nothing happens on either side.
    let acked_before = workload.acked();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        workload.acked() > acked_before,
        "the majority kept taking writes"
    );
    let status = cluster.pilot_status(0).await.unwrap();
    assert_eq!(
        status["quorum"]["seed"],
        serde_json::Value::Null,
        "{status}"
    );
    assert_eq!(status["phase"], "running", "{status}");

    cut(&cluster, &[0], "del");
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    cluster.wait_quorum_clear(0).await;
    let seen = workload.finish().await;
    assert!(
        seen.failed > 0,
        "writes through m1 failed while it was cut off"
    );
    assert_eq!(
        common::member_id(&m1).await,
        member,
        "m1 is the same member"
    );
    assert_eq!(
        common::cluster_id(&m1).await,
        cluster_id,
        "the same cluster"
    );
    for node in &cluster.nodes {
        assert!(
            node.metrics().await.contains("etcd_pilot_reseeds_total 0"),
            "{} reseeded",
            node.name
        );
        assert!(
            !node.data_dir().join("quarantine").exists(),
            "{} set data aside",
            node.name
        );
    }
}
