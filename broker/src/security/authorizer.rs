//! Kafka's ACL model and its decisions, sans-IO: ACL bindings (resource pattern + principal,
//! host, operation, allow/deny), filters as DescribeAcls/DeleteAcls carry them, and
//! [`Authorizer::authorize`] with Kafka's rules:
//!
//! * a super user (`--super-users User:admin;User:ops`) may do everything;
//! * the ACLs that apply to a resource are its literal ones, the literal `*` ones of its type,
//!   and the prefixed ones whose prefix starts its name;
//! * when none apply, the answer is `allow.everyone.if.no.acl.found` (false by default);
//! * a matching DENY wins over any ALLOW;
//! * principal `User:*` and host `*` match everyone; operation ALL matches every operation;
//!   an ALLOW of READ, WRITE, DELETE or ALTER also allows DESCRIBE, and an ALLOW of
//!   ALTER_CONFIGS also allows DESCRIBE_CONFIGS.
//!
//! The numeric codes are the Kafka protocol's (CreateAcls, DescribeAcls, DeleteAcls).

use serde::{Deserialize, Serialize};

/// `ResourceType`.
pub mod resource_type {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;
}

/// `PatternType`.
pub mod pattern_type {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// `AclOperation`.
pub mod operation {
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
}

/// `AclPermissionType`.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// The one name a cluster resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard resource name, principal and host.
pub const WILDCARD: &str = "*";
/// The wildcard principal.
pub const ANY_USER: &str = "User:*";

/// One ACL: who may (or may not) do what, from where, to which resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// A filter of DescribeAcls/DeleteAcls: `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    /// ANY or a concrete type.
    pub resource_type: i8,
    pub resource_name: Option<String>,
    /// ANY, MATCH, LITERAL or PREFIXED.
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    /// ANY or a concrete operation.
    pub operation: i8,
    /// ANY, ALLOW or DENY.
    pub permission: i8,
}

/// Why CreateAcls refuses a binding (INVALID_REQUEST with this message, as Kafka answers).
pub fn validate(acl: &AclBinding) -> Result<(), String> {
    use resource_type as rt;
    if !matches!(
        acl.resource_type,
        rt::TOPIC
            | rt::GROUP
            | rt::CLUSTER
            | rt::TRANSACTIONAL_ID
            | rt::DELEGATION_TOKEN
            | rt::USER
    ) {
        return Err(format!("invalid resource type {}", acl.resource_type));
    }
    if !matches!(
        acl.pattern_type,
        pattern_type::LITERAL | pattern_type::PREFIXED
    ) {
        return Err(format!(
            "invalid pattern type {} (LITERAL or PREFIXED)",
            acl.pattern_type
        ));
    }
    if acl.resource_name.is_empty() {
        return Err("empty resource name".into());
    }
    if acl.resource_type == rt::CLUSTER && acl.resource_name != CLUSTER_NAME {
        return Err(format!("the cluster resource is named {CLUSTER_NAME}"));
    }
    if acl.pattern_type == pattern_type::PREFIXED && acl.resource_name == WILDCARD {
        return Err("a prefixed pattern cannot be `*`".into());
    }
    if !(operation::ALL..=operation::DESCRIBE_TOKENS).contains(&acl.operation) {
        return Err(format!("invalid operation {}", acl.operation));
    }
    if !matches!(acl.permission, permission::ALLOW | permission::DENY) {
        return Err(format!("invalid permission type {}", acl.permission));
    }
    match acl.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => return Err(format!("invalid principal {:?} (Type:name)", acl.principal)),
    }
    if acl.host.is_empty() {
        return Err("empty host (use *)".into());
    }
    Ok(())
}

impl AclFilter {
    /// Whether `acl` is one this filter selects.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let type_ok =
            self.resource_type == resource_type::ANY || self.resource_type == acl.resource_type;
        let pattern_ok = match (self.pattern_type, &self.resource_name) {
            (pattern_type::ANY, None) => true,
            (pattern_type::ANY, Some(name)) => *name == acl.resource_name,
            (pattern_type::MATCH, None) => true,
            // The ACLs that would apply to a resource of this name.
            (pattern_type::MATCH, Some(name)) => applies_to(acl, name),
            (p, name) => {
                p == acl.pattern_type && name.as_ref().is_none_or(|n| *n == acl.resource_name)
            }
        };
        type_ok
            && pattern_ok
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == operation::ANY || self.operation == acl.operation)
            && (self.permission == permission::ANY || self.permission == acl.permission)
    }
}

