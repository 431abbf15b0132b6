//! The SCRAM credentials of a single node: `credentials.json` in the data directory (mode
//! 0600, replaced whole with [`crate::data_file::replace`]), one entry per user and
//! mechanism in Kafka's own text form (`salt=..,stored_key=..,server_key=..,iterations=..`,
//! base64), the form Kafka keeps under `/config/users/<user>` in ZooKeeper.
//!
//! No password is stored. `broker users add|delete|list` edits the file while the broker is
//! stopped (so the first super user exists before it starts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::scram::{Mechanism, ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};

/// The file's name in the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// Users, each with a credential per mechanism.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    users: BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>,
}

#[derive(Serialize, Deserialize)]
struct CredentialsFile {
    version: u32,
    /// user -> mechanism name -> Kafka's credential text.
    users: BTreeMap<String, BTreeMap<String, String>>,
}

impl CredentialStore {
    /// Opens the store of `data_dir` (empty when the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<CredentialStore, String> {
        let path = data_dir.join(CREDENTIALS_FILE);
        let mut users = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: CredentialsFile = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if file.version != 1 {
                    return Err(format!(
                        "{}: unknown version {}",
                        path.display(),
                        file.version
                    ));
                }
                for (user, mechanisms) in file.users {
                    let mut creds = BTreeMap::new();
                    for (name, text) in mechanisms {
                        let mechanism = Mechanism::from_name(&name).ok_or_else(|| {
                            format!("{}: user {user}: unknown mechanism {name}", path.display())
                        })?;
                        let cred = parse_credential(mechanism, &text)
                            .map_err(|e| format!("{}: user {user}, {name}: {e}", path.display()))?;
                        creds.insert(mechanism, cred);
                    }
                    users.insert(user, creds);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(CredentialStore { path, users })
    }

    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    /// Every user with the mechanisms and iteration counts it has credentials for.
    pub fn list(&self) -> impl Iterator<Item = (&str, Vec<(Mechanism, u32)>)> {
        self.users.iter().map(|(user, creds)| {
            (
                user.as_str(),
                creds
                    .values()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            )
        })
    }

    /// Sets `user`'s credential for its mechanism and writes the file.
    pub fn upsert(&mut self, user: &str, credential: ScramCredential) -> Result<(), String> {
        validate_user(user)?;
        self.users
            .entry(user.to_owned())
            .or_default()
            .insert(credential.mechanism, credential);
        self.persist()
    }

    /// Removes `user`'s credential for `mechanism` (every mechanism when `None`) and writes
    /// the file; false when there was none.
    pub fn delete(&mut self, user: &str, mechanism: Option<Mechanism>) -> Result<bool, String> {
        let Some(creds) = self.users.get_mut(user) else {
            return Ok(false);
        };
        let removed = match mechanism {
            Some(m) => creds.remove(&m).is_some(),
            None => {
                let had = !creds.is_empty();
                creds.clear();
                had
            }
        };
        if creds.is_empty() {
            self.users.remove(user);
        }
        if removed {
            self.persist()?;
        }
        Ok(removed)
    }

