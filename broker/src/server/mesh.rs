//! Shard-to-shard messages over the glommio channel mesh: requests for partitions another shard
//! owns, topic changes broadcast from the control shard, and the replies coming back.
//!
//! The mesh is one-way, so every request carries an id and the sender's shard; the owner sends
//! a [`Envelope::Reply`] back and the caller's pending slot is filled. glommio numbers mesh
//! peers by executor id, not by our shard index, so peers introduce themselves first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use glommio::channels::channel_mesh::Senders;
use tokio::sync::oneshot;

use super::partition_ops::{ShardReply, ShardRequest};

/// What travels over the mesh.
pub enum Envelope {
    /// First message on every link: "mesh peer `peer` is shard `shard`".
    Hello {
        shard: usize,
    },
    Request {
        from_shard: usize,
        id: u64,
        body: ShardRequest,
    },
    Reply {
        id: u64,
        body: ShardReply,
    },
}

/// Mesh capacity per link, messages; a full link makes the sender wait (back-pressure).
pub const LINK_CAPACITY: usize = 1024;

/// One shard's end of the mesh.
pub struct Mesh {
    shard: usize,
    senders: Option<Senders<Envelope>>,
    /// `shard_to_peer[s]` is the mesh peer index of shard `s` (usize::MAX until it said hello).
    shard_to_peer: RefCell<Vec<usize>>,
    hellos: Cell<usize>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
}

impl Mesh {
    pub fn new(shard: usize, shard_count: usize, senders: Option<Senders<Envelope>>) -> Mesh {
        let mut shard_to_peer = vec![usize::MAX; shard_count];
        if let Some(senders) = &senders {
            shard_to_peer[shard] = senders.peer_id();
        }
        Mesh {
            shard,
            senders,
            shard_to_peer: RefCell::new(shard_to_peer),
            hellos: Cell::new(0),
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::with_capacity(256)),
        }
    }

    /// Says hello to every peer.
    pub async fn introduce(&self) {
        if let Some(senders) = &self.senders {
            for peer in 0..senders.nr_consumers() {
                if peer != senders.peer_id() {
                    let _ = senders
                        .send_to(peer, Envelope::Hello { shard: self.shard })
                        .await;
                }
            }
        }
    }

    /// Records a peer's hello; true once every other shard has said hello.
    pub fn hello(&self, peer: usize, shard: usize) {
        if let Some(slot) = self.shard_to_peer.borrow_mut().get_mut(shard) {
            *slot = peer;
        }
        self.hellos.set(self.hellos.get() + 1);
    }

    pub fn all_introduced(&self) -> bool {
        self.hellos.get() + 1 >= self.shard_to_peer.borrow().len()
    }

    /// Sends `body` to `shard` and waits for its reply; `None` if the shard is gone.
    pub async fn call(&self, shard: usize, body: ShardRequest) -> Option<ShardReply> {
        let senders = self.senders.as_ref()?;
        let peer = *self.shard_to_peer.borrow().get(shard)?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let envelope = Envelope::Request {
            from_shard: self.shard,
            id,
            body,
        };
        if senders.send_to(peer, envelope).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        rx.await.ok()
    }

    /// Sends a reply back to the shard that asked.
    pub async fn reply(&self, to_shard: usize, id: u64, body: ShardReply) {
        let Some(senders) = &self.senders else { return };
        let peer = self.shard_to_peer.borrow().get(to_shard).copied();
        if let Some(peer) = peer {
            let _ = senders.send_to(peer, Envelope::Reply { id, body }).await;
        }
    }

    /// Hands a reply to the task waiting for it.
    pub fn deliver(&self, id: u64, body: ShardReply) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.send(body);
        }
    }
}
