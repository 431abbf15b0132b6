//! SCRAM credentials in the coordinator, where Kafka's ZooKeeper mode keeps them:
//! `/config/users/<sanitized user>` holds `{"version":1,"config":{"SCRAM-SHA-512":"salt=..,
//! stored_key=..,server_key=..,iterations=4096"}}` (beside any other user config, such as
//! quotas, which is kept as found), and every change adds a sequential
//! `/config/changes/config_change_<seq>` with `{"version":2,"entity_path":"users/<user>"}`,
//! which each broker watches to reload the user.
//!
//! The calls here are shared by the cluster agent (loading at start, reloading on a
//! notification, AlterUserScramCredentials) and `broker users --coordinator` (offline, as
//! `kafka-configs.sh --zookeeper`).

use std::collections::BTreeMap;

use zookeeper_client as zk;

use super::znodes;
use crate::security::credentials::{
    alter_user, format_credential, parse_credential, AlterError, CredentialChange, UserCredentials,
};
use crate::security::scram::Mechanism;

pub const CONFIG_USERS: &str = "/config/users";
pub const CONFIG_CHANGES: &str = "/config/changes";
/// The prefix of a change notification; the coordinator appends a 10-digit sequence.
pub const CONFIG_CHANGE_PREFIX: &str = "/config/changes/config_change_";
/// How long a change notification stays before brokers delete it (Kafka: 15 minutes).
pub const CONFIG_CHANGE_EXPIRY_MS: i64 = 15 * 60 * 1000;

/// Kafka's `Sanitizer.sanitize`: a user name as a path component, URL-encoded (letters,
/// digits, `.`, `-` and `_` kept; every other UTF-8 byte as `%XX`).
pub fn sanitize(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`sanitize`]; `None` for a name no sanitizer makes.
pub fn desanitize(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = name.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn user_path(user: &str) -> String {
    format!("{CONFIG_USERS}/{}", sanitize(user))
}

/// A change notification's data for `user`.
pub fn encode_change(user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 2,
        "entity_path": format!("users/{}", sanitize(user)),
    }))
    .expect("plain JSON")
}

/// The user a change notification names; `None` for other entities (topics, clients...).
/// Reads Kafka's version 2 (`entity_path`) and version 1 (`entity_type` + `entity_name`).
pub fn decode_change(path: &str, data: &[u8]) -> Result<Option<String>, znodes::ZnodeError> {
    let bad = |reason: &str| znodes::ZnodeError {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let json: serde_json::Value =
        serde_json::from_slice(data).map_err(|_| bad("not JSON Kafka writes here"))?;
    let sanitized = match json.get("version").and_then(|v| v.as_i64()) {
        Some(2) => {
            let entity = json
                .get("entity_path")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad("no entity_path"))?;
            match entity.strip_prefix("users/") {
                // `users/<u>/clients/<c>` is a quota of a client of a user, not credentials.
                Some(user) if !user.contains('/') => user.to_string(),
                _ => return Ok(None),
            }
        }
        Some(1) => {
            if json.get("entity_type").and_then(|v| v.as_str()) != Some("users") {
                return Ok(None);
            }
            json.get("entity_name")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad("no entity_name"))?
                .to_string()
        }
        _ => return Err(bad("unknown version")),
    };
    desanitize(&sanitized)
        .map(Some)
        .ok_or_else(|| bad("entity name is not a sanitized user name"))
}

/// The sequence number of a notification's name (`config_change_0000000042` -> 42).
pub fn change_sequence(child: &str) -> Option<u64> {
    child.strip_prefix("config_change_")?.parse().ok()
}

/// The SCRAM credentials in a user's config map (other keys are not credentials).
pub fn credentials_of(
    path: &str,
    config: &BTreeMap<String, String>,
) -> Result<UserCredentials, znodes::ZnodeError> {
    let mut creds = UserCredentials::new();
    for m in [Mechanism::Sha256, Mechanism::Sha512] {
        if let Some(text) = config.get(m.name()) {
            let c = parse_credential(m, text).map_err(|reason| znodes::ZnodeError {
                path: path.to_string(),
                reason: format!("{m}: {reason}"),
            })?;
            creds.insert(m, c);
        }
    }
    Ok(creds)
}

