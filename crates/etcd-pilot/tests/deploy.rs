//! What the pilot ships for deployment: the CloudFormation template (`etcd-pilot aws
//! template`) passes `cfn-lint` and the pilot config inside it is valid; the systemd unit
//! (`etcd-pilot systemd-unit`) passes `systemd-analyze verify`; on AWS without instance
//! metadata the pilot says what is missing instead of hanging.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, clippy::print_stderr)] // Test helpers may unwrap, spawn and report skips.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::pilot_bin;

fn pilot(args: &[&str]) -> String {
    let output = Command::new(pilot_bin()).args(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_cloudformation_template_passes_cfn_lint() {
    let Some(lint) = common::required(Path::new("/opt/etcd-pilot-venv/bin/cfn-lint")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd-pilot.yaml");
    std::fs::write(&path, pilot(&["aws", "template"])).unwrap();
    // Informational checks too (stateful resources say what happens on delete).
    let output = Command::new(lint)
        .args(["--include-checks", "I", "--"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The pilot config the template's instances write, with the stack's values filled in.
fn template_config(dns: bool) -> String {
    let template = pilot(&["aws", "template"]);
    let start = template.find("<<'CONFIG'\n").unwrap() + "<<'CONFIG'\n".len();
    let end = start + template[start..].find("\n              CONFIG\n").unwrap();
    let section = if dns {
        "\n[dns]\nprovider = \"route53\"\nzone_id = \"Z123\"\ndomain = \"etcd.example.com\"\n"
    } else {
        ""
    };
    template[start..end]
        .lines()
        .map(|l| l.strip_prefix("              ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("${AWS::StackName}", "prod")
        .replace("${BackupBucket}", "prod-backups")
        .replace(
            "${LifecycleQueue}",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/prod-lifecycle",
        )
        .replace("${DnsSection}", section)
}

#[test]
fn the_template_writes_a_valid_pilot_config() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = dir.path().join("etcd");
    std::fs::write(&etcd, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&etcd, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dns in [false, true] {
        let path = dir.path().join("pilot.toml");
        std::fs::write(&path, template_config(dns)).unwrap();
        // What the instance metadata would fill in, given as flags (no metadata is asked).
        let output = Command::new(pilot_bin())
            .args(["config", "show", "--config"])
            .arg(&path)
            .args([
                "--name=i-0123456789abcdef0",
                "--etcd-peer-url=http://127.0.64.5:2380",
                "--etcd-client-url=http://127.0.64.5:2379",
                "--discovery-aws-regions=eu-west-1",
                "--etcd-bin",
            ])
            .arg(&etcd)
            .env_clear()
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{shown}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            shown.contains("discovery.aws_groups = \"prod-etcd\""),
            "{shown}"
        );
        assert!(
            shown.contains("backup.url = \"s3://prod-backups/etcd\""),
            "{shown}"
        );
        assert!(shown.contains("admin.listen = \"0.0.0.0:2378\""), "{shown}");
        assert_eq!(shown.contains("dns.zone_id = \"Z123\""), dns, "{shown}");
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = common::required(Path::new("/usr/bin/systemd-analyze")) else {
        return;
    };
    let unit = pilot(&["systemd-unit"]);
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/etcd-pilot agent --config /etc/etcd-pilot/pilot.toml"
        )
    );
    // The pilot stops etcd itself, after moving leadership: only it gets the SIGTERM.
    assert!(unit.contains("KillMode=mixed"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd-pilot.service");
    let bin = pilot_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/etcd-pilot", bin.to_str().unwrap()),
    )
    .unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn on_aws_without_instance_metadata_the_pilot_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pilot.toml");
    std::fs::write(
        &path,
        "[etcd]\nbin = \"/bin/sh\"\n[discovery]\nprovider = \"aws\"\naws_groups = \"etcd\"\n",
    )
    .unwrap();
    let output = Command::new(pilot_bin())
        .args(["agent", "--config"])
        .arg(&path)
        .env_clear()
        // Nothing listens there: the metadata service does not answer.
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("the instance metadata does not answer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("set name, etcd.peer_url, etcd.client_url and discovery.aws_regions"),
        "{stderr}"
    );
}
