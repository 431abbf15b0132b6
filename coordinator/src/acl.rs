//! Access control as ZooKeeper does it: every znode carries an ACL list (permission bits for
//! `scheme:id` entries), every connection holds the identities it proved, and each operation
//! needs one permission bit on one node (read: READ on the node; create: CREATE on the
//! parent; delete: DELETE on the parent; setData: WRITE; setACL: ADMIN; getACL: READ or
//! ADMIN).
//!
//! Schemes, with ZooKeeper's meaning:
//! * `world:anyone` matches every connection.
//! * `ip:ADDR[/BITS]` matches connections from that address or network (IPv4 or IPv6); every
//!   connection holds `ip:<its address>` from the start.
//! * `digest:USER:BASE64(SHA1(USER:PASSWORD))` matches connections that ran
//!   `addauth digest USER:PASSWORD`.
//! * `x509:SUBJECT` matches connections to the secure client port whose verified client
//!   certificate has that subject (RFC 2253 form, `CN=app,O=Example`; [`crate::tls`]).
//! * `auth` in an ACL given to create/setACL stands for every identity the caller proved
//!   (its digests and its x509 subject); it is replaced by them before the ACL is stored
//!   ([`fixup`]).
//! * A connection whose digest equals the configured super digest
//!   (`DigestAuthenticationProvider.superDigest` in zoo.cfg) also holds `super:`, which
//!   passes every check.
//!
//! This module is pure: identities in, decisions out. The ACL lists themselves live in the
//! data tree's [`AclTable`], interned, so a million nodes under one ACL hold one list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use crate::jute::codes::{err, perms};
use crate::jute::records::Acl;

/// One identity a connection holds (ZooKeeper's `Id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthId {
    pub scheme: String,
    pub id: String,
}