fn zk_err(path: &str, err: zk::Error) -> String {
    format!("{path}: {err}")
}

/// One user's credentials (empty when the user has none or no znode).
pub async fn read_user(client: &zk::Client, user: &str) -> Result<UserCredentials, String> {
    let path = user_path(user);
    match client.get_data(&path).await {
        Ok((data, _)) => {
            let config = znodes::decode_config(&path, &data).map_err(|e| e.to_string())?;
            credentials_of(&path, &config).map_err(|e| e.to_string())
        }
        Err(zk::Error::NoNode) => Ok(UserCredentials::new()),
        Err(err) => Err(zk_err(&path, err)),
    }
}

/// Every user with credentials. A user znode that does not decode is left out with a
/// warning (one bad entry must not keep every other user from logging in).
pub async fn load_users(client: &zk::Client) -> Result<BTreeMap<String, UserCredentials>, String> {
    let children = match client.list_children(CONFIG_USERS).await {
        Ok(children) => children,
        Err(zk::Error::NoNode) => return Ok(BTreeMap::new()),
        Err(err) => return Err(zk_err(CONFIG_USERS, err)),
    };
    let mut users = BTreeMap::new();
    for child in children {
        let Some(user) = desanitize(&child) else {
            tracing::warn!("{CONFIG_USERS}/{child}: not a sanitized user name; skipped");
            continue;
        };
        match read_user(client, &user).await {
            Ok(creds) if creds.is_empty() => {}
            Ok(creds) => {
                users.insert(user, creds);
            }
            Err(err) => tracing::warn!("{err}; user skipped"),
        }
    }
    Ok(users)
}

/// Applies `changes` to `user` in the coordinator (a versioned write, retried when another
/// writer got there first) and announces them with a change notification. Returns the
/// user's credentials after the change.
pub async fn alter_in_coordinator(
    client: &zk::Client,
    user: &str,
    changes: &[CredentialChange],
    options: &ZnodeOptions,
) -> Result<UserCredentials, AlterError> {
    let path = user_path(user);
    let storage = |err: String| AlterError::Storage(err);
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let (mut config, version) = match client.get_data(&path).await {
            Ok((data, stat)) => (
                znodes::decode_config(&path, &data).map_err(|e| storage(e.to_string()))?,
                Some(stat.version),
            ),
            Err(zk::Error::NoNode) => (BTreeMap::new(), None),
            Err(err) => return Err(storage(zk_err(&path, err))),
        };
        let mut creds = credentials_of(&path, &config).map_err(|e| storage(e.to_string()))?;
        alter_user(&mut creds, changes)?;
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            match creds.get(&m) {
                Some(c) => config.insert(m.name().to_string(), format_credential(c)),
                None => config.remove(m.name()),
            };
        }
        let data = znodes::encode_config(&config);
        let written = match version {
            Some(version) => client.set_data(&path, &data, Some(version)).await.map(drop),
            None => {
                ensure_parent(client, options).await.map_err(storage)?;
                client
                    .create(&path, &data, &options.sensitive())
                    .await
                    .map(drop)
            }
        };
        match written {
            Ok(()) => {}
            Err(zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode) => continue,
            Err(err) => return Err(storage(zk_err(&path, err))),
        }
        let sequential = zk::CreateMode::PersistentSequential.with_acls(options.acls());
        client
            .create(CONFIG_CHANGE_PREFIX, &encode_change(user), &sequential)
            .await
            .map_err(|err| storage(zk_err(CONFIG_CHANGE_PREFIX, err)))?;
        return Ok(creds);
    }
    Err(storage(format!(
        "{path}: changed by other writers {ATTEMPTS} times in a row"
    )))
}

async fn ensure_parent(client: &zk::Client, options: &ZnodeOptions) -> Result<(), String> {
    for path in ["/config", CONFIG_USERS, CONFIG_CHANGES] {
        match client.create(path, b"", &options.persistent_at(path)).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(err) => return Err(zk_err(path, err)),
        }
    }
    Ok(())
}

/// The ACLs of the znodes brokers create (Kafka's `zookeeper.set.acl`): open to all when
/// off; when on, everything to the identities the session proved (`auth`, ZooKeeper's
/// creator) and READ to the world, except sensitive paths (credentials), creator only.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZnodeOptions {
    pub secure: bool,
}

