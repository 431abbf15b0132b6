//! What one request may do: the connection's principal and host checked against the
//! shard's current ACL snapshot. Built once per request ([`Access::new`]); without
//! `--authorizer` it holds nothing and every check is a `None` test.

use std::rc::Rc;
use std::sync::Arc;

use super::acl_store::ShardAcls;
use super::authorizer::{resource_type, Authorizer, CLUSTER_NAME};
use super::client::ClientIdentity;

/// `None`: no authorizer, everything is allowed (nothing is allocated per request).
pub struct Access(Option<Checker>);

struct Checker {
    authorizer: Arc<Authorizer>,
    principal: Rc<str>,
    /// The client's address as ACL hosts name it.
    host: String,
}

impl Access {
    pub fn new(acls: Option<&ShardAcls>, client: &ClientIdentity) -> Access {
        Access(acls.map(|acls| Checker {
            authorizer: acls.current(),
            principal: client.principal.clone(),
            host: client.host.to_string(),
        }))
    }

    /// May the client do `op` on the resource (`kind`, `name`)?
    pub fn allows(&self, op: i8, kind: i8, name: &str) -> bool {
        match &self.0 {
            None => true,
            Some(c) => c
                .authorizer
                .authorize(&c.principal, &c.host, op, kind, name),
        }
    }

    pub fn topic(&self, op: i8, name: &str) -> bool {
        self.allows(op, resource_type::TOPIC, name)
    }

    pub fn group(&self, op: i8, name: &str) -> bool {
        self.allows(op, resource_type::GROUP, name)
    }

    pub fn cluster(&self, op: i8) -> bool {
        self.allows(op, resource_type::CLUSTER, CLUSTER_NAME)
    }

    /// May the client do `op` on some resource of type `kind` (Kafka's
    /// `authorizeByResourceType`, as InitProducerId asks for WRITE on any topic)?
    pub fn any_of_type(&self, op: i8, kind: i8) -> bool {
        match &self.0 {
            None => true,
            Some(c) => c.authorizer.authorize_any(&c.principal, &c.host, op, kind),
        }
    }
}
