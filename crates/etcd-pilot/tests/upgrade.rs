//! Upgrades of etcd, with real pilots and real etcd: for now, the check of a path before
//! anything moves (`etcd-pilot upgrade check`).
//!
//! Each test has its own loopback /24 (the number passed to `Cluster::with`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test code.

mod common;

use common::{Cluster, Version, etcd_bin};

/// A 3.5.1 cluster whose nodes also have 3.5.16, the newest 3.5 and a test double that says
/// it is 3.7.0 (`etcd.versions`). The check allows the patch upgrades and names the order
/// (the leader last), refuses going back to 3.4, skipping to 3.7 and 3.6 from below its
/// floor, and says which nodes lack a release; the double is only ever asked its version.
#[tokio::test(flavor = "multi_thread")]
async fn the_upgrade_check_allows_patches_and_refuses_what_etcd_forbids() {
    let (Some(v35), Some(v3516), Some(newest), Some(v34)) = (
        etcd_bin(Version::V35),
        etcd_bin(Version::V3516),
        etcd_bin(Version::V35Newest),
        etcd_bin(Version::V34),
    ) else {
        return;
    };
    let mut cluster = Cluster::with(94, 3, v35, "", &[]);
    let double = cluster.tmp.path().join("etcd-3.7/etcd");
    let calls = cluster.tmp.path().join("double-calls.log");
    std::fs::create_dir_all(double.parent().unwrap()).unwrap();
    std::fs::write(
        &double,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\necho 'etcd Version: 3.7.0'\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&double, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let versions = format!(
        "versions = [{:?}, {:?}, {:?}]\n",
        v3516.display().to_string(),
        newest.display().to_string(),
        cluster.tmp.path().join("etcd-*/etcd").display().to_string()
    );
    for node in &cluster.nodes {
        let path = node.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("[etcd]\n", &format!("[etcd]\n{versions}")),
        )
        .unwrap();
    }
    cluster.start_all();
    cluster.wait_settled().await;
    let status = cluster.pilot_status(0).await.unwrap();
    let available = status["release"]["available"].to_string();
    assert!(
        available.contains("3.5.1 ")
            && available.contains("3.5.16 ")
            && available.contains("3.7.0 "),
        "{available}"
    );
    let endpoints = cluster.endpoints().join(",");
    let check = |to: &str| {
        let out = cluster.cli(&["upgrade", "check", "--to", to, "--endpoints", &endpoints]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    let (ok, text) = check("3.5.16");
    assert!(ok, "{text}");
    assert!(
        text.contains("path:     patch releases of one minor"),
        "{text}"
    );
    assert!(text.contains("cluster version 3.5"), "{text}");
    assert!(text.contains("below 3.5's security floor"), "{text}");
    let order = text.lines().find(|l| l.starts_with("order:")).unwrap();
    assert!(
        order.ends_with("(the leader, after leadership moves away)"),
        "{order}"
    );
    let (ok, text) = check(newest.to_str().unwrap());
    assert!(ok, "a binary names its release: {text}");

    let (ok, text) = check("3.4.23");
    assert!(!ok);
    assert!(
        text.contains("goes back a minor, but the cluster version is 3.5 already"),
        "{text}"
    );
    let (ok, text) = check(double.to_str().unwrap());
    assert!(!ok);
    assert!(text.contains("3.5.1 -> 3.7.0 skips a minor"), "{text}");
    let (ok, text) = check("3.6.0");
    assert!(!ok);
    assert!(text.contains("allowed only from 3.5.32 or later"), "{text}");
    // 3.4.23 is allowed by nothing here, and no node has it either: both are said.
    let (ok, text) = check(v34.to_str().unwrap());
    assert!(!ok);
    assert!(
        text.contains("MISSING: add its binary to etcd.versions"),
        "{text}"
    );

    let out = cluster.cli(&[
        "upgrade",
        "check",
        "--to",
        "3.5.16",
        "--json",
        "--endpoints",
        &endpoints,
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["allowed"], true, "{json}");
    assert_eq!(json["members"].as_array().unwrap().len(), 3, "{json}");
    assert!(
        json["members"][0]["target_bin"]
            .as_str()
            .unwrap()
            .ends_with("etcd"),
        "{json}"
    );

    // The double was only ever asked its version.
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        !calls.is_empty() && calls.lines().all(|l| l == "--version"),
        "{calls}"
    );
}
