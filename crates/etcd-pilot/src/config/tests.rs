//! Config merging and validation, with sources given as literals.

use std::collections::BTreeMap;

use super::*;

fn sources(file: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Sources {
    Sources {
        file: Some((PathBuf::from("/etc/etcd-pilot.toml"), file.to_owned())),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        flags: flags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

const BASE: &str = r#"
name = "m1"
[etcd]
bin = "/bin/sh"
peer_url = "http://127.0.9.1:2380"
client_url = "http://127.0.9.1:2379"
[discovery]
peers = [
  { name = "m1", peer_url = "http://127.0.9.1:2380", client_url = "http://127.0.9.1:2379" },
  { name = "m2", peer_url = "http://127.0.9.2:2380", client_url = "http://127.0.9.2:2379", admin_url = "http://127.0.9.2:9999" },
]
"#;

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let config = Config::load(&sources(BASE, &[], &[])).unwrap();
    assert_eq!(config.name.as_str(), "m1");
    assert_eq!(config.cluster_name, "etcd");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/etcd-pilot"));
    assert_eq!(config.admin.listen.to_string(), "127.0.9.1:2378");
    assert_eq!(config.timers.observe_interval, Duration::from_secs(1));
    assert_eq!(
        url_string(&config.etcd.listen_peer_url),
        "http://127.0.9.1:2380"
    );
    let DiscoveryConfig::Static { peers, .. } = &config.discovery;
    assert_eq!(peers[0].admin_url, "http://127.0.9.1:2378");
    assert_eq!(peers[1].admin_url, "http://127.0.9.2:9999");
}

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let config = Config::load(&sources(
        BASE,
        &[
            ("ETCD_PILOT_TIMERS_STOP_GRACE", "3s"),
            ("ETCD_PILOT_DATA_DIR", "/env"),
        ],
        &[("data_dir", "/flag")],
    ))
    .unwrap();
    assert_eq!(config.timers.stop_grace, Duration::from_secs(3));
    assert_eq!(config.data_dir, PathBuf::from("/flag"));
    assert_eq!(config.origins["data_dir"], Origin::Flag("data-dir".into()));
    assert_eq!(
        config.origins["timers.stop_grace"],
        Origin::Env("ETCD_PILOT_TIMERS_STOP_GRACE".into())
    );
    assert_eq!(
        config.origins["name"],
        Origin::File("/etc/etcd-pilot.toml".into())
    );
}

#[track_caller]
fn check_error(file: &str, env: &[(&str, &str)], expect: expect_test::Expect) {
    let err = Config::load(&sources(file, env, &[])).expect_err("the config should be refused");
    expect.assert_eq(&err.to_string());
}

#[test]
fn bad_values_name_the_key_and_the_fix() {
    check_error(
        BASE,
        &[("ETCD_PILOT_TIMERS_STOP_GRACE", "soon")],
        expect_test::expect![[r#"
            invalid configuration: timers.stop_grace: "soon" is not a duration: expected number at 0
              fix: write a duration such as "500ms", "2s" or "1m""#]],
    );
    check_error(
        &BASE.replace("name = \"m1\"\n[etcd]", "name = \"m 1\"\n[etcd]"),
        &[],
        expect_test::expect![[r#"
            invalid configuration: name: "m 1" is not a valid member name: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'
              fix: choose a name such as "m1" or the host name"#]],
    );
    check_error(
        &BASE.replace("http://127.0.9.2:2380", "http://127.0.9.1:2380"),
        &[],
        expect_test::expect![[r#"
            invalid configuration: discovery.peers[1]: peer m2 (http://127.0.9.1:2380) repeats the name or peer URL of peer m1 (http://127.0.9.1:2380)
              fix: give every peer its own name and peer URL"#]],
    );
    check_error(
        &BASE.replace(
            "peer_url = \"http://127.0.9.1:2380\"\nclient",
            "peer_url = \"http://127.0.9.7:2380\"\nclient",
        ),
        &[],
        expect_test::expect![[r#"
            invalid configuration: discovery.peers: this node's entry has peer_url http://127.0.9.1:2380, but etcd.peer_url is http://127.0.9.7:2380
              fix: make them the same"#]],
    );
    check_error(
        &BASE.replace("[discovery]", "[discovery]\nprovider = \"consul\""),
        &[],
        expect_test::expect![[r#"
            invalid configuration: discovery.provider: unknown provider "consul"
              fix: use "static""#]],
    );
    check_error(
        &BASE.replace("[etcd]", "[etcd]\nusername = \"root\""),
        &[],
        expect_test::expect![[r#"
            invalid configuration: etcd.password: etcd.username is set without a password
              fix: set etcd.password_file (or etcd.password)"#]],
    );
}

#[test]
fn secrets_never_reach_debug_output() {
    let file = BASE.replace(
        "[etcd]",
        "[etcd]\nusername = \"root\"\npassword = \"hunter2\"",
    );
    let config = Config::load(&sources(&file, &[], &[])).unwrap();
    assert_eq!(
        config.etcd.credentials,
        Some(("root".to_owned(), "hunter2".to_owned()))
    );
    let debug = format!("{config:?}");
    assert!(debug.contains("etcd.password = \"<redacted>\""), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn every_key_has_an_env_var_and_a_flag_derived_from_its_name() {
    assert_eq!(env_var("etcd.peer_url"), "ETCD_PILOT_ETCD_PEER_URL");
    assert_eq!(flag("etcd.peer_url"), "etcd-peer-url");
    let mut raw = RawConfig::default();
    for key in KEYS {
        assert!(
            raw.slot(key.name).is_some(),
            "{} has no slot in RawConfig",
            key.name
        );
    }
}
