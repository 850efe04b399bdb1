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
        found: BTreeMap::new(),
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
    let DiscoveryConfig::Static { peers, .. } = &config.discovery else {
        panic!("static provider expected");
    };
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
              fix: use "static" or "aws""#]],
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

const AWS: &str =
    "[etcd]\nbin = \"/bin/sh\"\n[discovery]\nprovider = \"aws\"\naws_groups = \"etcd-a, etcd-b\"\n";

#[test]
fn the_aws_provider_takes_the_identity_found_in_instance_metadata() {
    let mut s = sources(AWS, &[], &[]);
    assert_eq!(s.peek("discovery.provider").as_deref(), Some("aws"));
    assert_eq!(s.peek("name"), None);
    for (k, v) in [
        ("name", "i-0abc"),
        ("etcd.peer_url", "http://127.0.60.4:2380"),
        ("etcd.client_url", "http://127.0.60.4:2379"),
        ("discovery.aws_regions", "eu-west-1"),
    ] {
        s.found.insert(k.into(), v.into());
    }
    // What the operator sets wins over what is found.
    let s = Sources {
        flags: BTreeMap::from([(
            "discovery.aws_regions".to_owned(),
            "us-east-1,eu-west-1".to_owned(),
        )]),
        ..s
    };
    let config = Config::load(&s).unwrap();
    assert_eq!(config.name.as_str(), "i-0abc");
    assert_eq!(config.origins["name"], Origin::Found);
    assert_eq!(config.admin.listen.to_string(), "127.0.60.4:2378");
    let DiscoveryConfig::Aws(aws) = &config.discovery else {
        panic!("aws provider expected");
    };
    assert_eq!(aws.groups, ["etcd-a", "etcd-b"]);
    assert_eq!(aws.regions, ["us-east-1", "eu-west-1"]);
    assert_eq!(
        (aws.peer_port, aws.client_port, aws.admin_port),
        (2380, 2379, 2378)
    );
    assert!(
        config
            .show()
            .contains("name = \"i-0abc\"  # instance metadata")
    );
}

#[test]
fn aws_dns_and_lifecycle_mistakes_name_the_key_and_the_fix() {
    let identity = "name = \"i-1\"\n[etcd]\nbin = \"/bin/sh\"\npeer_url = \"http://127.0.60.4:2380\"\nclient_url = \"http://127.0.60.4:2379\"\n";
    let aws = |discovery: &str, rest: &str| {
        Config::load(&sources(
            &format!("{identity}[discovery]\nprovider = \"aws\"\n{discovery}{rest}"),
            &[],
            &[],
        ))
    };
    let err = aws("aws_regions = \"us-east-1\"\n", "").unwrap_err();
    assert_eq!(err.key, "discovery.aws_groups");
    let err = aws("aws_groups = \"g\"\n", "").unwrap_err();
    assert_eq!(err.key, "discovery.aws_regions");
    let ok = "aws_groups = \"g\"\naws_regions = \"us-east-1\"\n";
    let err = aws(&format!("{ok}aws_address = \"elastic\"\n"), "").unwrap_err();
    assert_eq!(err.key, "discovery.aws_address");
    let err = aws(
        ok,
        "[dns]\nprovider = \"route53\"\ndomain = \"etcd.example.com\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "dns.zone_id");
    let err = aws(
        ok,
        "[dns]\nprovider = \"route53\"\nzone_id = \"Z1\"\ndomain = \"etcd\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "dns.domain");
    let err = aws(
        ok,
        "[dns]\nprovider = \"route53\"\nzone_id = \"Z1\"\ndomain = \"etcd.example.com\"\nttl = 0\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "dns.ttl");
    let err = aws(ok, "[dns]\nprovider = \"bind\"\n").unwrap_err();
    assert_eq!(err.key, "dns.provider");
    let config = aws(
        ok,
        "[dns]\nprovider = \"route53\"\nzone_id = \"Z1\"\ndomain = \"Etcd.Example.com.\"\n\
         [lifecycle]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n",
    )
    .unwrap();
    assert_eq!(config.dns.unwrap().zone.domain, "etcd.example.com");
    let lifecycle = config.lifecycle.unwrap();
    assert_eq!(lifecycle.region, "us-east-1");
    assert_eq!(lifecycle.heartbeat_interval, Duration::from_secs(30));
    let err = aws(ok, "[lifecycle]\nqueue_url = \"queue\"\n").unwrap_err();
    assert_eq!(err.key, "lifecycle.queue_url");
    // A hook needs the aws provider.
    let err = Config::load(&sources(
        &format!("{identity}[discovery]\npeers = [{{ name = \"i-1\", peer_url = \"http://127.0.60.4:2380\", client_url = \"http://127.0.60.4:2379\" }}]\n[lifecycle]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n"),
        &[],
        &[],
    ))
    .unwrap_err();
    assert_eq!(err.key, "lifecycle.queue_url");
    assert!(err.fix.contains("provider = \"aws\""), "{err}");
}

#[test]
fn extra_args_may_not_move_the_data_or_choose_the_cluster() {
    for arg in [
        "--wal-dir=/fast/wal",
        "--data-dir=/x",
        "--initial-cluster-state=new",
    ] {
        let file = BASE.replace("[etcd]\n", &format!("[etcd]\nextra_args = [{arg:?}]\n"));
        let err = Config::load(&sources(&file, &[], &[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("etcd.extra_args") && text.contains("set by the pilot"),
            "{text}"
        );
    }
    let file = BASE.replace(
        "[etcd]\n",
        "[etcd]\nextra_args = [\"--quota-backend-bytes=8589934592\"]\n",
    );
    assert!(Config::load(&sources(&file, &[], &[])).is_ok());
}

#[test]
fn data_dir_is_an_absolute_folder_of_its_own_and_cluster_name_a_plain_name() {
    for bad in [
        "/",
        "/var/lib",
        "/etc/",
        "/tmp",
        "relative/dir",
        "/srv/../etc",
        "/usr//",
    ] {
        let err = Config::load(&sources(BASE, &[("ETCD_PILOT_DATA_DIR", bad)], &[]))
            .expect_err(bad)
            .to_string();
        assert!(
            err.contains("data_dir:") && err.contains("fix:"),
            "{bad}: {err}"
        );
    }
    for good in ["/var/lib/etcd-pilot", "/srv/etcd", "/tmp/t/m1"] {
        let config = Config::load(&sources(BASE, &[("ETCD_PILOT_DATA_DIR", good)], &[])).unwrap();
        assert_eq!(config.data_dir, PathBuf::from(good));
    }
    check_error(
        BASE,
        &[("ETCD_PILOT_DATA_DIR", "/")],
        expect_test::expect![[r#"
            invalid configuration: data_dir: / is a system directory (or climbs out with ..): the pilot keeps etcd's data and scratch folders there
              fix: use a folder of its own, such as /var/lib/etcd-pilot"#]],
    );
    for bad in ["../x", "a/b", ".hidden", "a b", ""] {
        let err = Config::load(&sources(BASE, &[("ETCD_PILOT_CLUSTER_NAME", bad)], &[]))
            .expect_err(bad)
            .to_string();
        assert!(err.contains("cluster_name:"), "{bad}: {err}");
    }
}