/// Whether `acl`'s pattern covers a resource named `name` (of its type).
fn applies_to(acl: &AclBinding, name: &str) -> bool {
    match acl.pattern_type {
        pattern_type::LITERAL => acl.resource_name == name || acl.resource_name == WILDCARD,
        pattern_type::PREFIXED => name.starts_with(acl.resource_name.as_str()),
        _ => false,
    }
}

/// Whether an ACL's `granted` operation covers `wanted` (ALL, equality, implied DESCRIBE).
fn covers(granted: i8, wanted: i8, permission_type: i8) -> bool {
    use operation as op;
    if granted == op::ALL || granted == wanted {
        return true;
    }
    // Implied operations come only from ALLOW: a DENY of READ does not deny DESCRIBE.
    permission_type == permission::ALLOW
        && match wanted {
            op::DESCRIBE => matches!(granted, op::READ | op::WRITE | op::DELETE | op::ALTER),
            op::DESCRIBE_CONFIGS => granted == op::ALTER_CONFIGS,
            _ => false,
        }
}

/// The settings and ACLs authorization decides with.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// `super.users`: principals (`User:name`) that pass every check.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_if_no_acl: bool,
    acls: Vec<AclBinding>,
}

impl Authorizer {
    pub fn new(super_users: Vec<String>, allow_if_no_acl: bool, acls: Vec<AclBinding>) -> Self {
        Authorizer {
            super_users,
            allow_if_no_acl,
            acls,
        }
    }

    pub fn acls(&self) -> &[AclBinding] {
        &self.acls
    }

    /// Adds `acl` (already [`validate`]d) unless it is there; true when added.
    pub fn add(&mut self, acl: AclBinding) -> bool {
        if self.acls.contains(&acl) {
            return false;
        }
        self.acls.push(acl);
        true
    }

    /// Removes and returns the ACLs `filter` selects.
    pub fn remove_matching(&mut self, filter: &AclFilter) -> Vec<AclBinding> {
        let (gone, kept) = std::mem::take(&mut self.acls)
            .into_iter()
            .partition(|a| filter.matches(a));
        self.acls = kept;
        gone
    }

    /// May `principal` connected from `host` do `op` on the resource (`kind`, `name`)?
    pub fn authorize(&self, principal: &str, host: &str, op: i8, kind: i8, name: &str) -> bool {
        if self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let mut applicable = self
            .acls
            .iter()
            .filter(|a| a.resource_type == kind && applies_to(a, name))
            .peekable();
        if applicable.peek().is_none() {
            return self.allow_if_no_acl;
        }
        let mut allowed = false;
        for acl in applicable {
            let who = acl.principal == principal || acl.principal == ANY_USER;
            let from = acl.host == host || acl.host == WILDCARD;
            if !(who && from && covers(acl.operation, op, acl.permission)) {
                continue;
            }
            if acl.permission == permission::DENY {
                return false;
            }
            allowed = true;
        }
        allowed
    }

