//! Proves ZooKeeper's access control with a real Rust client (`zookeeper-client` 0.11)
//! against a standalone coordinator started in-process on a free loopback port: digest
//! authentication, `auth`/`digest`/`ip`/`world` ACL entries, NO_AUTH on every operation a
//! principal lacks the bit for, INVALID_ACL, setACL/getACL with versions and redaction, an
//! unknown scheme refused (AUTH_FAILED), the configured super digest passing every check, and
//! ACLs surviving a restart (snapshot and log). The server is shut down at the end, also when
//! an assertion fails.

mod support;

use std::time::Duration;

use coordinator::acl::digest_of;
use support::Server;
use zookeeper_client as zk;

async fn connect(addr: &str, auth: Option<&str>) -> zk::Client {
    let mut connector = zk::Client::connector().with_session_timeout(Duration::from_secs(4));
    if let Some(user_password) = auth {
        connector = connector.with_auth("digest", user_password.as_bytes());
    }
    tokio::time::timeout(Duration::from_secs(10), connector.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

fn no_auth<T: std::fmt::Debug>(result: Result<T, zk::Error>) {
    assert!(
        matches!(result, Err(zk::Error::NoAuth)),
        "expected NoAuth, got {result:?}"
    );
}

fn persistent(acls: &[zk::Acl]) -> zk::CreateOptions<'_> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::new(acls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_ip_and_super_acls_are_enforced() {
    let super_digest = digest_of("root:rootpw");
    let server = Server::start(&format!(
        "DigestAuthenticationProvider.superDigest={super_digest}\n"
    ));
    let addr = server.addr();
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        let alice = connect(&addr, Some("alice:secret")).await;
        let eve = connect(&addr, None).await;

        // `auth` stands for alice's digest; world may read /pub only.
        let creator_all = [zk::Acl::new(zk::Permission::ALL, zk::AuthId::authed())];
        alice
            .create("/secret", b"s", &persistent(&creator_all))
            .await
            .unwrap();
        let (acl, stat) = alice.get_acl("/secret").await.unwrap();
        assert_eq!(acl.len(), 1);
        assert_eq!(acl[0].scheme(), "digest");
        assert_eq!(acl[0].id(), digest_of("alice:secret"));
        assert_eq!(stat.aversion, 0);

        no_auth(eve.get_data("/secret").await);
        no_auth(eve.set_data("/secret", b"x", None).await);
        no_auth(eve.get_children("/secret").await);
        no_auth(eve.check_stat("/secret").await);
        no_auth(eve.get_acl("/secret").await);
        no_auth(
            eve.create("/secret/child", b"", &persistent(&zk::Acls::anyone_all()))
                .await,
        );
        alice
            .create("/secret/child", b"", &persistent(&creator_all))
            .await
            .unwrap();
        no_auth(eve.delete("/secret/child", None).await);

        // A wrong password proves a different digest: still refused.
        eve.auth("digest", b"alice:wrong").await.unwrap();
        no_auth(eve.get_data("/secret").await);
        // The right one opens it.
        eve.auth("digest", b"alice:secret").await.unwrap();
        assert_eq!(eve.get_data("/secret").await.unwrap().0, b"s");
        let users = eve.list_auth_users().await.unwrap();
        assert!(users
            .iter()
            .any(|u| u.scheme() == "digest" && u.user() == "alice"));
        assert!(users
            .iter()
            .any(|u| u.scheme() == "ip" && u.user() == "127.0.0.1"));

        // READ alone: getACL answers with the hash hidden; ADMIN is needed for setACL.
        let bob_read = [
            zk::Acl::new(
                zk::Permission::ALL,
                zk::AuthId::new("digest", &digest_of("alice:secret")),
            ),
            zk::Acl::new(
                zk::Permission::READ,
                zk::AuthId::new("digest", &digest_of("bob:pw")),
            ),
        ];
        alice.set_acl("/secret", &bob_read, Some(0)).await.unwrap();
        assert!(matches!(
            alice.set_acl("/secret", &bob_read, Some(0)).await,
            Err(zk::Error::BadVersion)
        ));
        let bob = connect(&addr, Some("bob:pw")).await;
        assert_eq!(bob.get_data("/secret").await.unwrap().0, b"s");
        no_auth(bob.set_data("/secret", b"x", None).await);
        let (shown, stat) = bob.get_acl("/secret").await.unwrap();
        assert_eq!(stat.aversion, 1);
        assert!(shown.iter().all(|a| a.id().ends_with(":x")), "{shown:?}");
        no_auth(bob.set_acl("/secret", &zk::Acls::anyone_all(), None).await);

        // ip entries match the connection's address; a network that excludes it does not.
        let lan_only = [zk::Acl::new(
            zk::Permission::ALL,
            zk::AuthId::new("ip", "10.0.0.0/8"),
        )];
        let loopback = [zk::Acl::new(
            zk::Permission::READ,
            zk::AuthId::new("ip", "127.0.0.0/8"),
        )];
        alice
            .create("/lan", b"", &persistent(&lan_only))
            .await
            .unwrap();
        alice
            .create("/local", b"l", &persistent(&loopback))
            .await
            .unwrap();
        no_auth(eve.get_data("/lan").await);
        assert_eq!(eve.get_data("/local").await.unwrap().0, b"l");

        // ACLs the server cannot honour.
        let anon = connect(&addr, None).await;
        for bad in [
            vec![zk::Acl::new(zk::Permission::ALL, zk::AuthId::authed())],
            vec![zk::Acl::new(
                zk::Permission::ALL,
                zk::AuthId::new("digest", "nohash"),
            )],
            vec![zk::Acl::new(
                zk::Permission::ALL,
                zk::AuthId::new("ip", "10.0.0.300"),
            )],
            vec![zk::Acl::new(
                zk::Permission::ALL,
                zk::AuthId::new("sasl", "bob"),
            )],
        ] {
            let r = anon.create("/bad", b"", &persistent(&bad)).await;
            assert!(matches!(r, Err(zk::Error::InvalidAcl)), "{bad:?}: {r:?}");
        }

        // The super user passes every check.
        let root = connect(&addr, Some("root:rootpw")).await;
        assert_eq!(root.get_data("/lan").await.unwrap().0, b"");
        root.set_acl("/lan", &zk::Acls::anyone_all(), None)
            .await
            .unwrap();
        assert!(eve.get_data("/lan").await.is_ok());

        // An unknown scheme: AUTH_FAILED, and the session is unusable afterwards.
        let r = anon.auth("x509", b"").await;
        assert!(r.is_err(), "unknown scheme accepted: {r:?}");
    })
    .await;
    drop(server);
    result.expect("acl test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // snapCount=2: the restart reads a snapshot and the log after it.
    let extra = format!("dataDir={}\nsnapCount=2\n", dir.path().display());
    let digest = digest_of("alice:secret");
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        {
            let server = Server::start(&extra);
            let alice = connect(&server.addr(), Some("alice:secret")).await;
            let mine = [zk::Acl::new(zk::Permission::ALL, zk::AuthId::authed())];
            for i in 0..5 {
                alice
                    .create(&format!("/n{i}"), b"", &persistent(&mine))
                    .await
                    .unwrap();
            }
            alice
                .set_acl(
                    "/n4",
                    &[zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone())],
                    None,
                )
                .await
                .unwrap();
            drop(alice);
        }
        let server = Server::start(&extra);
        let eve = connect(&server.addr(), None).await;
        no_auth(eve.get_data("/n0").await);
        assert!(eve.get_data("/n4").await.is_ok());
        let alice = connect(&server.addr(), Some("alice:secret")).await;
        let (acl, _) = alice.get_acl("/n3").await.unwrap();
        assert_eq!((acl[0].scheme(), acl[0].id()), ("digest", digest.as_str()));
    })
    .await;
    result.expect("restart test timed out");
}
