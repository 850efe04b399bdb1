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
    // Every key can be written in the file, in its variable and as its flag, and is read
    // from each (`peek` sees what validation sees).
    for key in KEYS {
        let (section, name) = key.name.split_once('.').unwrap_or(("", key.name));
        let file = if section.is_empty() {
            format!("{name} = \"x\"\n")
        } else {
            format!("[{section}]\n{name} = \"x\"\n")
        };
        let given = sources(&file, &[], &[]);
        assert_eq!(given.peek(key.name).as_deref(), Some("x"), "{}", key.name);
        let given = sources("", &[(&env_var(key.name), "y")], &[]);
        assert_eq!(given.peek(key.name).as_deref(), Some("y"), "{}", key.name);
        let given = sources("", &[], &[(key.name, "z")]);
        assert_eq!(given.peek(key.name).as_deref(), Some("z"), "{}", key.name);
    }
}

#[test]
fn every_default_in_the_key_table_is_valid() {
    // The base config with nothing else set takes every default; one that did not parse
    // would refuse it.
    let config = Config::load(&sources(BASE, &[], &[])).unwrap();
    for key in KEYS {
        if let Some(default) = key.default
            && config.origins[key.name] == Origin::Default
            && let Some(value) = config.values.get(key.name)
        {
            assert_eq!(value, default, "{}", key.name);
        }
    }
    assert_eq!(config.timers.remove_after, Timers::default().remove_after);
    assert_eq!(
        config.timers.plan_policy().remove_after,
        Duration::from_secs(30)
    );
}

