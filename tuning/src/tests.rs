//! Proves the profile loader: builtin profiles are valid, defaults apply, and every kind of bad
//! input is rejected with an error naming the file and the key.

use super::*;

fn parse(text: &str) -> Result<Profile, ProfileError> {
    Profile::parse(text, Path::new("test.toml"), 4)
}

#[test]
fn builtin_profiles_load() {
    let default = Profile::parse(builtin::DEFAULT, Path::new("default.toml"), 4).unwrap();
    assert_eq!(default.shard_cores().len(), 4);
    assert_eq!(default.storage.flush(), FlushPolicy::Always);
    let dev = Profile::parse(builtin::DEV_2CORE, Path::new("dev.toml"), 2).unwrap();
    assert_eq!(dev.shard_cores().len(), 1);
    assert_eq!(
        dev.shard_cores()[0].cpu,
        1,
        "where this VM's disk interrupts go"
    );
    assert_eq!(dev.bench_cores(), vec![0]);
    assert_eq!(dev.memory_budget_bytes(), 512 << 20);
}

#[test]
fn empty_file_takes_every_default() {
    let profile = parse("").unwrap();
    assert_eq!(profile.cores.len(), 4);
    assert_eq!(profile.storage, StorageLimits::default());
    assert_eq!(profile.storage.segment_bytes, 1 << 30);
    assert_eq!(profile.network.max_request_bytes, 100 << 20);
    assert_eq!(profile.cores[3], CoreConfig::with_defaults(3));
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_file() {
    let err = parse("[storage]\nsegment_byte = 5\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("test.toml:"), "{err}");
    assert!(err.contains("segment_byte"), "{err}");
    let err = parse("[[core]]\ncpu = 0\nbusypoll = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("busypoll"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let err = parse("[network]\nmax_connections = \"many\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_connections"), "{err}");
}

#[test]
fn out_of_range_values_name_the_key_and_reason() {
    let cases = [
        ("[storage]\nsegment_bytes = 10\n", "storage.segment_bytes"),
        (
            "[storage]\nwrite_buffer_bytes = 1000\n",
            "storage.write_buffer_bytes",
        ),
        (
            "[storage]\nflush_policy = \"interval\"\nflush_interval_ms = 0\n",
            "storage.flush_interval_ms",
        ),
        ("[storage]\nretention_ms = 0\n", "storage.retention_ms"),
        (
            "[network]\nmax_connections = 0\n",
            "network.max_connections",
        ),
        ("[[core]]\ncpu = 9\n", "core[cpu=9].cpu"),
        (
            "[[core]]\ncpu = 0\nio_uring_depth = 100\n",
            "core[cpu=0].io_uring_depth",
        ),
        ("[[core]]\ncpu = 0\n[[core]]\ncpu = 0\n", "core[cpu=0].cpu"),
        ("[[core]]\ncpu = 0\nrole = \"bench\"\n", "`core`"),
        ("cores = \"all\"\n[[core]]\ncpu = 0\n", "`cores`"),
    ];
    for (text, key) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            matches!(err, ProfileError::Invalid { .. }),
            "{text:?}: {err}"
        );
        let message = err.to_string();
        assert!(message.starts_with("test.toml: key "), "{message}");
        assert!(
            message.contains(key),
            "{text:?} should name {key}: {message}"
        );
    }
}

#[test]
fn flush_policy_parses_topic_config_forms() {
    assert_eq!(FlushPolicy::parse("always"), Some(FlushPolicy::Always));
    assert_eq!(FlushPolicy::parse("never"), Some(FlushPolicy::Never));
    assert_eq!(
        FlushPolicy::parse("interval_ms=25"),
        Some(FlushPolicy::IntervalMs(25))
    );
    assert_eq!(FlushPolicy::parse("25"), Some(FlushPolicy::IntervalMs(25)));
    assert_eq!(FlushPolicy::parse("0"), None);
    assert_eq!(FlushPolicy::parse("sometimes"), None);
}

#[test]
fn load_reads_a_file_and_names_it_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.toml");
    std::fs::write(&path, "[storage]\nsegment_bytes = 1\n").unwrap();
    let err = Profile::load(&path).unwrap_err().to_string();
    assert!(err.contains("host.toml"), "{err}");
    let missing = Profile::load(&dir.path().join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.toml"), "{missing}");
}

#[test]
fn removed_roles_are_refused_with_the_reason() {
    // `storage.batch_cache_bytes` was once removed and is read again.
    let profile = parse("[storage]\nbatch_cache_bytes = 1024\n").unwrap();
    assert_eq!(profile.storage.batch_cache_bytes, 1024);
    assert_eq!(
        parse("").unwrap().storage.batch_cache_bytes,
        64 << 20,
        "the default"
    );
    for role in ["coordinator", "idle"] {
        let text = format!("[[core]]\ncpu = 0\n[[core]]\ncpu = 1\nrole = \"{role}\"\n");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("test.toml: key `core[cpu=1].role`: role \"")
                && message.contains(role),
            "{message}"
        );
        assert!(message.contains("was removed"), "{message}");
    }
    // The roles that remain still load.
    let profile = parse("[[core]]\ncpu = 0\n[[core]]\ncpu = 1\nrole = \"bench\"\n").unwrap();
    assert_eq!(profile.bench_cores(), vec![1]);
}

#[test]
fn busy_poll_sets_the_spin_before_park() {
    let profile = parse("[core_defaults]\nbusy_poll = true\n").unwrap();
    for core in &profile.cores {
        assert_eq!(core.spin_before_park(), Some(CoreConfig::BUSY_POLL_SPIN));
    }
    let profile = parse("[[core]]\ncpu = 0\n[[core]]\ncpu = 1\nbusy_poll = true\n").unwrap();
    assert_eq!(profile.cores[0].spin_before_park(), None);
    assert_eq!(
        profile.cores[1].spin_before_park(),
        Some(CoreConfig::BUSY_POLL_SPIN)
    );
}

#[test]
fn metrics_per_partition_defaults_on_and_can_be_switched_off() {
    assert!(parse("").unwrap().metrics.per_partition);
    let off = parse("[metrics]\nper_partition = false\n").unwrap();
    assert!(!off.metrics.per_partition);
    let err = parse("[metrics]\nper_partitions = false\n").unwrap_err();
    assert!(err.to_string().contains("per_partitions"), "{err}");
}