    fn persist(&self) -> Result<(), String> {
        let file = CredentialsFile {
            version: 1,
            users: self
                .users
                .iter()
                .map(|(user, creds)| {
                    let texts = creds
                        .values()
                        .map(|c| (c.mechanism.name().to_owned(), format_credential(c)))
                        .collect();
                    (user.clone(), texts)
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        crate::data_file::replace(&self.path, &bytes, 0o600)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// A user name Kafka accepts: not empty, at most 255 bytes, no control characters.
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 255 || user.chars().any(char::is_control) {
        return Err(format!(
            "invalid user name {user:?}: 1 to 255 bytes, no control characters"
        ));
    }
    Ok(())
}

/// Kafka's text form of a credential.
pub fn format_credential(c: &ScramCredential) -> String {
    format!(
        "salt={},stored_key={},server_key={},iterations={}",
        BASE64.encode(&c.salt),
        BASE64.encode(&c.stored_key),
        BASE64.encode(&c.server_key),
        c.iterations
    )
}

/// Parses Kafka's text form of a credential for `mechanism`.
pub fn parse_credential(mechanism: Mechanism, text: &str) -> Result<ScramCredential, String> {
    let (mut salt, mut stored_key, mut server_key, mut iterations) = (None, None, None, None);
    for field in text.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("`{field}` is not key=value"))?;
        let bytes = || {
            BASE64
                .decode(value)
                .map_err(|_| format!("{key} is not base64"))
        };
        match key {
            "salt" => salt = Some(bytes()?),
            "stored_key" => stored_key = Some(bytes()?),
            "server_key" => server_key = Some(bytes()?),
            "iterations" => {
                iterations = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| "iterations is not a number".to_string())?,
                )
            }
            _ => return Err(format!("unknown field {key}")),
        }
    }
    let iterations = iterations.ok_or("no iterations")?;
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(format!(
            "iterations {iterations} outside {ITERATIONS_MIN}..={ITERATIONS_MAX}"
        ));
    }
    let key_bytes = match mechanism {
        Mechanism::Sha256 => 32,
        Mechanism::Sha512 => 64,
    };
    let stored_key = stored_key.ok_or("no stored_key")?;
    let server_key = server_key.ok_or("no server_key")?;
    if stored_key.len() != key_bytes || server_key.len() != key_bytes {
        return Err(format!("keys of {mechanism} are {key_bytes} bytes"));
    }
    Ok(ScramCredential {
        mechanism,
        salt: salt.ok_or("no salt")?,
        iterations,
        stored_key,
        server_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_survive_reopen_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CredentialStore::open(dir.path()).unwrap();
        let alice = ScramCredential::new_random(Mechanism::Sha512, b"pw", ITERATIONS_MIN);
        store.upsert("alice", alice.clone()).unwrap();
        store
            .upsert(
                "bob",
                ScramCredential::new_random(Mechanism::Sha256, b"x", 8192),
            )
            .unwrap();
        let reopened = CredentialStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("alice", Mechanism::Sha512), Some(&alice));
        assert!(reopened.get("alice", Mechanism::Sha256).is_none());
        let listed: Vec<_> = reopened.list().collect();
        assert_eq!(
            listed,
            vec![
                ("alice", vec![(Mechanism::Sha512, ITERATIONS_MIN)]),
                ("bob", vec![(Mechanism::Sha256, 8192)])
            ]
        );
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).unwrap();
        assert!(!text.contains("\"pw\""));

        let mut store = reopened;
        assert!(store.delete("alice", None).unwrap());
        assert!(!store.delete("alice", None).unwrap());
        assert!(CredentialStore::open(dir.path())
            .unwrap()
            .get("alice", Mechanism::Sha512)
            .is_none());
    }

    #[test]
    fn kafka_text_form_round_trips_and_bad_forms_are_errors() {
        let c = ScramCredential::new_random(Mechanism::Sha256, b"pw", ITERATIONS_MIN);
        assert_eq!(
            parse_credential(Mechanism::Sha256, &format_credential(&c)).unwrap(),
            c
        );
        // The wrong key length for the mechanism.
        assert!(parse_credential(Mechanism::Sha512, &format_credential(&c)).is_err());
        for bad in [
            "",
            "salt=AAAA",
            "salt=AAAA,stored_key=!!,server_key=AAAA,iterations=4096",
            "salt=AAAA,stored_key=AAAA,server_key=AAAA,iterations=10",
            "salt=AAAA,other=1",
        ] {
            assert!(parse_credential(Mechanism::Sha256, bad).is_err(), "{bad}");
        }
        assert!(validate_user("").is_err());
        assert!(validate_user("a\nb").is_err());
    }

    #[test]
    fn a_damaged_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), b"{not json").unwrap();
        let err = CredentialStore::open(dir.path()).unwrap_err();
        assert!(err.contains(CREDENTIALS_FILE), "{err}");
    }
}
