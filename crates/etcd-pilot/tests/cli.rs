//! The binary's behaviour on bad input and its configuration surface; no etcd needed.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test helpers may unwrap and spawn.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::pilot_bin;

/// A stand-in file with the executable bit, where only the path is validated.
fn fake_etcd(dir: &Path) -> String {
    let path = dir.join("etcd");
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn config(bin: &str, name_line: &str, peer_url: &str, peers_name: &str) -> String {
    format!(
        "{name_line}\ndata_dir = \"/tmp/unused\"\n[etcd]\nbin = {bin:?}\npeer_url = {peer_url:?}\nclient_url = \"http://127.0.9.1:2379\"\n\
         [discovery]\npeers = [{{ name = {peers_name:?}, peer_url = \"http://127.0.9.1:2380\", client_url = \"http://127.0.9.1:2379\" }}]\n"
    )
}

fn run(
    dir: &Path,
    config_text: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let path = dir.join("pilot.toml");
    std::fs::write(&path, config_text).unwrap();
    #[allow(clippy::disallowed_methods)]
    let mut command = Command::new(pilot_bin());
    command.args(args).arg("--config").arg(&path).env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_bad_config_exits_64_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_etcd(dir.path());
    let not_executable = dir.path().join("etcd-no-x");
    std::fs::write(&not_executable, "").unwrap();
    let not_executable = not_executable.display().to_string();
    let good_url = "http://127.0.9.1:2380";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!(
                "nmae = \"m1\"\n{}",
                config(&bin, "name = \"m1\"", good_url, "m1")
            ),
            vec!["unknown field `nmae`", "line 1", "fix: correct the file"],
        ),
        (
            "missing name",
            config(&bin, "", good_url, "m1"),
            vec!["name: missing", "ETCD_PILOT_NAME or --name"],
        ),
        (
            "malformed URL",
            config(&bin, "name = \"m1\"", "127.0.9.1:2380", "m1"),
            vec!["etcd.peer_url", "scheme://host:port"],
        ),
        (
            "URL without a port",
            config(&bin, "name = \"m1\"", "http://127.0.9.1", "m1"),
            vec!["etcd.peer_url", "explicit port"],
        ),
        (
            "missing etcd binary",
            config("/nonexistent/etcd", "name = \"m1\"", good_url, "m1"),
            vec![
                "etcd.bin: /nonexistent/etcd: No such file",
                "fix: install etcd, or set etcd.bin",
            ],
        ),
        (
            "etcd binary not executable",
            config(&not_executable, "name = \"m1\"", good_url, "m1"),
            vec!["etcd.bin", "is not executable", "chmod +x"],
        ),
        (
            "data dir at the root",
            config(&bin, "name = \"m1\"", good_url, "m1")
                .replace("data_dir = \"/tmp/unused\"", "data_dir = \"/\""),
            vec![
                "data_dir: / is a system directory",
                "fix: use a folder of its own",
            ],
        ),
        (
            "own name absent from the peers",
            config(&bin, "name = \"m1\"", good_url, "m2"),
            vec![
                "discovery.peers: this node (m1) is not in the peer list (m2)",
                "add this node to the peers",
            ],
        ),
    ];
    for (case, text, expected) in cases {
        for command in [["agent"].as_slice(), ["config", "show"].as_slice()] {
            let (code, _, stderr) = run(dir.path(), &text, command, &[]);
            assert_eq!(
                code, 64,
                "{case} ({command:?}): exit code {code}, stderr:\n{stderr}"
            );
            for needle in &expected {
                assert!(
                    stderr.contains(needle),
                    "{case} ({command:?}): {needle:?} not in:\n{stderr}"
                );
            }
        }
    }
}

#[test]
fn unknown_environment_variables_and_flags_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_etcd(dir.path());
    let text = config(&bin, "name = \"m1\"", "http://127.0.9.1:2380", "m1");
    let (code, _, stderr) = run(
        dir.path(),
        &text,
        &["agent"],
        &[("ETCD_PILOT_ETCD_BINN", "/x")],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("ETCD_PILOT_ETCD_BINN: unknown environment variable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ETCD_PILOT_ETCD_BIN,"),
        "the fix lists the valid names: {stderr}"
    );
    let (code, _, stderr) = run(dir.path(), &text, &["agent", "--etcd-binn", "/x"], &[]);
    assert_eq!(code, 64, "{stderr}");
}

#[test]
fn config_show_prints_values_with_their_origin_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_etcd(dir.path());
    let text = format!(
        "{}\n",
        config(&bin, "name = \"m1\"", "http://127.0.9.1:2380", "m1").replace(
            "[etcd]\n",
            "[etcd]\nusername = \"root\"\npassword = \"hunter2\"\n"
        )
    );
    let (code, stdout, stderr) = run(
        dir.path(),
        &text,
        &["config", "show", "--data-dir", "/srv/pilot"],
        &[("ETCD_PILOT_CLUSTER_NAME", "prod")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("name = \"m1\"  # file "), "{stdout}");
    assert!(
        stdout.contains("cluster_name = \"prod\"  # env ETCD_PILOT_CLUSTER_NAME"),
        "{stdout}"
    );
    assert!(
        stdout.contains("data_dir = \"/srv/pilot\"  # flag --data-dir"),
        "{stdout}"
    );
    assert!(
        stdout.contains("timers.stop_grace = \"10s\"  # default"),
        "{stdout}"
    );
    assert!(
        stdout.contains("etcd.password = \"<redacted>\""),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("admin.listen = \"127.0.9.1:2378\""),
        "{stdout}"
    );
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_etcd(dir.path());
    let text = config(
        &bin,
        "name = \"m1\"\ncluster_name = \"from-file\"",
        "http://127.0.9.1:2380",
        "m1",
    );
    let (_, stdout, _) = run(
        dir.path(),
        &text,
        &["config", "show"],
        &[("ETCD_PILOT_CLUSTER_NAME", "from-env")],
    );
    assert!(stdout.contains("cluster_name = \"from-env\""), "{stdout}");
    let (_, stdout, _) = run(
        dir.path(),
        &text,
        &["config", "show", "--cluster-name", "from-flag"],
        &[("ETCD_PILOT_CLUSTER_NAME", "from-env")],
    );
    assert!(
        stdout.contains("cluster_name = \"from-flag\"  # flag --cluster-name"),
        "{stdout}"
    );
}

#[test]
fn status_of_an_absent_cluster_fails_with_a_hint() {
    #[allow(clippy::disallowed_methods)]
    let output = Command::new(pilot_bin())
        .args(["status", "--endpoints", "http://127.0.9.250:2379"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no member answered at http://127.0.9.250:2379; is the cluster running?"),
        "{stderr}"
    );
}
