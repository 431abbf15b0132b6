//! Proves the secure client port (zoo.cfg `secureClientPort`, `ssl.*` with PEM files): a TLS
//! client (rustls, speaking jute with the crate's codec) creates, reads and watches beside
//! plain clients of the same server; a plain client on the TLS port is served nothing;
//! with `ssl.clientAuth=need` a client certificate from another CA, or none, is refused,
//! and with `want` a client without one is served; a verified certificate's subject is the
//! session's `x509:` identity in ACLs (and `X509AuthenticationProvider.superUser` passes
//! every check); changed certificate files are used for new connections without a
//! restart, while a broken replacement leaves the previous ones in use; every server of a
//! 3-server ensemble serves TLS, with watches and x509 ACLs across servers. Certificates are
//! made per test with the `openssl` CLI in a temp dir; servers bind free loopback ports and
//! stop on drop.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::jute::codes::{err, op, perms};
use coordinator::jute::records::{
    read_acl_vec, Acl, ConnectRequest, ConnectResponse, CreateRequest,
};
use coordinator::jute::Reader;
use coordinator::server::{ServerHandle, ServerOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::{get_data_bytes, write_frame, RawSession, Server, ANSWER_TIMEOUT};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Test certificates in a temp dir: CAs (`NAME.crt`) and leaves signed by one of them
/// (`NAME.pem`: key and certificate in one file, ZooKeeper's PEM key store form).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `openssl req` making a fresh P-256 key `NAME.key` and, with `rest`, what else it makes.
    fn new_key(&self, name: &str, subject: &str, rest: &[&str]) {
        let key = format!("{name}.key");
        let mut args = vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            subject,
        ];
        args.extend_from_slice(rest);
        openssl(self.dir.path(), &args);
    }

    fn ca(&self, name: &str) -> PathBuf {
        let crt = format!("{name}.crt");
        self.new_key(
            name,
            &format!("/CN={name}"),
            &["-x509", "-out", &crt, "-days", "2"],
        );
        self.path(&crt)
    }

    /// A leaf for `127.0.0.1`/`localhost` usable by servers and clients.
    fn leaf(&self, ca: &str, name: &str, subject: &str) -> PathBuf {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        let csr = format!("{name}.csr");
        self.new_key(name, subject, &["-out", &csr]);
        let (ca_crt, ca_key, crt) = (
            format!("{ca}.crt"),
            format!("{ca}.key"),
            format!("{name}.crt"),
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        let mut pem = std::fs::read(self.path(&format!("{name}.key"))).unwrap();
        pem.extend(std::fs::read(self.path(&format!("{name}.crt"))).unwrap());
        let out = self.path(&format!("{name}.pem"));
        std::fs::write(&out, pem).unwrap();
        out
    }
}

#[allow(deprecated)] // ring: see coordinator::tls
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS connection to `addr` trusting `ca`, presenting `client` (a PEM key store) if given.
/// The handshake completes on first use.
fn tls_connect(addr: &str, ca: &Path, client: Option<&Path>) -> TlsStream {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(pem) => {
            let chain = CertificateDer::pem_file_iter(pem)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pem).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    StreamOwned::new(conn, tcp)
}

fn connect_request() -> ConnectRequest {
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0,
        timeout_ms: 10_000,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: Some(false),
    }
}

/// Sends a connect request and reads the answer, reporting failure instead of panicking.
fn try_connect(mut stream: impl Read + Write) -> io::Result<ConnectResponse> {
    let mut w = coordinator::jute::Writer::frame();
    connect_request().encode(&mut w);
    stream.write_all(&w.finish_frame())?;
    stream.flush()?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body)?;
    ConnectResponse::decode(&body).map_err(|e| io::Error::other(format!("{e:?}")))
}

fn tls_session(addr: &str, ca: &Path, client: Option<&Path>) -> RawSession<TlsStream> {
    RawSession::over(tls_connect(addr, ca, client), 10_000)
}

