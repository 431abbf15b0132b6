//! DescribeUserScramCredentials (API 50) and AlterUserScramCredentials (API 51, KIP-554), as
//! Kafka's AdminClient calls them: the users and the mechanisms and iteration counts they have
//! credentials for (never keys), and upserts (the client sends the salt and the salted
//! password, never the password) and deletions per user and mechanism.
//!
//! A single node writes `credentials.json` (off the executor) before answering; in cluster
//! mode the cluster agent writes `/config/users/<user>` and a change notification, so every
//! broker reloads the user. Either way the new snapshot is live for new authentications on
//! every shard of this broker when the answer goes out.
//!
//! Authorization (Kafka wants DESCRIBE, resp. ALTER, on the CLUSTER resource) is checked by
//! the dispatcher before these run; nothing here looks at who asks.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::codes;
use crate::security::credentials::{AlterError, CredentialChange, UserCredentials};
use crate::security::sasl::UNSUPPORTED_SASL_MECHANISM;
use crate::security::scram::{Mechanism, ScramCredential, ITERATIONS_MAX, ITERATIONS_MIN};
use crate::storage::blocking;

use super::shard::Shard;

/// Users one request may name at most (each becomes one write): a bound on the work and the
/// answer a single request makes.
pub const USERS_PER_REQUEST_MAX: usize = 1000;

