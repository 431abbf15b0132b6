//! Who a connection is and what it may do: the identities it holds (`ip:` from its
//! address, an `x509:` subject proved by TLS, what `addauth` proved) and the ACL check of a
//! node against them.

use super::{frame, RequestProcessor};
use crate::acl::{self, AuthId, AUTH_IDS_PER_CONNECTION_MAX};
use crate::data_tree::validate_path;
use crate::jute::codes::{err, perms};
use crate::jute::records::ReplyHeader;
use crate::watch::ConnId;

impl RequestProcessor {
    /// An identity the transport proved for a connection (a verified TLS client
    /// certificate: `x509:<subject>`), held like one from `addauth`.
    pub fn add_connection_identity(&mut self, conn: ConnId, id: AuthId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.auth.contains(&id) {
                c.auth.push(id);
            }
        }
    }

    /// `addauth`: answered at once with the request's xid (clients send AUTH, -4, or their
    /// next xid), as ZooKeeper does. A scheme this server does
    /// not offer, or a connection already holding its maximum of identities, gets
    /// AUTH_FAILED and the connection is closed after the answer.
    pub(super) fn add_auth(&mut self, conn: ConnId, xid: i32, scheme: &str, auth: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let proved = acl::authenticate(scheme, auth, c.remote_ip, self.cfg.super_digest.as_deref());
        let code = match proved {
            Some(ids) => {
                for id in ids {
                    if !c.auth.contains(&id) {
                        c.auth.push(id);
                    }
                }
                if c.auth.len() <= AUTH_IDS_PER_CONNECTION_MAX {
                    err::OK
                } else {
                    tracing::warn!(
                        conn,
                        "more than {AUTH_IDS_PER_CONNECTION_MAX} identities on one connection"
                    );
                    err::AUTH_FAILED
                }
            }
            None => {
                tracing::warn!(conn, "authentication failed for scheme `{scheme}`");
                err::AUTH_FAILED
            }
        };
        if code == err::OK {
            tracing::info!(conn, "auth success for scheme `{scheme}`");
        }
        let f = frame(
            ReplyHeader {
                xid,
                zxid: self.tree.last_zxid(),
                err: code,
            },
            |_| {},
        );
        self.send(conn, f);
        if code != err::OK {
            self.close(conn);
        }
    }

    /// The identities connection `conn` holds.
    pub(super) fn auth_of(&self, conn: ConnId) -> &[AuthId] {
        self.conns.get(&conn).map_or(&[], |c| &c.auth)
    }

    /// The node at `path` if it exists and `conn` may use `perm` on it.
    pub(super) fn permitted(
        &self,
        conn: ConnId,
        path: &str,
        perm: i32,
    ) -> Result<&crate::data_tree::Node, i32> {
        validate_path(path).map_err(|_| err::BAD_ARGUMENTS)?;
        let node = self.tree.get(path).ok_or(err::NO_NODE)?;
        if !acl::allowed(self.tree.acl(node), perm, self.auth_of(conn)) {
            return Err(err::NO_AUTH);
        }
        Ok(node)
    }

    pub(super) fn readable(
        &self,
        conn: ConnId,
        path: &str,
    ) -> Result<&crate::data_tree::Node, i32> {
        self.permitted(conn, path, perms::READ)
    }
}