fn create_with_acl(s: &mut RawSession<impl Read + Write>, xid: i32, path: &str, acl: Acl) -> i32 {
    s.send(xid, op::CREATE, |w| {
        CreateRequest {
            path: path.into(),
            data: Some(b"guarded".to_vec()),
            acl: vec![acl],
            flags: 0,
            ttl_ms: None,
        }
        .encode(w)
    });
    let (h, _) = s.answer();
    assert_eq!(h.xid, xid);
    h.err
}

fn get_data(s: &mut RawSession<impl Read + Write>, xid: i32, path: &str) -> (i32, Vec<u8>) {
    s.send_get_data(xid, path, false);
    let (h, body) = s.answer();
    assert_eq!(h.xid, xid);
    let data = if h.err == err::OK {
        get_data_bytes(&body)
    } else {
        Vec::new()
    };
    (h.err, data)
}

/// zoo.cfg lines for a secure port on a free loopback port.
fn secure_cfg(key_store: &Path, trust_store: &Path, client_auth: &str) -> String {
    format!(
        "secureClientPort=0\nsecureClientPortAddress=127.0.0.1\n\
         ssl.keyStore.location={}\nssl.keyStore.type=PEM\n\
         ssl.trustStore.location={}\nssl.trustStore.type=PEM\nssl.clientAuth={client_auth}\n",
        key_store.display(),
        trust_store.display()
    )
}

#[test]
fn tls_sessions_create_read_and_watch_beside_plain_ones() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server_pem = pki.leaf("ca", "server", "/CN=localhost");
    let client_pem = pki.leaf("ca", "client", "/CN=app/O=streambox");
    let server = Server::start(&secure_cfg(&server_pem, &ca, "need"));

    let mut tls = tls_session(&server.secure_addr(), &ca, Some(&client_pem));
    assert_eq!(tls.create(1, "/tls", b"over-tls", 0), err::OK);
    let mut plain = RawSession::connect(&server.addr(), 10_000);
    assert_eq!(
        get_data(&mut plain, 1, "/tls"),
        (err::OK, b"over-tls".to_vec())
    );

    // A watch set over TLS fires for a write made on the plain port.
    tls.send_get_data(2, "/tls", true);
    let (h, body) = tls.answer();
    assert_eq!((h.xid, h.err), (2, err::OK));
    assert_eq!(get_data_bytes(&body), b"over-tls");
    plain.send(2, op::SET_DATA, |w| {
        w.string("/tls").buffer(b"changed").i32(-1);
    });
    assert_eq!(plain.answer().0.err, err::OK);
    let (event, body) = tls.answer();
    assert_eq!(event.xid, -1, "a watch event");
    let mut r = Reader::new(&body);
    let (kind, _state, path) = (
        r.read_i32().unwrap(),
        r.read_i32().unwrap(),
        r.read_string().unwrap(),
    );
    assert_eq!((kind, path), (3, "/tls"), "NodeDataChanged");
    assert_eq!(
        get_data(&mut tls, 3, "/tls"),
        (err::OK, b"changed".to_vec())
    );
    // Large answers cross several TLS records intact.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(tls.create(4, "/big", &big, 0), err::OK);
    assert_eq!(get_data(&mut tls, 5, "/big"), (err::OK, big));
}