static CREATOR_ALL_WORLD_READ: [zk::Acl; 2] = [
    zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
    zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
];

impl ZnodeOptions {
    /// The ACLs of an ordinary znode.
    pub fn acls(&self) -> zk::Acls<'static> {
        if self.secure {
            zk::Acls::new(&CREATOR_ALL_WORLD_READ)
        } else {
            zk::Acls::anyone_all()
        }
    }

    /// The ACLs of a sensitive znode (Kafka's `isSensitivePath`: `/config/users/...`).
    pub fn sensitive_acls(&self) -> zk::Acls<'static> {
        if self.secure {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    pub fn persistent(&self) -> zk::CreateOptions<'static> {
        zk::CreateMode::Persistent.with_acls(self.acls())
    }

    /// A persistent znode at `path`: sensitive paths (Kafka's `isSensitivePath`, every path
    /// starting with `/config/users`) get [`Self::sensitive_acls`].
    pub fn persistent_at(&self, path: &str) -> zk::CreateOptions<'static> {
        if path.starts_with(CONFIG_USERS) {
            self.sensitive()
        } else {
            self.persistent()
        }
    }

    pub fn ephemeral(&self) -> zk::CreateOptions<'static> {
        zk::CreateMode::Ephemeral.with_acls(self.acls())
    }

    fn sensitive(&self) -> zk::CreateOptions<'static> {
        zk::CreateMode::Persistent.with_acls(self.sensitive_acls())
    }
}

#[cfg(test)]
mod tests {
    //! Proves user names and change notifications are in Kafka's forms.
    use super::*;

    #[test]
    fn sanitized_names_round_trip() {
        assert_eq!(sanitize("alice"), "alice");
        assert_eq!(sanitize("a b/c*d+é"), "a%20b%2Fc%2Ad%2B%C3%A9");
        for name in ["alice", "a b/c*d+é", "%", "x.y-z_0"] {
            assert_eq!(desanitize(&sanitize(name)).as_deref(), Some(name));
        }
        assert_eq!(desanitize("%zz"), None);
        assert_eq!(desanitize("%4"), None);
    }

    #[test]
    fn notifications_name_their_user() {
        let data = encode_change("a/b");
        let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(json["entity_path"], "users/a%2Fb");
        assert_eq!(decode_change("p", &data).unwrap().as_deref(), Some("a/b"));
        // As Kafka writes them: a topic's change, a user's in version 1, a client quota.
        let topic = br#"{"version":2,"entity_path":"topics/t"}"#;
        assert_eq!(decode_change("p", topic).unwrap(), None);
        let v1 = br#"{"version":1,"entity_type":"users","entity_name":"bob"}"#;
        assert_eq!(decode_change("p", v1).unwrap().as_deref(), Some("bob"));
        let quota = br#"{"version":2,"entity_path":"users/bob/clients/c"}"#;
        assert_eq!(decode_change("p", quota).unwrap(), None);
        assert!(decode_change("p", b"{").is_err());
        assert!(decode_change("p", br#"{"version":9}"#).is_err());
        assert_eq!(change_sequence("config_change_0000000042"), Some(42));
        assert_eq!(change_sequence("other"), None);
    }

    #[test]
    fn a_user_config_keeps_what_is_not_a_credential() {
        let c = crate::security::scram::ScramCredential::new_random(Mechanism::Sha512, b"pw", 4096);
        let mut config = BTreeMap::new();
        config.insert("producer_byte_rate".to_string(), "1024".to_string());
        config.insert("SCRAM-SHA-512".to_string(), format_credential(&c));
        let data = znodes::encode_config(&config);
        let text = String::from_utf8(data.clone()).unwrap();
        assert!(text.starts_with(r#"{"version":1,"config":{"#), "{text}");
        let decoded = znodes::decode_config("p", &data).unwrap();
        let creds = credentials_of("p", &decoded).unwrap();
        assert_eq!(creds.get(&Mechanism::Sha512), Some(&c));
        assert_eq!(creds.len(), 1);
        let bad: BTreeMap<String, String> =
            [("SCRAM-SHA-256".to_string(), "salt=x".to_string())].into();
        assert!(credentials_of("p", &bad).is_err());
    }
}