impl AuthId {
    pub fn new(scheme: &str, id: &str) -> Self {
        AuthId {
            scheme: scheme.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// Identities one connection may hold at most; an `addauth` past it fails (AUTH_FAILED) and
/// closes the connection, so repeated `addauth` cannot grow a connection without bound.
pub const AUTH_IDS_PER_CONNECTION_MAX: usize = 32;

/// `USER:BASE64(SHA1(USER:PASSWORD))` for `USER:PASSWORD`, the digest an ACL names (ZooKeeper's
/// `DigestAuthenticationProvider.generateDigest`; text without a colon is all user name).
pub fn digest_of(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// The identities `addauth SCHEME AUTH` proves, or `None` (AUTH_FAILED) for a scheme this
/// server does not offer. `super_digest` is the configured super user's digest.
pub fn authenticate(
    scheme: &str,
    auth: &[u8],
    remote_ip: Option<IpAddr>,
    super_digest: Option<&str>,
) -> Option<Vec<AuthId>> {
    match scheme {
        "digest" => {
            let digest = digest_of(&String::from_utf8_lossy(auth));
            let mut ids = Vec::with_capacity(2);
            if super_digest == Some(digest.as_str()) {
                ids.push(AuthId::new("super", ""));
            }
            ids.push(AuthId::new("digest", &digest));
            Some(ids)
        }
        "ip" => remote_ip.map(|ip| vec![AuthId::new("ip", &ip.to_string())]),
        _ => None,
    }
}

/// Whether `ids` may use permission `perm` on a node with `acl` (ZooKeeper's `checkACL`): an
/// empty ACL or a `super` identity allows everything; otherwise one entry with a bit of
/// `perm` must match one identity.
pub fn allowed(acl: &[Acl], perm: i32, ids: &[AuthId]) -> bool {
    if acl.is_empty() || ids.iter().any(|i| i.scheme == "super") {
        return true;
    }
    acl.iter().filter(|a| a.perms & perm != 0).any(|a| {
        if a.scheme == "world" && a.id == "anyone" {
            return true;
        }
        ids.iter()
            .filter(|i| i.scheme == a.scheme)
            .any(|i| match a.scheme.as_str() {
                "digest" | "x509" => i.id == a.id,
                "ip" => ip_matches(&i.id, &a.id),
                _ => false,
            })
    })
}

/// The ACL to store for a create/setACL with `acl` from a caller holding `ids`
/// (ZooKeeper's `fixupACL`): duplicates dropped, `auth` entries replaced by the caller's
/// digests and x509 subjects, every other entry checked for its scheme. INVALID_ACL when the list is empty, an
/// entry is malformed or unknown, or `auth` is used without one to stand for.
pub fn fixup(acl: &[Acl], ids: &[AuthId]) -> Result<Vec<Acl>, i32> {
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    if acl.is_empty() {
        return Err(err::INVALID_ACL);
    }
    for a in acl {
        match a.scheme.as_str() {
            "world" if a.id == "anyone" => push(a.clone()),
            "auth" => {
                let mut any = false;
                for i in ids
                    .iter()
                    .filter(|i| i.scheme == "digest" || i.scheme == "x509")
                {
                    any = true;
                    push(Acl {
                        perms: a.perms,
                        scheme: i.scheme.clone(),
                        id: i.id.clone(),
                    });
                }
                if !any {
                    return Err(err::INVALID_ACL);
                }
            }
            "digest" if valid_digest_id(&a.id) => push(a.clone()),
            "x509" if !a.id.is_empty() => push(a.clone()),
            "ip" if parse_network(&a.id).is_some() => push(a.clone()),
            _ => return Err(err::INVALID_ACL),
        }
    }
    Ok(out)
}

/// The list getACL shows a caller without ADMIN on the node: digests hidden (`user:x`), as
/// ZooKeeper does, so READ alone does not hand out password hashes to attack offline.
pub fn redacted(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|a| match a.scheme.as_str() {
            "digest" => Acl {
                perms: a.perms,
                scheme: a.scheme.clone(),
                id: format!("{}:x", a.id.split(':').next().unwrap_or("")),
            },
            _ => a.clone(),
        })
        .collect()
}

/// A digest id names a user and a hash: exactly one colon, a hash after it.
fn valid_digest_id(id: &str) -> bool {
    id.matches(':').count() == 1 && !id.ends_with(':')
}

/// `ADDR` or `ADDR/BITS` as (address, prefix bits).
fn parse_network(expr: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match expr.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (expr, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.parse::<u32>().ok().filter(|b| *b <= width)?,
        None => width,
    };
    Some((addr, bits))
}

/// Whether the client address `client` lies in the network `expr` (`ADDR[/BITS]`).
fn ip_matches(client: &str, expr: &str) -> bool {
    let (Ok(client), Some((network, bits))) = (client.parse::<IpAddr>(), parse_network(expr))
    else {
        return false;
    };
    let (c, n, width): (u128, u128, u32) = match (client, network) {
        (IpAddr::V4(c), IpAddr::V4(n)) => (u32::from(c) as u128, u32::from(n) as u128, 32),
        (IpAddr::V6(c), IpAddr::V6(n)) => (u128::from(c), u128::from(n), 128),
        (IpAddr::V6(c), IpAddr::V4(n)) => match c.to_ipv4_mapped() {
            Some(c) => (u32::from(c) as u128, u32::from(n) as u128, 32),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (c >> shift) == (n >> shift)
}

/// The permission bits of a node ZooKeeper creates itself (`/`, `/zookeeper`, ...).
pub fn open_acl() -> Vec<Acl> {
    vec![Acl::world_anyone(perms::ALL)]
}

/// One interned ACL list of the [`AclTable`].
#[derive(Debug, Clone)]
struct AclSlot {
    list: Arc<[Acl]>,
    /// Nodes that use the list.
    refs: u64,
    /// CRC-32C of the list's content, for the tree digest (replicas compare content, not
    /// table indexes).
    crc: u32,
}

/// Interned ACL lists, referenced by index from the nodes (4 bytes per node, as ZooKeeper's
/// `ReferenceCountedACLCache`). A list no node uses any more frees its slot.
#[derive(Debug, Clone, Default)]
pub struct AclTable {
    slots: Vec<Option<AclSlot>>,
    index: HashMap<Arc<[Acl]>, u32>,
    free: Vec<u32>,
}

impl AclTable {
    /// The index of `acl`, adding it if new; counts one more user.
    pub fn intern(&mut self, acl: &[Acl]) -> u32 {
        if let Some(&i) = self.index.get(acl) {
            if let Some(slot) = self.slots[i as usize].as_mut() {
                slot.refs += 1;
                return i;
            }
        }
        let list: Arc<[Acl]> = acl.into();
        let slot = AclSlot {
            crc: list_crc(&list),
            list: list.clone(),
            refs: 1,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(list, i);
        i
    }

    /// One user of list `i` is gone.
    pub fn release(&mut self, i: u32) {
        let Some(Some(slot)) = self.slots.get_mut(i as usize) else {
            debug_assert!(false, "release of unknown ACL {i}");
            return;
        };
        debug_assert!(slot.refs > 0, "ACL {i} released more often than used");
        slot.refs -= 1;
        if slot.refs == 0 {
            let list = slot.list.clone();
            self.slots[i as usize] = None;
            self.index.remove(&list);
            self.free.push(i);
        }
    }

    /// The list at index `i` (empty for an unknown index, which a consistent tree never has).
    pub fn get(&self, i: u32) -> &[Acl] {
        match self.slots.get(i as usize) {
            Some(Some(slot)) => &slot.list,
            _ => {
                debug_assert!(false, "unknown ACL {i}");
                &[]
            }
        }
    }

    pub fn crc(&self, i: u32) -> u32 {
        match self.slots.get(i as usize) {
            Some(Some(slot)) => slot.crc,
            _ => 0,
        }
    }

    /// Every slot's list in index order (an empty list for a free slot), for snapshots.
    pub fn lists(&self) -> Vec<Arc<[Acl]>> {
        self.slots
            .iter()
            .map(|s| {
                s.as_ref()
                    .map_or_else(|| Arc::from(Vec::new()), |s| s.list.clone())
            })
            .collect()
    }

    /// Distinct lists in use.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

fn list_crc(acl: &[Acl]) -> u32 {
    let mut crc = 0;
    for a in acl {
        crc = crc32c::crc32c_append(crc, &a.perms.to_be_bytes());
        crc = crc32c::crc32c_append(crc, a.scheme.as_bytes());
        crc = crc32c::crc32c_append(crc, &[0]);
        crc = crc32c::crc32c_append(crc, a.id.as_bytes());
        crc = crc32c::crc32c_append(crc, &[0]);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    #[test]
    fn digest_matches_zookeepers_published_example() {
        // The super digest kazoo's test harness gives ZooKeeper, for super:test.
        assert_eq!(
            digest_of("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn digest_identity_grants_only_what_its_entry_names() {
        let alice = authenticate("digest", b"alice:secret", None, None).unwrap();
        let node = vec![acl(perms::READ, "digest", &digest_of("alice:secret"))];
        assert!(allowed(&node, perms::READ, &alice));
        assert!(!allowed(&node, perms::WRITE, &alice));
        let eve = authenticate("digest", b"alice:wrong", None, None).unwrap();
        assert!(!allowed(&node, perms::READ, &eve));
        assert!(!allowed(&node, perms::READ, &[]));
    }

    #[test]
    fn super_digest_passes_every_check() {
        let super_digest = digest_of("root:pw");
        let ids = authenticate("digest", b"root:pw", None, Some(&super_digest)).unwrap();
        assert!(ids.contains(&AuthId::new("super", "")));
        let locked = vec![acl(perms::READ, "digest", &digest_of("alice:x"))];
        assert!(allowed(&locked, perms::ADMIN, &ids));
        let not_super = authenticate("digest", b"root:other", None, Some(&super_digest)).unwrap();
        assert!(!allowed(&locked, perms::ADMIN, &not_super));
    }

    #[test]
    fn ip_entries_match_addresses_and_networks() {
        let from = |ip: &str| vec![AuthId::new("ip", ip)];
        let net = vec![acl(perms::ALL, "ip", "10.1.0.0/16")];
        assert!(allowed(&net, perms::READ, &from("10.1.200.3")));
        assert!(!allowed(&net, perms::READ, &from("10.2.0.1")));
        let one = vec![acl(perms::ALL, "ip", "127.0.0.1")];
        assert!(allowed(&one, perms::READ, &from("127.0.0.1")));
        assert!(!allowed(&one, perms::READ, &from("127.0.0.2")));
        assert!(allowed(&one, perms::READ, &from("::ffff:127.0.0.1")));
        let v6 = vec![acl(perms::ALL, "ip", "fd00::/8")];
        assert!(allowed(&v6, perms::READ, &from("fd12::1")));
        assert!(!allowed(&v6, perms::READ, &from("fe80::1")));
    }

    #[test]
    fn x509_entries_match_the_exact_certificate_subject() {
        let app = vec![AuthId::new("x509", "CN=app,O=streambox")];
        let list = vec![acl(perms::READ, "x509", "CN=app,O=streambox")];
        assert!(allowed(&list, perms::READ, &app));
        assert!(!allowed(&list, perms::WRITE, &app));
        let other = vec![AuthId::new("x509", "CN=app,O=elsewhere")];
        assert!(!allowed(&list, perms::READ, &other));
        // A digest with the same text is another scheme.
        assert!(!allowed(
            &list,
            perms::READ,
            &[AuthId::new("digest", "CN=app,O=streambox")]
        ));
        // `auth` stands for the subject too; an empty subject is no ACL.
        let fixed = fixup(&[acl(perms::ALL, "auth", "")], &app).unwrap();
        assert_eq!(fixed, vec![acl(perms::ALL, "x509", "CN=app,O=streambox")]);
        assert_eq!(
            fixup(&[acl(perms::ALL, "x509", "")], &app),
            Err(err::INVALID_ACL)
        );
    }

    #[test]
    fn fixup_expands_auth_and_refuses_what_it_cannot_honour() {
        let ids = vec![
            AuthId::new("ip", "127.0.0.1"),
            AuthId::new("digest", "alice:abc="),
        ];
        let fixed = fixup(&[acl(perms::ALL, "auth", "")], &ids).unwrap();
        assert_eq!(fixed, vec![acl(perms::ALL, "digest", "alice:abc=")]);
        // `auth` without a digest to stand for.
        let only_ip = vec![AuthId::new("ip", "127.0.0.1")];
        assert_eq!(
            fixup(&[acl(perms::ALL, "auth", "")], &only_ip),
            Err(err::INVALID_ACL)
        );
        for bad in [
            acl(perms::ALL, "world", "someone"),
            acl(perms::ALL, "digest", "no-colon"),
            acl(perms::ALL, "digest", "a:b:c"),
            acl(perms::ALL, "ip", "300.1.1.1"),
            acl(perms::ALL, "ip", "10.0.0.0/33"),
            acl(perms::ALL, "super", ""),
            acl(perms::ALL, "sasl", "bob"),
        ] {
            assert_eq!(
                fixup(std::slice::from_ref(&bad), &ids),
                Err(err::INVALID_ACL),
                "{bad:?}"
            );
        }
        assert_eq!(fixup(&[], &ids), Err(err::INVALID_ACL));
        let twice = [acl(1, "world", "anyone"), acl(1, "world", "anyone")];
        assert_eq!(fixup(&twice, &ids).unwrap().len(), 1);
    }

    #[test]
    fn unknown_scheme_fails_authentication() {
        assert!(authenticate("sasl", b"x", None, None).is_none());
        assert!(authenticate("x509", b"", None, None).is_none());
    }

    #[test]
    fn redaction_hides_hashes_only() {
        let shown = redacted(&[
            acl(perms::READ, "digest", "alice:abc="),
            acl(perms::READ, "ip", "10.0.0.1"),
        ]);
        assert_eq!(shown[0].id, "alice:x");
        assert_eq!(shown[1].id, "10.0.0.1");
    }

    #[test]
    fn table_interns_and_frees_lists() {
        let mut table = AclTable::default();
        let open = open_acl();
        let a = table.intern(&open);
        let b = table.intern(&open);
        assert_eq!(a, b);
        let c = table.intern(&[acl(perms::READ, "ip", "10.0.0.1")]);
        assert_ne!(a, c);
        assert_eq!(table.len(), 2);
        table.release(c);
        assert_eq!(table.len(), 1);
        // The freed slot is reused, the shared list survives one release.
        let d = table.intern(&[acl(perms::WRITE, "ip", "10.0.0.2")]);
        assert_eq!(d, c);
        table.release(a);
        assert_eq!(table.get(b), &open[..]);
    }
}
