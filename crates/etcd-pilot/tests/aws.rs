//! AWS, against a moto server on loopback: pilots find each other through an autoscaling
//! group (each with its own instance metadata), publish Route53 records of the healthy
//! voters, remove a terminating instance's member before letting its termination continue,
//! keep their view through discovery outages, follow scale-out and scale-in, and form one
//! cluster across two regions. Instance addresses are loopback (`127.0.S.0/24` subnets).

mod common;

use std::time::Duration;

use common::aws::{AwsNodes, DOMAIN, GROUP, HOOK, Moto, expected_records, index, pilot_config};
use common::workload::Workload;
use common::{Cluster, Version, eventually};

const REGION: &str = "us-east-1";

/// The message the group posts for a terminating instance (AWS's documented format).
fn terminating(instance: &str, token: &str) -> String {
    serde_json::json!({
        "Origin": "AutoScalingGroup",
        "LifecycleHookName": HOOK,
        "Destination": "EC2",
        "AccountId": "123456789012",
        "RequestId": format!("req-{token}"),
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "AutoScalingGroupName": GROUP,
        "Service": "AWS Auto Scaling",
        "Time": "2026-11-22T09:00:00.000Z",
        "EC2InstanceId": instance,
        "LifecycleActionToken": token,
    })
    .to_string()
}

fn timers(remove_after: &str) -> String {
    format!(
        "[timers]\nobserve_interval = \"300ms\"\nremove_after = \"{remove_after}\"\ncoordinator_lease = \"3s\"\n"
    )
}

/// A cluster of pilots in `subnet`, sharing moto's environment; moto on `port`.
async fn aws_cluster(subnet: u8, port: u16) -> Option<(Cluster, Moto, std::path::PathBuf)> {
    aws_cluster_with(subnet, port, false).await
}

/// [`aws_cluster`]; with `hold`, terminations wait in `Terminating:Wait` for the hook.
async fn aws_cluster_with(
    subnet: u8,
    port: u16,
    hold: bool,
) -> Option<(Cluster, Moto, std::path::PathBuf)> {
    let etcd = common::etcd_bin(Version::V35)?;
    let mut cluster = Cluster::with(subnet, 0, etcd.clone(), "", &[]);
    let moto = Moto::start_with(port, &cluster.tmp.path().join("moto"), hold).await?;
    cluster.env = moto.env();
    Some((cluster, moto, etcd))
}

