//! Shared helpers of the coordinator's integration tests: a standalone server started
//! in-process on a free loopback port in a temp dir (shut down on drop, so also when an
//! assertion fails), and a raw client session over a plain socket that speaks jute with the
//! crate's own codec (`coordinator::jute`), for tests that need control no client library
//! gives (not reading answers, pipelining, abandoning a session). Not a client library.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use coordinator::config::ZooConfig;
use coordinator::jute::codes::op;
use coordinator::jute::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, ReplyHeader, RequestHeader,
};
use coordinator::jute::{Reader, Writer};
use coordinator::server::{self, ServerHandle, ServerOptions};

/// How long a raw session waits for one answer before the test fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    handle: Option<ServerHandle>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// tickTime 200, a free port on 127.0.0.1, then the zoo.cfg lines in `extra`.
    pub fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "tickTime=200\ndataDir={}\nclientPort=0\nclientPortAddress=127.0.0.1\n{extra}",
            dir.path().display()
        );
        let zoo = ZooConfig::parse(&text, std::path::Path::new("test.cfg")).unwrap();
        let handle = server::start(ServerOptions::new(zoo)).unwrap();
        Server {
            handle: Some(handle),
            _dir: dir,
        }
    }

    pub fn addr(&self) -> String {
        self.handle.as_ref().unwrap().local_addr().to_string()
    }

    /// The Prometheus endpoint, when the zoo.cfg lines name the Prometheus provider.
    pub fn metrics_addr(&self) -> String {
        let h = self.handle.as_ref().unwrap();
        h.metrics_addr()
            .expect("no Prometheus endpoint")
            .to_string()
    }

    /// The secure (TLS) client port, when the zoo.cfg lines set `secureClientPort`.
    pub fn secure_addr(&self) -> String {
        let h = self.handle.as_ref().unwrap();
        h.secure_addr().expect("no secureClientPort").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

pub fn write_frame(stream: &mut impl Write, build: impl FnOnce(&mut Writer)) {
    let mut w = Writer::frame();
    build(&mut w);
    stream.write_all(&w.finish_frame()).unwrap();
}

pub fn read_frame(stream: &mut impl Read) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    body
}

/// The text a four-letter word gets (the server closes the connection after it).
pub fn four_letter(addr: &str, word: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    s.write_all(word.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// One value of the `mntr` word.
pub fn mntr(addr: &str, key: &str) -> String {
    let text = four_letter(addr, "mntr");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('\t').map(str::to_owned))
        .unwrap_or_else(|| panic!("mntr has no {key}: {text}"))
}

/// A session on a plain socket (or, with [`RawSession::over`], any byte stream: TLS).
pub struct RawSession<S = TcpStream> {
    pub stream: S,
    pub session_id: i64,
    /// The negotiated session timeout.
    pub timeout_ms: i32,
}

impl RawSession {
    /// Opens a new session asking for `timeout_ms`.
    pub fn connect(addr: &str, timeout_ms: i32) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        RawSession::over(stream, timeout_ms)
    }
}

impl<S: Read + Write> RawSession<S> {
    /// Opens a new session asking for `timeout_ms` over a connected stream.
    pub fn over(mut stream: S, timeout_ms: i32) -> Self {
        write_frame(&mut stream, |w| {
            ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 0,
                timeout_ms,
                session_id: 0,
                passwd: vec![0; 16],
                read_only: Some(false),
            }
            .encode(w)
        });
        let reply = ConnectResponse::decode(&read_frame(&mut stream)).unwrap();
        assert_ne!(reply.session_id, 0, "session refused");
        RawSession {
            stream,
            session_id: reply.session_id,
            timeout_ms: reply.timeout_ms,
        }
    }

    /// Sends one request (header, then what `body` writes), without waiting.
    pub fn send(&mut self, xid: i32, opcode: i32, body: impl FnOnce(&mut Writer)) {
        write_frame(&mut self.stream, |w| {
            RequestHeader { xid, op: opcode }.encode(w);
            body(w);
        });
    }

    /// The next frame: its header and the rest.
    pub fn answer(&mut self) -> (ReplyHeader, Vec<u8>) {
        let frame = read_frame(&mut self.stream);
        let mut r = Reader::new(&frame);
        let header = ReplyHeader::decode(&mut r).unwrap();
        (header, r.rest().to_vec())
    }

    /// Creates `path` (flags: 0 persistent, 1 ephemeral) and returns the error code.
    pub fn create(&mut self, xid: i32, path: &str, data: &[u8], flags: i32) -> i32 {
        self.send(xid, op::CREATE, |w| {
            CreateRequest {
                path: path.into(),
                data: Some(data.to_vec()),
                acl: vec![Acl::world_anyone(31)],
                flags,
                ttl_ms: None,
            }
            .encode(w)
        });
        let (header, _) = self.answer();
        assert_eq!(header.xid, xid);
        header.err
    }

    /// Sends getData for `path` (with a data watch when `watch`), without waiting.
    pub fn send_get_data(&mut self, xid: i32, path: &str, watch: bool) {
        self.send(xid, op::GET_DATA, |w| {
            w.string(path).bool(watch);
        });
    }
}

/// The data of a getData answer's body (the Stat after it is left out).
pub fn get_data_bytes(body: &[u8]) -> Vec<u8> {
    Reader::new(body).read_buffer().unwrap().to_vec()
}
