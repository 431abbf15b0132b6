//! Proves `broker tuning probe` as an operator runs it: it measures the data directory's disk
//! within its time budget, writes a profile that `broker serve` accepts (the same parser),
//! records the host it probed, leaves nothing behind in the data directory, and refuses a data
//! directory it cannot write with a message.

use std::process::Command;

#[test]
fn probe_writes_a_profile_that_loads_and_leaves_the_data_dir_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("probed.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["tuning", "probe", "--seconds", "5", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let profile = tuning::Profile::load(&out).unwrap();
    assert!(!profile.shard_cores().is_empty());
    let probed = profile.probed_host.as_ref().expect("[probed_host] written");
    let here = tuning::host::topology();
    assert_eq!(probed.online_cpus, here.online_cpus);
    let device = tuning::host::block_device(&data);
    assert!(probed.differences(&here, device.as_ref()).is_empty());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("x depth 16:"), "{text}");
    assert!(text.contains("fdatasync: p50"), "{text}");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "scratch files removed"
    );

    // A data directory that cannot be created: an error naming it, no profile.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let out2 = dir.path().join("never.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["tuning", "probe", "--seconds", "5", "--data-dir"])
        .arg(blocked.join("data"))
        .arg("--out")
        .arg(&out2)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("file/data"));
    assert!(!out2.exists());
}
