//! A client session for hostile-input testing: the request processor with one connection
//! whose session is established (its createSession committed), fed whatever frames a test or
//! a fuzz target makes up, with every proposal committed at once as a local log would. Used
//! by `tests/hostile_input.rs` (proptest, in CI) and `fuzz/` (cargo-fuzz, `scripts/fuzz`).

use crate::data_tree::DataTree;
use crate::jute::codes::op;
use crate::jute::records::ConnectRequest;
use crate::jute::Writer;
use crate::request_processor::{Effect, Now, ProcessorConfig, RequestProcessor};

/// Every opcode the request decoder knows, and a few it does not.
pub const OPCODES: &[i32] = &[
    op::CREATE,
    op::DELETE,
    op::EXISTS,
    op::GET_DATA,
    op::SET_DATA,
    op::GET_ACL,
    op::SET_ACL,
    op::GET_CHILDREN,
    op::SYNC,
    op::PING,
    op::GET_CHILDREN2,
    op::CHECK,
    op::MULTI,
    op::CREATE2,
    op::CREATE_TTL,
    op::MULTI_READ,
    op::SET_WATCHES,
    op::SET_WATCHES2,
    op::REMOVE_WATCHES,
    op::AUTH,
    op::CLOSE_SESSION,
    0,
    9999,
    -1,
];

const CONN: u64 = 1;

/// The processor and its one connection.
pub struct HostileClient {
    pub processor: RequestProcessor,
    now: Now,
}

impl Default for HostileClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HostileClient {
    /// A standalone processor (tickTime 1 ms, 100 txns per snapshot) with an established
    /// session of 1000 ms on connection 1.
    pub fn new() -> Self {
        let now = Now {
            mono_ms: 0,
            wall_ms: 0,
        };
        let mut processor =
            RequestProcessor::new(ProcessorConfig::for_tick(1, 100), DataTree::new(), now);
        processor.open(CONN, "127.0.0.1:1".into());
        let mut w = Writer::new();
        Self::connect_request().encode(&mut w);
        processor.connect(CONN, &w.bytes, now);
        let mut client = HostileClient { processor, now };
        client.commit_proposals();
        client
    }

    /// The ConnectRequest the session was opened with.
    pub fn connect_request() -> ConnectRequest {
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 1000,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: None,
        }
    }

    /// Sends one frame (without its length prefix) a millisecond after the previous one,
    /// then commits what it proposed and drops the answers.
    pub fn send(&mut self, frame: &[u8]) {
        self.now.mono_ms += 1;
        self.now.wall_ms += 1;
        self.processor.request(CONN, frame, self.now);
        self.commit_proposals();
    }

    /// Sends a request header (xid 7, `opcode`) followed by `body`.
    pub fn send_request(&mut self, opcode: i32, body: &[u8]) {
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&7i32.to_be_bytes());
        frame.extend_from_slice(&opcode.to_be_bytes());
        frame.extend_from_slice(body);
        self.send(&frame);
    }

    /// The connection goes away.
    pub fn close(mut self) {
        self.processor.closed(CONN);
        self.commit_proposals();
    }

    fn commit_proposals(&mut self) {
        // Commits can propose again (a close after an expiry): until nothing is left.
        loop {
            let mut proposals = Vec::new();
            let mut written = 0;
            for e in self.processor.take_effects() {
                match e {
                    Effect::Propose { zxid, payload } => proposals.push((zxid, payload)),
                    // The answers are read (and dropped) at once.
                    Effect::Send { frame, .. } => written += frame.len(),
                    _ => {}
                }
            }
            if written > 0 {
                self.processor.written(CONN, written);
            }
            if proposals.is_empty() && written == 0 {
                return;
            }
            for (zxid, payload) in proposals {
                self.processor.commit(zxid, &payload, self.now);
            }
        }
    }
}
