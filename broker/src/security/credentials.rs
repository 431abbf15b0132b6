//! The SCRAM credentials of a single node: `credentials.json` in the data directory (mode
//! 0600, replaced whole with [`crate::data_file::replace`]), one entry per user and
//! mechanism in Kafka's own text form (`salt=..,stored_key=..,server_key=..,iterations=..`,
//! base64), the form Kafka keeps under `/config/users/<user>` in ZooKeeper.
//!
//! No password is stored. `broker users add|delete|list` edits the file while the broker is
//! stopped (so the first super user exists before it starts).
//!
//! A running broker keeps its credentials in [`LiveCredentials`], shared by every shard: an
//! immutable [`CredentialSnapshot`] replaced whole on every change (AlterUserScramCredentials,
//! or in cluster mode a change notification from the coordinator). Each shard caches the
//! snapshot it last loaded in a [`ShardCredentials`] and checks one atomic generation per
//! lookup: a SASL step takes no lock unless the credentials changed since the last one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::scram::{Mechanism, ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};

/// The file's name in the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// One user's credentials, one per mechanism.
pub type UserCredentials = BTreeMap<Mechanism, ScramCredential>;

/// Users, each with a credential per mechanism.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    users: BTreeMap<String, UserCredentials>,
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

    /// The users as they are now, for [`LiveCredentials`].
    pub fn snapshot(&self) -> CredentialSnapshot {
        CredentialSnapshot {
            users: self.users.clone(),
        }
    }

    /// Applies `changes` to `user` (all or none) and writes the file.
    pub fn alter(&mut self, user: &str, changes: &[CredentialChange]) -> Result<(), AlterError> {
        let mut creds = self.users.get(user).cloned().unwrap_or_default();
        alter_user(&mut creds, changes)?;
        if creds.is_empty() {
            self.users.remove(user);
        } else {
            self.users.insert(user.to_owned(), creds);
        }
        self.persist().map_err(AlterError::Storage)
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

/// One change AlterUserScramCredentials asks for.
#[derive(Debug, Clone)]
pub enum CredentialChange {
    Upsert(ScramCredential),
    Delete(Mechanism),
}

impl CredentialChange {
    pub fn mechanism(&self) -> Mechanism {
        match self {
            CredentialChange::Upsert(c) => c.mechanism,
            CredentialChange::Delete(m) => *m,
        }
    }
}

/// Why an alteration of one user failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterError {
    /// A deletion of a credential the user does not have (Kafka's RESOURCE_NOT_FOUND).
    #[error("attempt to delete a {0} credential of a user that has none")]
    NotFound(Mechanism),
    /// The store could not be written (the change did not happen).
    #[error("{0}")]
    Storage(String),
}

/// Applies `changes` to one user's credentials in order; on an error `creds` is unchanged.
pub fn alter_user(
    creds: &mut UserCredentials,
    changes: &[CredentialChange],
) -> Result<(), AlterError> {
    let mut next = creds.clone();
    for change in changes {
        match change {
            CredentialChange::Upsert(c) => {
                next.insert(c.mechanism, c.clone());
            }
            CredentialChange::Delete(m) => {
                if next.remove(m).is_none() {
                    return Err(AlterError::NotFound(*m));
                }
            }
        }
    }
    *creds = next;
    Ok(())
}

/// The credentials of every user at one moment; never changed once made.
#[derive(Debug, Default, Clone)]
pub struct CredentialSnapshot {
    users: BTreeMap<String, UserCredentials>,
}

impl CredentialSnapshot {
    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<&ScramCredential> {
        self.users.get(user)?.get(&mechanism)
    }

    pub fn user(&self, user: &str) -> Option<&UserCredentials> {
        self.users.get(user)
    }

    pub fn users(&self) -> impl Iterator<Item = (&str, &UserCredentials)> {
        self.users.iter().map(|(u, c)| (u.as_str(), c))
    }

    /// This snapshot with `user`'s credentials replaced (removed when empty).
    pub fn with_user(&self, user: &str, creds: UserCredentials) -> CredentialSnapshot {
        let mut users = self.users.clone();
        if creds.is_empty() {
            users.remove(user);
        } else {
            users.insert(user.to_owned(), creds);
        }
        CredentialSnapshot { users }
    }

    /// A snapshot of exactly these users.
    pub fn from_users(users: BTreeMap<String, UserCredentials>) -> CredentialSnapshot {
        CredentialSnapshot { users }
    }
}