#[test]
fn an_unknown_key_names_its_line_and_the_key_it_resembles() {
    check_error(
        &BASE.replace("[etcd]\n", "[etcd]\npeer_ulr = \"x\"\n"),
        &[],
        expect_test::expect![[r#"
            invalid configuration: file /etc/etcd-pilot.toml: unknown field `etcd.peer_ulr` (line 4)
              fix: correct the file (did you mean `etcd.peer_url`?); docs/config.md lists every key"#]],
    );
    for file in [
        format!("{BASE}\n[tls]\n"),
        format!("\"etcd.bin\" = \"/bin/sh\"\n{BASE}"),
    ] {
        let err = Config::load(&sources(&file, &[], &[])).expect_err(&file);
        assert!(err.problem.starts_with("unknown field"), "{err}");
    }
    check_error(
        &format!("{BASE}\n[timers]\nstop_grace = [\"1s\"]\n"),
        &[],
        expect_test::expect![[r#"
            invalid configuration: timers.stop_grace: an array where a string, number or boolean belongs
              fix: write a single value, such as "2s", 3 or true"#]],
    );
}

#[test]
fn aws_endpoint_url_sets_the_s3_endpoint_below_every_source_of_ours() {
    let file = format!("{BASE}\n[backup]\nurl = \"s3://bucket/prefix\"\n");
    let config = Config::load(&sources(
        &file,
        &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")],
        &[],
    ))
    .unwrap();
    let store = config.backup.store.as_ref().unwrap();
    assert_eq!(store.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(matches!(store.url, StoreUrl::S3(_)));
    assert_eq!(
        config.origins["backup.s3_endpoint"],
        Origin::Env("AWS_ENDPOINT_URL".into())
    );
    let config = Config::load(&sources(
        &format!("{file}s3_endpoint = \"http://127.0.0.2:9000\"\n"),
        &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")],
        &[],
    ))
    .unwrap();
    let store = config.backup.store.unwrap();
    assert_eq!(store.s3_endpoint.as_deref(), Some("http://127.0.0.2:9000"));
    let err = Config::load(&sources(
        &format!("{BASE}\n[backup]\nurl = \"ftp://host/x\"\n"),
        &[],
        &[],
    ))
    .unwrap_err();
    assert_eq!(err.key, "backup.url");
    let config = Config::load(&sources(
        &format!("{BASE}\n[backup]\nurl = \"file:///srv/backups\"\n"),
        &[],
        &[],
    ))
    .unwrap();
    assert_eq!(
        config.backup.store.unwrap().url,
        StoreUrl::File {
            url: Url::parse("file:///srv/backups").unwrap(),
            dir: PathBuf::from("/srv/backups"),
        }
    );
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

/// The keys `docs/config.md` writes in its TOML examples (commented out or not).
fn documented_keys() -> std::collections::BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    let mut section = String::new();
    let mut in_toml = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_toml = line == "```toml";
            continue;
        }
        if !in_toml {
            continue;
        }
        let line = line.trim_start_matches('#').trim_start();
        if let Some(rest) = line.strip_prefix('[') {
            section = rest.split(']').next().unwrap_or_default().to_owned();
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            keys.insert(if section.is_empty() {
                name.to_owned()
            } else {
                format!("{section}.{name}")
            });
        }
    }
    keys
}

#[test]
fn docs_config_md_names_every_key_and_no_other() {
    let documented = documented_keys();
    let known: std::collections::BTreeSet<String> = KEYS
        .iter()
        .chain(super::keys::LISTS)
        .map(|k| k.name.to_owned())
        .collect();
    let missing: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/config.md leaves out {missing:?} and names keys that do not exist: {unknown:?}"
    );
}

#[test]
fn maintenance_reads_the_quota_thresholds_and_the_window() {
    let config = Config::load(&sources(BASE, &[], &[])).unwrap();
    assert_eq!(config.maintenance.quota, 2 << 30);
    assert_eq!(config.maintenance.defrag_threshold.percent, 25);
    assert_eq!(config.maintenance.defrag_threshold.min_bytes, 64 << 20);
    assert_eq!(config.maintenance.defrag_window, None);
    for (args, quota) in [
        ("\"--quota-backend-bytes=33554432\"", 33_554_432u64),
        ("\"--quota-backend-bytes\", \"8589934592\"", 8 << 30),
        ("\"--quota-backend-bytes=0\"", 2 << 30),
    ] {
        let file = BASE.replace("[etcd]\n", &format!("[etcd]\nextra_args = [{args}]\n"));
        let config = Config::load(&sources(&file, &[], &[])).unwrap();
        assert_eq!(config.maintenance.quota, quota, "{args}");
    }
    let file = format!(
        "{BASE}[maintenance]\ndefrag_threshold = \"40%\"\ndefrag_min_free = \"1GiB\"\ndefrag_window = \"22:30-02:00\"\n"
    );
    let config = Config::load(&sources(&file, &[], &[])).unwrap();
    assert_eq!(config.maintenance.defrag_threshold.percent, 40);
    assert_eq!(config.maintenance.defrag_threshold.min_bytes, 1 << 30);
    assert_eq!(config.maintenance.defrag_window, Some((22 * 60 + 30, 120)));
    check_error(
        &format!("{BASE}[maintenance]\ndefrag_window = \"25:00-01:00\"\n"),
        &[],
        expect_test::expect![[r#"
            invalid configuration: maintenance.defrag_window: "25:00-01:00" is not a daily range of UTC times
              fix: write e.g. "01:00-05:00" (it may run over midnight: "22:00-02:00"), or "" for any time"#]],
    );
    check_error(
        &format!("{BASE}[maintenance]\ndefrag_threshold = \"0%\"\n"),
        &[],
        expect_test::expect![[r#"
            invalid configuration: maintenance.defrag_threshold: "0%" is not a share from 1% to 100%
              fix: use e.g. "25%""#]],
    );
    check_error(
        &BASE.replace(
            "[etcd]\n",
            "[etcd]\nextra_args = [\"--quota-backend-bytes=lots\"]\n",
        ),
        &[],
        expect_test::expect![[r#"
            invalid configuration: etcd.extra_args: --quota-backend-bytes "lots" is not a number of bytes
              fix: write e.g. --quota-backend-bytes=8589934592"#]],
    );
}