#[test]
fn the_secure_port_serves_no_plain_client() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server_pem = pki.leaf("ca", "server", "/CN=localhost");
    let server = Server::start(&format!(
        "{}4lw.commands.whitelist=ruok\n",
        secure_cfg(&server_pem, &ca, "none")
    ));
    // A jute connect request in the clear: no session, at most a TLS alert, then closed.
    let mut raw = TcpStream::connect(server.secure_addr()).unwrap();
    raw.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    write_frame(&mut raw, |w| connect_request().encode(w));
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "only a TLS alert record may come back, got {got:02x?}"
    );
    // A four-letter word in the clear is not answered either.
    let mut raw = TcpStream::connect(server.secure_addr()).unwrap();
    raw.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    raw.write_all(b"ruok").unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("imok"),
        "{got:02x?}"
    );
    // The plain port answers both; the TLS port answers a TLS client.
    assert_eq!(support::four_letter(&server.addr(), "ruok"), "imok");
    let mut plain = RawSession::connect(&server.addr(), 10_000);
    assert_eq!(plain.create(1, "/p", b"", 0), err::OK);
    let mut tls = tls_session(&server.secure_addr(), &ca, None);
    assert_eq!(get_data(&mut tls, 1, "/p").0, err::OK);
    let mut word = tls_connect(&server.secure_addr(), &ca, None);
    word.write_all(b"ruok").unwrap();
    let mut text = String::new();
    let _ = word.read_to_string(&mut text);
    assert_eq!(text, "imok", "four-letter words work over TLS");
}

#[test]
fn client_certificates_from_another_ca_or_none_are_refused_when_needed() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    pki.ca("rogue");
    let server_pem = pki.leaf("ca", "server", "/CN=localhost");
    let good = pki.leaf("ca", "good", "/CN=app");
    let rogue = pki.leaf("rogue", "rogue-client", "/CN=app");
    let need = Server::start(&secure_cfg(&server_pem, &ca, "need"));
    let addr = need.secure_addr();
    assert!(try_connect(tls_connect(&addr, &ca, Some(&good))).is_ok());
    let refused = try_connect(tls_connect(&addr, &ca, Some(&rogue)));
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );
    let refused = try_connect(tls_connect(&addr, &ca, None));
    assert!(refused.is_err(), "no certificate: {refused:?}");
    // A client that does not trust the server's CA refuses it too.
    let rogue_ca = pki.path("rogue.crt");
    assert!(try_connect(tls_connect(&addr, &rogue_ca, Some(&good))).is_err());

    let want = Server::start(&secure_cfg(&server_pem, &ca, "want"));
    let addr = want.secure_addr();
    assert!(
        try_connect(tls_connect(&addr, &ca, None)).is_ok(),
        "want: none is fine"
    );
    assert!(try_connect(tls_connect(&addr, &ca, Some(&good))).is_ok());
    let refused = try_connect(tls_connect(&addr, &ca, Some(&rogue)));
    assert!(
        refused.is_err(),
        "want: a bad certificate is still refused: {refused:?}"
    );
}

#[test]
fn a_client_certificate_subject_is_an_x509_identity_in_acls() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server_pem = pki.leaf("ca", "server", "/CN=localhost");
    let app = pki.leaf("ca", "app", "/O=streambox/OU=apps/CN=app");
    let other = pki.leaf("ca", "other", "/O=streambox/OU=apps/CN=other");
    let admin = pki.leaf("ca", "admin", "/O=streambox/CN=admin");
    let server = Server::start(&format!(
        "{}X509AuthenticationProvider.superUser=CN=admin,O=streambox\n",
        secure_cfg(&server_pem, &ca, "need")
    ));
    let addr = server.secure_addr();
    let mut app_s = tls_session(&addr, &ca, Some(&app));
    // RFC 2253 order, as ZooKeeper's X509AuthenticationProvider names it.
    let id = "CN=app,OU=apps,O=streambox";
    let acl = |scheme: &str, id: &str| Acl {
        perms: perms::ALL,
        scheme: scheme.into(),
        id: id.into(),
    };
    assert_eq!(
        create_with_acl(&mut app_s, 1, "/secret", acl("x509", id)),
        err::OK
    );
    assert_eq!(
        get_data(&mut app_s, 2, "/secret"),
        (err::OK, b"guarded".to_vec())
    );

    let mut other_s = tls_session(&addr, &ca, Some(&other));
    assert_eq!(get_data(&mut other_s, 1, "/secret").0, err::NO_AUTH);
    let mut plain = RawSession::connect(&server.addr(), 10_000);
    assert_eq!(get_data(&mut plain, 1, "/secret").0, err::NO_AUTH);
    let mut admin_s = tls_session(&addr, &ca, Some(&admin));
    assert_eq!(get_data(&mut admin_s, 1, "/secret").0, err::OK, "superUser");

    // `auth` stands for the caller's x509 identity.
    assert_eq!(
        create_with_acl(&mut app_s, 3, "/mine", acl("auth", "")),
        err::OK
    );
    app_s.send(4, op::GET_ACL, |w| {
        w.string("/mine");
    });
    let (h, body) = app_s.answer();
    assert_eq!(h.err, err::OK);
    let stored = read_acl_vec(&mut Reader::new(&body)).unwrap();
    assert_eq!(stored, vec![acl("x509", id)]);
    assert_eq!(get_data(&mut other_s, 2, "/mine").0, err::NO_AUTH);
}

