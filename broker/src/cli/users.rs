//! `broker users add|delete|list`: SCRAM credentials edited offline, so the first users (the
//! super users of `--super-users`) exist before the brokers start. A single node's are in its
//! data directory ([`crate::security::credentials`]); a cluster's in the coordinator
//! (`--coordinator`, [`crate::cluster::users`]), as `kafka-configs.sh --zookeeper` writes
//! them, which running brokers pick up at once through the change notification. The
//! password is read from a file (never from the command line, where `ps` shows it) and never
//! stored or printed.

use std::path::Path;

use super::store::StoreAt;
use crate::cluster::users as coordinator_users;
use crate::security::credentials::{CredentialChange, CredentialStore, UserCredentials};
use crate::security::scram::{Mechanism, ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};

/// The first line of `file` (a final newline or CR is not part of it); empty is an error.
fn first_line(file: &Path, what: &str) -> Result<Vec<u8>, String> {
    let text = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let line = text.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(format!("{}: the {what} is empty", file.display()));
    }
    Ok(line.to_vec())
}

/// A password file: its first line.
pub fn read_password_file(file: &Path) -> Result<Vec<u8>, String> {
    first_line(file, "password")
}

/// A coordinator digest file: its first line, `user:password`.
pub fn read_digest_file(file: &Path) -> Result<String, String> {
    let line = String::from_utf8(first_line(file, "user:password line")?)
        .map_err(|_| format!("{}: not UTF-8", file.display()))?;
    if !line.contains(':') || line.starts_with(':') {
        return Err(format!(
            "{}: expected `user:password` on the first line",
            file.display()
        ));
    }
    Ok(line)
}

/// Adds (or replaces) `user`'s credential for `mechanism` with the password in
/// `password_file`.
pub fn users_add(
    store: &StoreAt,
    user: &str,
    mechanism: &str,
    password_file: &Path,
    iterations: u32,
) -> Result<(), String> {
    let mechanism = parse_mechanism(mechanism)?;
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(format!(
            "--iterations must be in {ITERATIONS_MIN}..={ITERATIONS_MAX}"
        ));
    }
    crate::security::credentials::validate_user(user)?;
    let password = read_password_file(password_file)?;
    let credential = ScramCredential::new_random(mechanism, &password, iterations);
    match store {
        StoreAt::DataDir(dir) => CredentialStore::open(dir)?.upsert(user, credential)?,
        StoreAt::Coordinator(access) => {
            let changes = [CredentialChange::Upsert(credential)];
            access.run(|client, options| async move {
                coordinator_users::alter_in_coordinator(&client, user, &changes, &options)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })?
        }
    }
    println!("{user}: {mechanism} credential set (iterations={iterations})");
    Ok(())
}

/// Removes `user`'s credential for `mechanism`, or all of them.
pub fn users_delete(store: &StoreAt, user: &str, mechanism: Option<&str>) -> Result<(), String> {
    let mechanism = mechanism.map(parse_mechanism).transpose()?;
    let removed = match store {
        StoreAt::DataDir(dir) => CredentialStore::open(dir)?.delete(user, mechanism)?,
        StoreAt::Coordinator(access) => access.run(|client, options| async move {
            let current = coordinator_users::read_user(&client, user).await?;
            let changes: Vec<CredentialChange> = current
                .keys()
                .filter(|m| mechanism.is_none_or(|wanted| wanted == **m))
                .map(|m| CredentialChange::Delete(*m))
                .collect();
            if changes.is_empty() {
                return Ok(false);
            }
            coordinator_users::alter_in_coordinator(&client, user, &changes, &options)
                .await
                .map(|_| true)
                .map_err(|e| e.to_string())
        })?,
    };
    if !removed {
        return Err(format!("{user}: no such credential"));
    }
    println!("{user}: deleted");
    Ok(())
}

/// Prints `user mechanism iterations=N`, one line per credential.
pub fn users_list(store: &StoreAt) -> Result<(), String> {
    let users: Vec<(String, UserCredentials)> = match store {
        StoreAt::DataDir(dir) => {
            let snapshot = CredentialStore::open(dir)?.snapshot();
            snapshot
                .users()
                .map(|(u, c)| (u.to_owned(), c.clone()))
                .collect()
        }
        StoreAt::Coordinator(access) => access
            .run(|client, _| async move { coordinator_users::load_users(&client).await })?
            .into_iter()
            .collect(),
    };
    for (user, creds) in users {
        for c in creds.values() {
            println!("{user} {} iterations={}", c.mechanism, c.iterations);
        }
    }
    Ok(())
}

fn parse_mechanism(name: &str) -> Result<Mechanism, String> {
    Mechanism::from_name(name)
        .ok_or_else(|| format!("unknown mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}
