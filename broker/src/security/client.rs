//! Who is on the other end of one connection: the Kafka principal (`User:ANONYMOUS` until a
//! listener authenticates the client), the client's address as ACLs match it, and the host
//! form Kafka shows in DescribeGroups. One per connection, shared by its request handlers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

/// Kafka's principal of a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `User:name` (Kafka's `KafkaPrincipal` in text form).
    pub principal: Rc<str>,
    /// The address ACL host entries are matched against.
    pub host: IpAddr,
    /// Kafka's client host form (`/127.0.0.1`), shown by DescribeGroups.
    pub peer: Rc<str>,
    /// The index of the listener the connection came in on (in the server's listener list):
    /// Metadata and FindCoordinator answer with that listener's endpoints.
    pub listener: usize,
}

impl ClientIdentity {
    /// A client at `peer` that has not authenticated (unknown address: 0.0.0.0).
    pub fn anonymous(peer: Option<SocketAddr>) -> ClientIdentity {
        let host = peer
            .map(|addr| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let peer = match peer {
            Some(addr) => format!("/{}", addr.ip()).into(),
            None => "/unknown".into(),
        };
        ClientIdentity {
            principal: ANONYMOUS.into(),
            host,
            peer,
            listener: 0,
        }
    }

    /// The same client, on listener `index`.
    pub fn on_listener(self, index: usize) -> ClientIdentity {
        ClientIdentity {
            listener: index,
            ..self
        }
    }

    /// The same client, now authenticated as `principal` (`User:name`).
    pub fn authenticated(&self, principal: &str) -> ClientIdentity {
        debug_assert!(principal.contains(':'), "a principal is TYPE:name");
        ClientIdentity {
            principal: principal.into(),
            ..self.clone()
        }
    }

    pub fn is_anonymous(&self) -> bool {
        &*self.principal == ANONYMOUS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_anonymous_until_authenticated() {
        let client = ClientIdentity::anonymous(Some("10.1.2.3:4567".parse().unwrap()));
        assert!(client.is_anonymous());
        assert_eq!(&*client.peer, "/10.1.2.3");
        assert_eq!(client.host, "10.1.2.3".parse::<IpAddr>().unwrap());
        let alice = client.authenticated("User:alice");
        assert_eq!(&*alice.principal, "User:alice");
        assert!(!alice.is_anonymous());
        assert_eq!(alice.host, client.host);
        assert_eq!(&*ClientIdentity::anonymous(None).peer, "/unknown");
    }
}