/// Waits (bounded) until a client trusting only `ca` gets a session on `addr`.
fn wait_until_served(addr: &str, ca: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_connect(tls_connect(addr, ca, None)).is_err() {
        assert!(Instant::now() < deadline, "{what} was never served");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn changed_certificate_files_are_used_for_new_connections_without_restart() {
    let pki = Pki::new();
    let ca1 = pki.ca("ca1");
    let ca2 = pki.ca("ca2");
    let first = pki.leaf("ca1", "server1", "/CN=localhost");
    let second = pki.leaf("ca2", "server2", "/CN=localhost");
    let key_store = pki.path("server.pem");
    std::fs::copy(&first, &key_store).unwrap();
    let server = Server::start(&secure_cfg(&key_store, &ca1, "none"));
    let addr = server.secure_addr();
    let mut before = tls_session(&addr, &ca1, None);
    assert_eq!(before.create(1, "/r", b"x", 0), err::OK);

    // Replaced in place (as an editor or `cp` does): new connections get the new chain.
    std::fs::copy(&second, &key_store).unwrap();
    wait_until_served(&addr, &ca2, "the new certificate");
    assert!(
        try_connect(tls_connect(&addr, &ca1, None)).is_err(),
        "the old one is gone"
    );
    // The connection opened before the reload goes on with its session.
    assert_eq!(get_data(&mut before, 2, "/r"), (err::OK, b"x".to_vec()));

    // A broken replacement is refused; the last good files stay in use.
    std::fs::write(&key_store, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let mut s = tls_session(&addr, &ca2, None);
        assert_eq!(get_data(&mut s, 1, "/r").0, err::OK);
        std::thread::sleep(Duration::from_millis(200));
    }
    // And a good file after it is picked up again.
    std::fs::copy(&first, &key_store).unwrap();
    wait_until_served(&addr, &ca1, "the restored certificate");
}

#[test]
fn bad_tls_files_stop_the_server_from_starting_with_the_file_named() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let dir = tempfile::tempdir().unwrap();
    let no_key = pki.path("ca.crt");
    let text = format!(
        "tickTime=200\ndataDir={}\nclientPort=0\nclientPortAddress=127.0.0.1\n{}",
        dir.path().display(),
        secure_cfg(&no_key, &ca, "need")
    );
    let zoo = coordinator::config::ZooConfig::parse(&text, Path::new("t.cfg")).unwrap();
    let e = match coordinator::server::start(ServerOptions::new(zoo)) {
        Ok(h) => {
            h.shutdown();
            panic!("started with a key store that holds no key");
        }
        Err(e) => e.to_string(),
    };
    assert!(e.contains("ca.crt") && e.contains("private key"), "{e}");
}

/// Three in-process servers (zoo.cfg `server.N` + `myid`), each with its own secure port;
/// shut down on drop.
struct Ensemble {
    members: Vec<(Option<ServerHandle>, tempfile::TempDir)>,
}

impl Ensemble {
    fn start(secure: &str) -> Self {
        let peer_ports: Vec<u16> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let mut ens = Ensemble {
            members: Vec::new(),
        };
        for i in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("myid"), format!("{}\n", i + 1)).unwrap();
            let mut text = format!(
                "tickTime=200\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort=0\n\
                 clientPortAddress=127.0.0.1\n{secure}",
                dir.path().display()
            );
            for (j, port) in peer_ports.iter().enumerate() {
                text.push_str(&format!("server.{}=127.0.0.1:{port}:{}\n", j + 1, port + 1));
            }
            let cfg = dir.path().join("zoo.cfg");
            std::fs::write(&cfg, text).unwrap();
            let zoo = coordinator::config::ZooConfig::load(&cfg).unwrap();
            let handle = coordinator::server::start(ServerOptions::new(zoo)).unwrap();
            ens.members.push((Some(handle), dir));
        }
        ens
    }

    fn secure_addr(&self, i: usize) -> String {
        let h = self.members[i].0.as_ref().unwrap();
        h.secure_addr().unwrap().to_string()
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for (h, _) in &mut self.members {
            if let Some(h) = h.take() {
                h.shutdown();
            }
        }
    }
}