/// Answers DescribeUserScramCredentials from this shard's snapshot: every user with
/// credentials when the request names none. `allowed`: the principal may DESCRIBE the
/// cluster (else CLUSTER_AUTHORIZATION_FAILED, as Kafka answers).
pub fn describe(
    shard: &Shard,
    body: &DescribeUserScramCredentialsRequest,
    allowed: bool,
) -> DescribeUserScramCredentialsResponse {
    if !allowed {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(codes::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(StrBytes::from_static_str(
                "DESCRIBE on the cluster is needed",
            )));
    }
    let snapshot = shard.credentials.current();
    let info = |creds: &UserCredentials| -> Vec<CredentialInfo> {
        creds
            .values()
            .map(|c| {
                CredentialInfo::default()
                    .with_mechanism(c.mechanism.kafka_type())
                    .with_iterations(c.iterations as i32)
            })
            .collect()
    };
    let results = match body.users.as_deref() {
        None | Some([]) => snapshot
            .users()
            .map(|(user, creds)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user.to_owned()))
                    .with_credential_infos(info(creds))
            })
            .collect(),
        Some(users) => {
            let mut seen = BTreeMap::<&str, usize>::new();
            for user in users {
                *seen.entry(user.name.as_str()).or_default() += 1;
            }
            users
                .iter()
                .map(|user| {
                    let name = user.name.as_str();
                    let result =
                        DescribeUserScramCredentialsResult::default().with_user(user.name.clone());
                    if seen[name] > 1 {
                        return error(
                            result,
                            codes::DUPLICATE_RESOURCE,
                            "Cannot describe SCRAM credentials for the same user twice in a \
                             single request",
                        );
                    }
                    match snapshot.user(name) {
                        Some(creds) => result.with_credential_infos(info(creds)),
                        None => error(
                            result,
                            codes::RESOURCE_NOT_FOUND,
                            "Attempt to describe a user credential that does not exist",
                        ),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

fn error(
    result: DescribeUserScramCredentialsResult,
    code: i16,
    message: &str,
) -> DescribeUserScramCredentialsResult {
    result
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message.to_owned())))
}

/// The changes a request asks for one user, or why they are refused (code, message).
type UserChanges = Result<Vec<CredentialChange>, (i16, String)>;

/// Checks a request and groups its changes by user, users in the order they first appear.
/// A user with any bad change gets no change at all (as Kafka: per user, all or nothing).
pub fn changes_by_user(body: &AlterUserScramCredentialsRequest) -> Vec<(String, UserChanges)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_user: BTreeMap<String, UserChanges> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i8)> = BTreeSet::new();
    let deletions = body
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism, None));
    let upsertions = body
        .upsertions
        .iter()
        .map(|u| (u.name.as_str(), u.mechanism, Some(u)));
    for (name, mechanism_type, upsertion) in deletions.chain(upsertions) {
        let entry = by_user.entry(name.to_owned()).or_insert_with(|| {
            order.push(name.to_owned());
            Ok(Vec::new())
        });
        let Ok(changes) = entry else { continue };
        let refused = |code: i16, message: &str| Err((code, message.to_owned()));
        let change = if name.is_empty() {
            refused(codes::UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
        } else if !seen.insert((name.to_owned(), mechanism_type)) {
            refused(
                codes::DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            )
        } else {
            match (Mechanism::from_kafka_type(mechanism_type), upsertion) {
                (None, _) => refused(UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"),
                (Some(m), None) => Ok(CredentialChange::Delete(m)),
                (Some(m), Some(u)) => upsert(m, u.iterations, &u.salt, &u.salted_password),
            }
        };
        match change {
            Ok(change) => changes.push(change),
            Err(refusal) => *entry = Err(refusal),
        }
    }
    order
        .into_iter()
        .map(|user| {
            let changes = by_user
                .remove(&user)
                .expect("every user in order has changes");
            (user, changes)
        })
        .collect()
}

fn upsert(
    mechanism: Mechanism,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<CredentialChange, (i16, String)> {
    let refuse = |message: String| Err((codes::UNACCEPTABLE_CREDENTIAL, message));
    if iterations < ITERATIONS_MIN as i32 {
        return refuse(format!(
            "Too few iterations: {mechanism} needs at least {ITERATIONS_MIN}"
        ));
    }
    if iterations > ITERATIONS_MAX as i32 {
        return refuse(format!(
            "Too many iterations: {mechanism} allows at most {ITERATIONS_MAX}"
        ));
    }
    if salt.is_empty() {
        return refuse("The salt must not be empty".into());
    }
    if salted_password.len() != mechanism.key_bytes() {
        return refuse(format!(
            "A salted password of {mechanism} is {} bytes",
            mechanism.key_bytes()
        ));
    }
    Ok(CredentialChange::Upsert(
        ScramCredential::from_salted_password(mechanism, salted_password, salt, iterations as u32),
    ))
}

/// Answers AlterUserScramCredentials: one result per user named, in the order named.
/// `allowed`: the principal may ALTER the cluster (else every user is refused with
/// CLUSTER_AUTHORIZATION_FAILED and nothing changes).
pub async fn alter(
    shard: &Shard,
    body: &AlterUserScramCredentialsRequest,
    allowed: bool,
) -> AlterUserScramCredentialsResponse {
    let mut results = Vec::new();
    for (at, (user, changes)) in changes_by_user(body).into_iter().enumerate() {
        let outcome = match changes {
            _ if !allowed => Err((
                codes::CLUSTER_AUTHORIZATION_FAILED,
                "ALTER on the cluster is needed".to_string(),
            )),
            _ if at >= USERS_PER_REQUEST_MAX => Err((
                codes::INVALID_REQUEST,
                format!("at most {USERS_PER_REQUEST_MAX} users per request"),
            )),
            Err(refusal) => Err(refusal),
            Ok(changes) => apply(shard, &user, changes).await.map_err(|err| {
                let code = match err {
                    AlterError::NotFound(_) => codes::RESOURCE_NOT_FOUND,
                    AlterError::Storage(_) => codes::UNKNOWN_SERVER_ERROR,
                };
                (code, err.to_string())
            }),
        };
        let result = AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.clone()));
        results.push(match outcome {
            Ok(()) => {
                tracing::info!("shard {}: SCRAM credentials of {user:?} altered", shard.id);
                result
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Makes one user's changes durable and live: the file of a single node, or the coordinator.
async fn apply(
    shard: &Shard,
    user: &str,
    changes: Vec<CredentialChange>,
) -> Result<(), AlterError> {
    let live = shard.credentials.live().clone();
    if live.is_file_backed() {
        let user = user.to_owned();
        // A file write and fsync: off the executor.
        return blocking::run(move || live.alter_file(&user, &changes)).await;
    }
    let cluster = shard
        .cluster
        .as_ref()
        .ok_or_else(|| AlterError::Storage("no credential store".into()))?;
    let (reply, answer) = async_channel::bounded(1);
    cluster
        .commands
        .send(crate::cluster::Command::AlterUserScram {
            user: user.to_owned(),
            changes,
            reply,
        })
        .await
        .map_err(|_| AlterError::Storage("the cluster agent stopped".into()))?;
    answer
        .recv()
        .await
        .map_err(|_| AlterError::Storage("the cluster agent stopped".into()))?
}

#[cfg(test)]
mod tests {
    //! Proves a request's changes are checked and grouped per user as Kafka does.
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };

    fn upsertion(
        name: &str,
        mechanism: i8,
        iterations: i32,
        key_bytes: usize,
    ) -> ScramCredentialUpsertion {
        ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_mechanism(mechanism)
            .with_iterations(iterations)
            .with_salt(Bytes::from_static(b"salt"))
            .with_salted_password(Bytes::from(vec![7u8; key_bytes]))
    }

    fn deletion(name: &str, mechanism: i8) -> ScramCredentialDeletion {
        ScramCredentialDeletion::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_mechanism(mechanism)
    }

    #[test]
    fn bad_changes_refuse_their_user_only() {
        let body = AlterUserScramCredentialsRequest::default()
            .with_deletions(vec![deletion("bob", 1), deletion("eve", 9)])
            .with_upsertions(vec![
                upsertion("alice", 2, 4096, 64),
                upsertion("bob", 1, 4096, 32),
                upsertion("carl", 1, 100, 32),
                upsertion("dora", 2, 4096, 32),
                upsertion("", 2, 4096, 64),
            ]);
        let got: Vec<(String, Result<usize, i16>)> = changes_by_user(&body)
            .into_iter()
            .map(|(user, changes)| (user, changes.map(|c| c.len()).map_err(|e| e.0)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("bob".to_string(), Err(codes::DUPLICATE_RESOURCE)),
                ("eve".to_string(), Err(UNSUPPORTED_SASL_MECHANISM)),
                ("alice".to_string(), Ok(1)),
                ("carl".to_string(), Err(codes::UNACCEPTABLE_CREDENTIAL)),
                ("dora".to_string(), Err(codes::UNACCEPTABLE_CREDENTIAL)),
                (String::new(), Err(codes::UNACCEPTABLE_CREDENTIAL)),
            ]
        );
    }

    #[test]
    fn an_upsertion_becomes_the_credential_of_its_salted_password() {
        let salt = b"NaCl";
        let password = b"pencil";
        let expected = ScramCredential::derive(Mechanism::Sha256, password, salt, 4096);
        let salted = Mechanism::Sha256.salted_password(password, salt, 4096);
        let body = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            ScramCredentialUpsertion::default()
                .with_name(StrBytes::from_static_str("u"))
                .with_mechanism(1)
                .with_iterations(4096)
                .with_salt(Bytes::from_static(salt))
                .with_salted_password(Bytes::from(salted)),
        ]);
        let (_, changes) = changes_by_user(&body).pop().unwrap();
        match changes.unwrap().as_slice() {
            [CredentialChange::Upsert(c)] => assert_eq!(c, &expected),
            other => panic!("{other:?}"),
        }
    }
}
