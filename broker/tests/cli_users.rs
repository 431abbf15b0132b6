//! Proves `broker users add|list|delete` keeps SCRAM credentials in the data directory as
//! an operator uses it: the password comes from a file, `list` shows users, mechanisms and
//! iterations but never a key or the password, bad input is refused with a message and a
//! failing exit status, and `delete` removes what `add` wrote.

use std::path::Path;
use std::process::{Command, Output};

fn broker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .output()
        .expect("run broker")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn users_add_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let data_dir = path(&data);

    for (user, mechanism) in [("admin", "SCRAM-SHA-512"), ("alice", "SCRAM-SHA-256")] {
        let out = broker(&[
            "users",
            "add",
            user,
            "--mechanism",
            mechanism,
            "--password-file",
            path(&pw),
            "--data-dir",
            data_dir,
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = broker(&["users", "list", "--data-dir", data_dir]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "admin SCRAM-SHA-512 iterations=4096\nalice SCRAM-SHA-256 iterations=4096\n"
    );
    let stored = std::fs::read_to_string(data.join("credentials.json")).unwrap();
    assert!(!stored.contains("correct horse"));

    // Refused: an unknown mechanism, too few iterations, an empty password.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let add_bob = |mechanism: &str, password_file: &Path, iterations: &str| {
        broker(&[
            "users",
            "add",
            "bob",
            "--mechanism",
            mechanism,
            "--password-file",
            path(password_file),
            "--iterations",
            iterations,
            "--data-dir",
            data_dir,
        ])
    };
    for out in [
        add_bob("PLAIN", &pw, "4096"),
        add_bob("SCRAM-SHA-256", &pw, "100"),
        add_bob("SCRAM-SHA-256", &empty, "4096"),
    ] {
        assert!(!out.status.success(), "accepted: {}", text(&out));
        assert!(text(&out).contains("error"), "{}", text(&out));
    }

    let out = broker(&["users", "delete", "alice", "--data-dir", data_dir]);
    assert!(out.status.success(), "{}", text(&out));
    let out = broker(&["users", "delete", "alice", "--data-dir", data_dir]);
    assert!(!out.status.success());
    let out = broker(&["users", "list", "--data-dir", data_dir]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "admin SCRAM-SHA-512 iterations=4096\n"
    );
}