/// A TLS session on `addr` once its server serves (servers in election close connections).
fn tls_session_when_serving(addr: &str, ca: &Path, client: &Path) -> RawSession<TlsStream> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while try_connect(tls_connect(addr, ca, Some(client))).is_err() {
        assert!(
            Instant::now() < deadline,
            "{addr} never served a TLS session"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tls_session(addr, ca, Some(client))
}

#[test]
fn every_server_of_an_ensemble_serves_tls_with_x509_acls() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server_pem = pki.leaf("ca", "server", "/CN=localhost");
    let app = pki.leaf("ca", "app", "/O=streambox/CN=app");
    let other = pki.leaf("ca", "other", "/O=streambox/CN=other");
    let ens = Ensemble::start(&secure_cfg(&server_pem, &ca, "need"));
    let mut s0 = tls_session_when_serving(&ens.secure_addr(0), &ca, &app);
    let mut s1 = tls_session_when_serving(&ens.secure_addr(1), &ca, &app);
    let mut s2 = tls_session_when_serving(&ens.secure_addr(2), &ca, &app);
    let id = Acl {
        perms: perms::ALL,
        scheme: "x509".into(),
        id: "CN=app,O=streambox".into(),
    };
    assert_eq!(create_with_acl(&mut s0, 1, "/e", id), err::OK);
    // Server 1 catches up, then watches; a write through server 2 fires the watch.
    s1.send(1, op::SYNC, |w| {
        w.string("/e");
    });
    assert_eq!(s1.answer().0.err, err::OK);
    s1.send_get_data(2, "/e", true);
    let (h, body) = s1.answer();
    assert_eq!((h.xid, h.err), (2, err::OK));
    assert_eq!(get_data_bytes(&body), b"guarded");
    s2.send(1, op::SET_DATA, |w| {
        w.string("/e").buffer(b"two").i32(-1);
    });
    assert_eq!(
        s2.answer().0.err,
        err::OK,
        "the leader accepts app's forwarded identity"
    );
    let (event, _) = s1.answer();
    assert_eq!(event.xid, -1, "the watch on server 1 fired");
    assert_eq!(get_data(&mut s1, 3, "/e"), (err::OK, b"two".to_vec()));
    // Another subject: refused for reads on its server and for writes at the leader.
    let mut o = tls_session_when_serving(&ens.secure_addr(2), &ca, &other);
    assert_eq!(get_data(&mut o, 1, "/e").0, err::NO_AUTH);
    o.send(2, op::SET_DATA, |w| {
        w.string("/e").buffer(b"other").i32(-1);
    });
    assert_eq!(o.answer().0.err, err::NO_AUTH);
}