/// The credentials of a running broker, shared by its shards (and its cluster agent).
#[derive(Debug)]
pub struct LiveCredentials {
    /// Bumped after every replacement of `current` (under its lock).
    generation: AtomicU64,
    current: Mutex<Arc<CredentialSnapshot>>,
    /// A single node's `credentials.json`; `None` in cluster mode (the coordinator holds
    /// them, written by the cluster agent).
    file: Option<Mutex<CredentialStore>>,
}

impl LiveCredentials {
    /// A single node's credentials, read from and written to its file.
    pub fn from_file(store: CredentialStore) -> LiveCredentials {
        LiveCredentials {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(store.snapshot())),
            file: Some(Mutex::new(store)),
        }
    }

    /// Credentials kept elsewhere (the coordinator): empty until [`Self::replace`].
    pub fn external() -> LiveCredentials {
        LiveCredentials {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(CredentialSnapshot::default())),
            file: None,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot (takes the lock: shards go through [`ShardCredentials`]).
    pub fn load(&self) -> Arc<CredentialSnapshot> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `snapshot` the one new authentications check, on every shard.
    pub fn replace(&self, snapshot: CredentialSnapshot) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether changes are written to a file here (single node) rather than the coordinator.
    pub fn is_file_backed(&self) -> bool {
        self.file.is_some()
    }

    /// Single node: applies `changes` to `user`, writes the file, then publishes the result.
    /// Callers serialize nothing: the file's lock orders concurrent alterations.
    pub fn alter_file(&self, user: &str, changes: &[CredentialChange]) -> Result<(), AlterError> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| AlterError::Storage("credentials are kept by the coordinator".into()))?;
        let mut store = file.lock().unwrap_or_else(|e| e.into_inner());
        store.alter(user, changes)?;
        self.replace(store.snapshot());
        Ok(())
    }
}

/// One shard's handle on [`LiveCredentials`]: the snapshot it loaded last and its generation.
pub struct ShardCredentials {
    live: Arc<LiveCredentials>,
    cached: RefCell<(u64, Arc<CredentialSnapshot>)>,
}

impl ShardCredentials {
    pub fn new(live: Arc<LiveCredentials>) -> ShardCredentials {
        let generation = live.generation();
        let snapshot = live.load();
        ShardCredentials {
            live,
            cached: RefCell::new((generation, snapshot)),
        }
    }

    /// The current snapshot: one atomic load, and the lock only after a change.
    pub fn current(&self) -> Arc<CredentialSnapshot> {
        let generation = self.live.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            // Generation first, then the snapshot: the snapshot is at least that new, and a
            // later change bumps the generation again.
            *cached = (generation, self.live.load());
        }
        cached.1.clone()
    }

    pub fn live(&self) -> &Arc<LiveCredentials> {
        &self.live
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
    let key_bytes = mechanism.key_bytes();
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
    fn a_change_reaches_every_shard_at_its_next_lookup_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(LiveCredentials::from_file(
            CredentialStore::open(dir.path()).unwrap(),
        ));
        let shards = [
            ShardCredentials::new(live.clone()),
            ShardCredentials::new(live.clone()),
        ];
        assert!(shards[0]
            .current()
            .get("carol", Mechanism::Sha512)
            .is_none());
        let carol = ScramCredential::new_random(Mechanism::Sha512, b"pw", ITERATIONS_MIN);
        live.alter_file("carol", &[CredentialChange::Upsert(carol.clone())])
            .unwrap();
        for shard in &shards {
            assert_eq!(
                shard.current().get("carol", Mechanism::Sha512),
                Some(&carol)
            );
        }
        assert_eq!(
            CredentialStore::open(dir.path())
                .unwrap()
                .get("carol", Mechanism::Sha512),
            Some(&carol)
        );
        // All or nothing: a deletion of a missing credential leaves the upsert before it out.
        let other = ScramCredential::new_random(Mechanism::Sha256, b"x", ITERATIONS_MIN);
        assert_eq!(
            live.alter_file(
                "carol",
                &[
                    CredentialChange::Upsert(other),
                    CredentialChange::Delete(Mechanism::Sha256),
                    CredentialChange::Delete(Mechanism::Sha256),
                ],
            ),
            Err(AlterError::NotFound(Mechanism::Sha256))
        );
        assert!(shards[1]
            .current()
            .get("carol", Mechanism::Sha256)
            .is_none());
        live.alter_file("carol", &[CredentialChange::Delete(Mechanism::Sha512)])
            .unwrap();
        assert!(shards[1].current().user("carol").is_none());
        assert!(CredentialStore::open(dir.path())
            .unwrap()
            .list()
            .next()
            .is_none());
    }

    #[test]
    fn a_damaged_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), b"{not json").unwrap();
        let err = CredentialStore::open(dir.path()).unwrap_err();
        assert!(err.contains(CREDENTIALS_FILE), "{err}");
    }
}
