//! `broker users add|delete|list`: SCRAM credentials of a single node, edited offline in the
//! data directory ([`crate::security::credentials`]), so the first users (the super users
//! of `--super-users`) exist before the broker starts. The password is read from a file
//! (never from the command line, where `ps` shows it) and never stored or printed.

use std::path::Path;

use crate::security::credentials::CredentialStore;
use crate::security::scram::{Mechanism, ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};

/// Adds (or replaces) `user`'s credential for `mechanism` with the password in
/// `password_file` (its first line; a final newline is not part of the password).
pub fn users_add(
    data_dir: &Path,
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
    let text =
        std::fs::read(password_file).map_err(|e| format!("{}: {e}", password_file.display()))?;
    let password = text.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let password = password.strip_suffix(b"\r").unwrap_or(password);
    if password.is_empty() {
        return Err(format!(
            "{}: the password is empty",
            password_file.display()
        ));
    }
    let mut store = CredentialStore::open(data_dir)?;
    store.upsert(
        user,
        ScramCredential::new_random(mechanism, password, iterations),
    )?;
    println!("{user}: {mechanism} credential set (iterations={iterations})");
    Ok(())
}

/// Removes `user`'s credential for `mechanism`, or all of them.
pub fn users_delete(data_dir: &Path, user: &str, mechanism: Option<&str>) -> Result<(), String> {
    let mechanism = mechanism.map(parse_mechanism).transpose()?;
    let mut store = CredentialStore::open(data_dir)?;
    if !store.delete(user, mechanism)? {
        return Err(format!("{user}: no such credential"));
    }
    println!("{user}: deleted");
    Ok(())
}

/// Prints `user mechanism iterations=N`, one line per credential.
pub fn users_list(data_dir: &Path) -> Result<(), String> {
    let store = CredentialStore::open(data_dir)?;
    for (user, creds) in store.list() {
        for (mechanism, iterations) in creds {
            println!("{user} {mechanism} iterations={iterations}");
        }
    }
    Ok(())
}

fn parse_mechanism(name: &str) -> Result<Mechanism, String> {
    Mechanism::from_name(name)
        .ok_or_else(|| format!("unknown mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512"))
}