/// Starts a pilot for every running instance of the group in `REGION`; waits until settled.
async fn start_group(
    cluster: &mut Cluster,
    moto: &Moto,
    config: &str,
) -> (Vec<(String, String)>, AwsNodes) {
    let instances = moto.instances(REGION).await;
    let mut nodes = AwsNodes::new();
    for (id, ip) in &instances {
        nodes.add(cluster, id, ip, REGION, config);
    }
    cluster.wait_settled().await;
    (instances, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_forms_a_cluster_publishes_its_records_and_hands_terminations_over() {
    let Some((mut cluster, moto, etcd)) = aws_cluster(51, 21510).await else {
        return;
    };
    moto.group(REGION, 51, 3).await;
    let zone = moto.zone().await;
    let queue = moto.lifecycle_queue(REGION).await;
    // Removal by discovery alone would take 10 minutes: only the hook removes within the test.
    let config = pilot_config(
        &etcd,
        REGION,
        &format!(
            "[dns]\nprovider = \"route53\"\nzone_id = \"{zone}\"\ndomain = \"{DOMAIN}\"\nttl = 30\n\n\
             [lifecycle]\nqueue_url = \"{queue}\"\nheartbeat_interval = \"1s\"\n\n{}",
            timers("10m")
        ),
    );
    let (instances, mut nodes) = start_group(&mut cluster, &moto, &config).await;
    assert_eq!(instances.len(), 3, "{instances:?}");
    // Each pilot took its identity from its own metadata.
    for (i, (id, _)) in instances.iter().enumerate() {
        let status = cluster.pilot_status(i).await.unwrap();
        assert_eq!(status["name"], id.as_str());
        assert_eq!(status["discovery"]["provider"], "aws");
        assert_eq!(status["discovery"]["peers"], 3);
        assert_eq!(status["discovery"]["stale"], false);
    }
    eventually(
        "Route53 to list the 3 members",
        Duration::from_secs(30),
        || async { (moto.records(&zone).await == expected_records(&instances)).then_some(()) },
    )
    .await;

    // The group's own test notification is deleted; a message of another producer (the queue
    // may be shared) stays for its owner, and its body never reaches the log.
    moto.watch_members(&cluster.endpoints());
    moto.send(
        REGION,
        &queue,
        r#"{"AccountId":"123456789012","RequestId":"t","AutoScalingGroupARN":"arn","AutoScalingGroupName":"etcd","Service":"AWS Auto Scaling","Event":"autoscaling:TEST_NOTIFICATION","Time":"2026-11-22T09:00:00.000Z"}"#,
    )
    .await;
    moto.send(REGION, &queue, "order 7 for another consumer")
        .await;
    let coordinator = cluster.coordinator().await.expect("one coordinator");
    eventually(
        "the other producer's message to be seen and left",
        Duration::from_secs(30),
        || async {
            cluster.nodes[coordinator]
                .log()
                .contains("is left for its owner: not a lifecycle message")
                .then_some(())
        },
    )
    .await;
    eventually(
        "the test notification deleted",
        Duration::from_secs(30),
        || async { (moto.queue_depth(REGION, &queue).await == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        moto.queue_depth(REGION, &queue).await,
        1,
        "the other message stays"
    );
    assert!(
        !cluster.logs().contains("order 7"),
        "a message body was logged"
    );
    moto.purge(REGION, &queue).await;

    // Terminate an instance that does not coordinate; the group posts its message (twice:
    // SQS delivers at least once). Its pilot keeps running, as in Terminating:Wait.
    let coordinator = cluster.coordinator().await.expect("one coordinator");
    let victim = (0..3).find(|&i| i != coordinator).unwrap();
    let victim_id = instances[victim].0.clone();
    moto.terminate(REGION, &victim_id).await;
    let body = terminating(&victim_id, "token-1");
    moto.send(REGION, &queue, &body).await;
    moto.send(REGION, &queue, &body).await;
    let complete = eventually(
        "CompleteLifecycleAction for the terminated instance",
        Duration::from_secs(60),
        || async {
            moto.lifecycle_calls()
                .into_iter()
                .find(|c| c["call"] == "complete" && c["instance"] == victim_id.as_str())
        },
    )
    .await;
    assert_eq!(complete["result"], "CONTINUE");
    assert_eq!(complete["token"], "token-1");
    assert_eq!(complete["hook"], HOOK);
    assert_eq!(complete["group"], GROUP);
    let members: Vec<String> = serde_json::from_value(complete["members"].clone())
        .expect("the recorder saw the member list when the call came");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(
        !members.contains(&victim_id),
        "the termination was completed while {victim_id} was still a member: {members:?}"
    );
    eventually("both messages deleted", Duration::from_secs(30), || async {
        (moto.queue_depth(REGION, &queue).await == 0).then_some(())
    })
    .await;
    // Delivered again after completion (SQS is at least once): the group answers that no
    // action is pending; the message is deleted, and the action was completed once.
    moto.send(REGION, &queue, &body).await;
    eventually(
        "the late redelivery deleted",
        Duration::from_secs(30),
        || async {
            let rejected = moto.lifecycle_calls().iter().any(|c| {
                c["call"] == "complete"
                    && c["instance"] == victim_id.as_str()
                    && c["rejected"] == true
            });
            (rejected && moto.queue_depth(REGION, &queue).await == 0).then_some(())
        },
    )
    .await;
    let accepted = moto
        .lifecycle_calls()
        .iter()
        .filter(|c| {
            c["call"] == "complete" && c["instance"] == victim_id.as_str() && c["rejected"] == false
        })
        .count();
    assert_eq!(accepted, 1, "{:?}", moto.lifecycle_calls());
    let coordinator_log = cluster.nodes[coordinator].log();
    assert!(
        coordinator_log.contains("remove_terminating"),
        "{coordinator_log}"
    );
    // The instance is gone now.
    cluster.kill(victim);

    // The replacement the group launched joins as a learner, is promoted, and is published.
    let now = moto.instances(REGION).await;
    assert_eq!(now.len(), 3, "{now:?}");
    let (new_id, new_ip) = now
        .iter()
        .find(|(id, _)| !instances.iter().any(|(old, _)| old == id))
        .unwrap()
        .clone();
    let new = nodes.add(&mut cluster, &new_id, &new_ip, REGION, &config);
    let voters: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != victim).collect();
    cluster.wait_voters(&voters, Duration::from_secs(60)).await;
    assert!(
        cluster.nodes[new]
            .log()
            .contains("adding this node as a learner"),
        "{}",
        cluster.nodes[new].log()
    );
    eventually(
        "Route53 to list the replacement",
        Duration::from_secs(30),
        || async { (moto.records(&zone).await == expected_records(&now)).then_some(()) },
    )
    .await;

    // Now the coordinator's own instance terminates while another member is down: removing
    // it would leave 1 of 2 voters healthy, so the pilot waits and sends heartbeats.
    let coordinator = cluster.coordinator().await.expect("one coordinator");
    let leader_id = cluster.nodes[coordinator].name.clone();
    let down = voters.iter().copied().find(|&i| i != coordinator).unwrap();
    cluster.kill(down);
    // Only healthy voters are published: the member that is down leaves the records.
    let healthy: Vec<(String, String)> = voters
        .iter()
        .filter(|&&i| i != down)
        .map(|&i| (cluster.nodes[i].name.clone(), cluster.nodes[i].ip.clone()))
        .collect();
    eventually(
        "Route53 to drop the member that is down",
        Duration::from_secs(30),
        || async { (moto.records(&zone).await == expected_records(&healthy)).then_some(()) },
    )
    .await;
    moto.terminate(REGION, &leader_id).await;
    moto.send(REGION, &queue, &terminating(&leader_id, "token-2"))
        .await;
    eventually(
        "heartbeats while the removal waits",
        Duration::from_secs(60),
        || async {
            let beats = moto
                .lifecycle_calls()
                .iter()
                .filter(|c| c["call"] == "heartbeat" && c["token"] == "token-2")
                .count();
            (beats >= 2).then_some(())
        },
    )
    .await;
    assert!(
        !moto
            .lifecycle_calls()
            .iter()
            .any(|c| c["call"] == "complete" && c["token"] == "token-2"),
        "completed while the quorum forbade the removal"
    );
    let status = cluster.pilot_status(coordinator).await.unwrap();
    assert_eq!(
        status["lifecycle"]["pending"][0],
        leader_id.as_str(),
        "{status}"
    );
    assert!(
        status["plan"]["reason"]
            .as_str()
            .unwrap()
            .contains("below a quorum"),
        "{status}"
    );
    // The member comes back: leadership moves away, the next coordinator takes the message
    // over, removes the member, and only then completes.
    cluster.start(down);
    let complete = eventually(
        "CompleteLifecycleAction for the old coordinator",
        Duration::from_secs(90),
        || async {
            moto.lifecycle_calls()
                .into_iter()
                .find(|c| c["call"] == "complete" && c["token"] == "token-2")
        },
    )
    .await;
    let members: Vec<String> = serde_json::from_value(complete["members"].clone()).unwrap();
    assert!(!members.contains(&leader_id), "{members:?}");
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(
        cluster.nodes[coordinator].log().contains("move_leader"),
        "{}",
        cluster.nodes[coordinator].log()
    );
    cluster.kill(coordinator);
    let rest: Vec<usize> = voters
        .iter()
        .copied()
        .filter(|&i| i != coordinator)
        .collect();
    cluster.wait_voters(&rest, Duration::from_secs(60)).await;

    // A message of another group (a shared queue) is not the pilot's to complete.
    let foreign = terminating("i-0ther", "token-foreign").replace(
        &format!("\"AutoScalingGroupName\":\"{GROUP}\""),
        "\"AutoScalingGroupName\":\"other-service\"",
    );
    assert!(foreign.contains("other-service"));
    moto.send(REGION, &queue, &foreign).await;
    let coordinator = cluster.coordinator().await.expect("one coordinator");
    eventually(
        "the foreign message to be seen",
        Duration::from_secs(30),
        || async {
            cluster.nodes[coordinator]
                .log()
                .contains(
                    "left for its owner: a termination of instance i-0ther in group other-service",
                )
                .then_some(())
        },
    )
    .await;
    assert!(
        !moto
            .lifecycle_calls()
            .iter()
            .any(|c| c["token"] == "token-foreign"),
        "another group's termination was completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_outage_changes_nothing_and_says_discovery_is_stale() {
    let Some((mut cluster, mut moto, etcd)) = aws_cluster(52, 21520).await else {
        return;
    };
    moto.group(REGION, 52, 3).await;
    let config = pilot_config(&etcd, REGION, &timers("2s"));
    let (_instances, _nodes) = start_group(&mut cluster, &moto, &config).await;

    // moto down for longer than remove_after: every pilot says its view is stale, and no
    // member is removed.
    moto.kill();
    for i in 0..3 {
        eventually("discovery to be stale", Duration::from_secs(30), || async {
            let status = cluster.pilot_status(i).await?;
            (status["discovery"]["stale"] == true).then_some(status)
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = cluster.pilot_status(0).await.unwrap();
    assert!(
        status["discovery"]["error"]
            .as_str()
            .unwrap()
            .contains("AWS discovery failed"),
        "{status}"
    );
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(5))
        .await;
    // Each step waits for AWS to time out meanwhile, so the coordinator's lease can lapse
    // between two steps and the role is briefly nobody's: wait for it to be held.
    let coordinator = eventually("one coordinator", Duration::from_secs(30), || {
        cluster.coordinator()
    })
    .await;
    let plan = &cluster.pilot_status(coordinator).await.unwrap()["plan"];
    assert!(
        plan["reason"]
            .as_str()
            .unwrap()
            .contains("discovery failed"),
        "{plan}"
    );
    for node in &cluster.nodes {
        assert!(!node.log().contains("remove_unlisted"), "{}", node.log());
    }
    // A pilot restarted during the outage still brings its member back, on its data.
    cluster.stop(1);
    cluster.start(1);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    assert!(
        cluster.nodes[1]
            .log()
            .contains("deciding from the local data alone"),
        "{}",
        cluster.nodes[1].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_scales_out_to_five_and_back_to_three() {
    let Some((mut cluster, moto, etcd)) = aws_cluster(53, 21530).await else {
        return;
    };
    moto.group(REGION, 53, 3).await;
    let config = pilot_config(&etcd, REGION, &timers("2s"));
    let (first, mut nodes) = start_group(&mut cluster, &moto, &config).await;
    moto.set_desired(REGION, 5).await;
    let five = moto.instances(REGION).await;
    assert_eq!(five.len(), 5, "{five:?}");
    for (id, ip) in five
        .iter()
        .filter(|(id, _)| !first.iter().any(|(f, _)| f == id))
    {
        nodes.add(&mut cluster, id, ip, REGION, &config);
    }
    cluster
        .wait_voters(&[0, 1, 2, 3, 4], Duration::from_secs(90))
        .await;
    // Scale in: the group terminates two instances (which ones is its choice).
    moto.set_desired(REGION, 3).await;
    let three = moto.instances(REGION).await;
    assert_eq!(three.len(), 3, "{three:?}");
    for (id, _) in five
        .iter()
        .filter(|(id, _)| !three.iter().any(|(t, _)| t == id))
    {
        cluster.kill(index(&cluster, id));
    }
    let keep: Vec<usize> = three.iter().map(|(id, _)| index(&cluster, id)).collect();
    cluster.wait_voters(&keep, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_across_two_regions() {
    let Some((mut cluster, moto, etcd)) = aws_cluster(54, 21540).await else {
        return;
    };
    // The same group name in both regions, each in its own subnet.
    moto.group("us-east-1", 54, 2).await;
    moto.group("eu-west-1", 55, 1).await;
    let config = pilot_config(&etcd, "us-east-1,eu-west-1", &timers("2s"));
    let mut all = Vec::new();
    let mut nodes = AwsNodes::new();
    for region in ["us-east-1", "eu-west-1"] {
        for (id, ip) in moto.instances(region).await {
            nodes.add(&mut cluster, &id, &ip, region, &config);
            all.push(id);
        }
    }
    assert_eq!(all.len(), 3);
    cluster.wait_settled().await;
    let east = cluster.pilot_status(0).await.unwrap();
    let west = cluster.pilot_status(2).await.unwrap();
    assert_eq!(east["member"]["cluster_id"], west["member"]["cluster_id"]);
    assert_eq!(west["discovery"]["peers"], 3);
    assert!(cluster.nodes[2].ip.starts_with("127.0.55."));
}

/// An instance refresh at 0 % minimum healthy: every instance of the group terminates at once
/// while the hook holds them (`Terminating:Wait`, etcd still running). The new instances must
/// join the old cluster (one cluster id, no bootstrap, no restore), the old members leave one
/// at a time as the quorum and the full-strength rule allow, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_terminating_at_once_hands_the_cluster_to_the_new_ones() {
    let Some((mut cluster, moto, etcd)) = aws_cluster_with(56, 21560, true).await else {
        return;
    };
    moto.group(REGION, 56, 3).await;
    let queue = moto.lifecycle_queue(REGION).await;
    let config = pilot_config(
        &etcd,
        REGION,
        &format!(
            "[lifecycle]\nqueue_url = \"{queue}\"\nheartbeat_interval = \"1s\"\n\n{}",
            timers("10m")
        ),
    );
    let (old, mut nodes) = start_group(&mut cluster, &moto, &config).await;
    let cluster_id = common::cluster_id(&cluster.nodes[0].client_url()).await;
    let mut workload = Workload::start(cluster.endpoints(), cluster_id, "/refresh");
    eventually("the first writes", Duration::from_secs(20), || async {
        (workload.acked() >= 20).then_some(())
    })
    .await;

    for (n, (id, _)) in old.iter().enumerate() {
        moto.terminate(REGION, id).await;
        moto.send(REGION, &queue, &terminating(id, &format!("token-{n}")))
            .await;
    }
    let states = moto.lifecycle_states(REGION).await;
    let waiting = states.values().filter(|s| *s == "Terminating:Wait").count();
    assert_eq!(waiting, 3, "{states:?}");
    let new: Vec<(String, String)> = moto
        .instances(REGION)
        .await
        .into_iter()
        .filter(|(id, _)| !old.iter().any(|(o, _)| o == id))
        .collect();
    assert_eq!(new.len(), 3, "{new:?}");
    let mut fresh = Vec::new();
    for (id, ip) in &new {
        let i = nodes.add(&mut cluster, id, ip, REGION, &config);
        workload.watch(cluster.nodes[i].client_url());
        fresh.push(i);
    }
    moto.watch_members(&cluster.endpoints());

    // As the group would: an old instance is terminated once its action is completed.
    let mut gone = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while gone.len() < old.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "terminations not all completed: {:?}\n{}",
            moto.lifecycle_calls(),
            cluster.logs()
        );
        for (id, _) in &old {
            let completed = moto
                .lifecycle_calls()
                .iter()
                .any(|c| c["call"] == "complete" && c["instance"] == id.as_str());
            if completed && !gone.contains(id) {
                cluster.kill(index(&cluster, id));
                gone.push(id.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.wait_voters(&fresh, Duration::from_secs(60)).await;
    for &i in &fresh {
        let url = cluster.nodes[i].client_url();
        assert_eq!(common::cluster_id(&url).await, cluster_id, "one cluster");
        let log = cluster.nodes[i].log();
        assert!(log.contains("adding this node as a learner"), "{log}");
        assert!(!log.contains("bootstrapping a new cluster"), "{log}");
        assert!(!log.contains("restoring"), "{log}");
    }
    // Each termination was completed only once its member was gone, never below two members.
    for call in moto
        .lifecycle_calls()
        .iter()
        .filter(|c| c["call"] == "complete")
    {
        let members: Vec<String> = serde_json::from_value(call["members"].clone()).unwrap();
        assert!(members.len() >= 2, "{call}");
        assert!(
            !members.iter().any(|m| call["instance"] == m.as_str()),
            "{call}"
        );
    }
    workload.finish().await;
}