    /// May `principal` from `host` do `op` on some resource of type `kind` (Kafka's
    /// `authorizeByResourceType`)? Yes for a super user; with no ACL of the type at all,
    /// `allow.everyone.if.no.acl.found`; otherwise when an ALLOW of `op` for the principal
    /// exists whose pattern no matching DENY covers (a DENY of `*`, of the same name, or a
    /// prefix of it).
    pub fn authorize_any(&self, principal: &str, host: &str, op: i8, kind: i8) -> bool {
        if self.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let of_kind = || self.acls.iter().filter(move |a| a.resource_type == kind);
        if of_kind().next().is_none() {
            return self.allow_if_no_acl;
        }
        let applies = |a: &AclBinding| {
            (a.principal == principal || a.principal == ANY_USER)
                && (a.host == host || a.host == WILDCARD)
                && covers(a.operation, op, a.permission)
        };
        let denies: Vec<&AclBinding> = of_kind()
            .filter(|a| a.permission == permission::DENY && applies(a))
            .collect();
        of_kind()
            .filter(|a| a.permission == permission::ALLOW && applies(a))
            .any(|allow| {
                !denies.iter().any(|deny| match deny.pattern_type {
                    pattern_type::LITERAL => {
                        deny.resource_name == WILDCARD
                            || (deny.resource_name == allow.resource_name
                                && allow.pattern_type == pattern_type::LITERAL)
                    }
                    _ => allow.resource_name.starts_with(deny.resource_name.as_str()),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operation as op;
    use resource_type as rt;

    fn acl(kind: i8, name: &str, pattern: i8, principal: &str, o: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: o,
            permission: perm,
        }
    }

    const ALICE: &str = "User:alice";
    const BOB: &str = "User:bob";

    #[test]
    fn nothing_without_an_acl_unless_configured() {
        let strict = Authorizer::new(vec![], false, vec![]);
        assert!(!strict.authorize(ALICE, "127.0.0.1", op::READ, rt::TOPIC, "orders"));
        let open = Authorizer::new(vec![], true, vec![]);
        assert!(open.authorize(ALICE, "127.0.0.1", op::READ, rt::TOPIC, "orders"));
        let with_super = Authorizer::new(vec!["User:admin".into()], false, vec![]);
        assert!(with_super.authorize("User:admin", "h", op::DELETE, rt::CLUSTER, CLUSTER_NAME));
    }

    #[test]
    fn a_prefixed_acl_grants_what_it_names_and_nothing_else() {
        let a = Authorizer::new(
            vec![],
            false,
            vec![acl(
                rt::TOPIC,
                "orders-",
                pattern_type::PREFIXED,
                ALICE,
                op::READ,
                permission::ALLOW,
            )],
        );
        assert!(a.authorize(ALICE, "h", op::READ, rt::TOPIC, "orders-eu"));
        assert!(a.authorize(ALICE, "h", op::DESCRIBE, rt::TOPIC, "orders-eu"));
        assert!(!a.authorize(ALICE, "h", op::WRITE, rt::TOPIC, "orders-eu"));
        assert!(!a.authorize(ALICE, "h", op::READ, rt::TOPIC, "order"));
        assert!(!a.authorize(ALICE, "h", op::READ, rt::GROUP, "orders-eu"));
        assert!(!a.authorize(BOB, "h", op::READ, rt::TOPIC, "orders-eu"));
    }

    #[test]
    fn deny_wins_over_allow_and_wildcards_match_everyone() {
        let a = Authorizer::new(
            vec![],
            true,
            vec![
                acl(
                    rt::TOPIC,
                    "*",
                    pattern_type::LITERAL,
                    ANY_USER,
                    op::ALL,
                    permission::ALLOW,
                ),
                acl(
                    rt::TOPIC,
                    "secret",
                    pattern_type::LITERAL,
                    BOB,
                    op::READ,
                    permission::DENY,
                ),
            ],
        );
        assert!(a.authorize(ALICE, "h", op::READ, rt::TOPIC, "secret"));
        assert!(!a.authorize(BOB, "h", op::READ, rt::TOPIC, "secret"));
        // A DENY of READ does not deny DESCRIBE.
        assert!(a.authorize(BOB, "h", op::DESCRIBE, rt::TOPIC, "secret"));
        assert!(a.authorize(BOB, "h", op::WRITE, rt::TOPIC, "secret"));
        // Some ACL applies to every topic now, so allow.everyone.if.no.acl.found is moot
        // for topics, but not for groups.
        assert!(a.authorize(BOB, "h", op::READ, rt::GROUP, "g"));
    }

    #[test]
    fn hosts_and_implied_operations() {
        let mut from_lan = acl(
            rt::TOPIC,
            "t",
            pattern_type::LITERAL,
            ALICE,
            op::ALTER_CONFIGS,
            permission::ALLOW,
        );
        from_lan.host = "10.0.0.5".into();
        let a = Authorizer::new(vec![], false, vec![from_lan]);
        assert!(a.authorize(ALICE, "10.0.0.5", op::DESCRIBE_CONFIGS, rt::TOPIC, "t"));
        assert!(!a.authorize(ALICE, "10.0.0.6", op::DESCRIBE_CONFIGS, rt::TOPIC, "t"));
        assert!(!a.authorize(ALICE, "10.0.0.5", op::DESCRIBE, rt::TOPIC, "t"));
    }

    #[test]
    fn filters_select_like_kafka() {
        let lit = acl(
            rt::TOPIC,
            "orders",
            pattern_type::LITERAL,
            ALICE,
            op::READ,
            permission::ALLOW,
        );
        let pre = acl(
            rt::TOPIC,
            "ord",
            pattern_type::PREFIXED,
            BOB,
            op::WRITE,
            permission::DENY,
        );
        let star = acl(
            rt::TOPIC,
            "*",
            pattern_type::LITERAL,
            BOB,
            op::READ,
            permission::ALLOW,
        );
        let grp = acl(
            rt::GROUP,
            "orders",
            pattern_type::LITERAL,
            ALICE,
            op::READ,
            permission::ALLOW,
        );
        let all = [lit.clone(), pre.clone(), star.clone(), grp.clone()];
        let filter = |kind, name: Option<&str>, pattern| AclFilter {
            resource_type: kind,
            resource_name: name.map(str::to_owned),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: op::ANY,
            permission: permission::ANY,
        };
        let select = |f: AclFilter| {
            all.iter()
                .filter(|a| f.matches(a))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(select(filter(rt::ANY, None, pattern_type::ANY)).len(), 4);
        assert_eq!(
            select(filter(rt::TOPIC, Some("orders"), pattern_type::MATCH)),
            vec![lit.clone(), pre.clone(), star.clone()]
        );
        assert_eq!(
            select(filter(rt::TOPIC, Some("orders"), pattern_type::LITERAL)),
            vec![lit.clone()]
        );
        assert_eq!(
            select(filter(rt::ANY, None, pattern_type::PREFIXED)),
            vec![pre.clone()]
        );
        let mut a = Authorizer::new(vec![], false, all.to_vec());
        let gone = a.remove_matching(&AclFilter {
            principal: Some(BOB.into()),
            ..filter(rt::ANY, None, pattern_type::ANY)
        });
        assert_eq!(gone, vec![pre, star]);
        assert_eq!(a.acls(), &[lit, grp]);
    }

    #[test]
    fn some_resource_of_a_type() {
        let write =
            |name: &str, pattern, perm| acl(rt::TOPIC, name, pattern, ALICE, op::WRITE, perm);
        let none = Authorizer::new(vec![], false, vec![]);
        assert!(!none.authorize_any(ALICE, "h", op::WRITE, rt::TOPIC));
        let one = Authorizer::new(
            vec![],
            false,
            vec![write("orders", pattern_type::LITERAL, permission::ALLOW)],
        );
        assert!(one.authorize_any(ALICE, "h", op::WRITE, rt::TOPIC));
        assert!(!one.authorize_any(BOB, "h", op::WRITE, rt::TOPIC));
        assert!(!one.authorize_any(ALICE, "h", op::DELETE, rt::TOPIC));
        let shadowed = Authorizer::new(
            vec![],
            false,
            vec![
                write("orders", pattern_type::LITERAL, permission::ALLOW),
                write("ord", pattern_type::PREFIXED, permission::DENY),
            ],
        );
        assert!(!shadowed.authorize_any(ALICE, "h", op::WRITE, rt::TOPIC));
        let elsewhere = Authorizer::new(
            vec![],
            false,
            vec![
                write("orders", pattern_type::LITERAL, permission::ALLOW),
                write("audit", pattern_type::LITERAL, permission::DENY),
            ],
        );
        assert!(elsewhere.authorize_any(ALICE, "h", op::WRITE, rt::TOPIC));
    }

    #[test]
    fn create_validation() {
        let ok = acl(
            rt::TOPIC,
            "t",
            pattern_type::LITERAL,
            ALICE,
            op::READ,
            permission::ALLOW,
        );
        assert!(validate(&ok).is_ok());
        for bad in [
            AclBinding {
                resource_type: rt::ANY,
                ..ok.clone()
            },
            AclBinding {
                pattern_type: pattern_type::MATCH,
                ..ok.clone()
            },
            AclBinding {
                operation: op::ANY,
                ..ok.clone()
            },
            AclBinding {
                permission: permission::ANY,
                ..ok.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..ok.clone()
            },
            AclBinding {
                resource_type: rt::CLUSTER,
                resource_name: "c".into(),
                ..ok.clone()
            },
            AclBinding {
                pattern_type: pattern_type::PREFIXED,
                resource_name: "*".into(),
                ..ok.clone()
            },
            AclBinding {
                host: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }
}
