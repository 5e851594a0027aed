//! Security: AUTH with a password and with a least-privilege ACL user, TLS
//! with a CA made in the test, secrets kept out of messages, and hostile
//! resource names kept inside the key prefix.

mod support;

use std::time::Duration;

use redlock::tls::{rustls, TlsConnector};
use redlock::{Error, LockOptions, Redlock};
use support::{everywhere, quick, Nodes, RedisServer};

async fn lock_once(engine: &Redlock) -> u64 {
    engine
        .lock("secured", |ctx| async move { ctx.fencing_token() })
        .await
        .expect("lock on the secured node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_works_and_a_wrong_password_is_a_clear_error() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}", server.port());
    let engine = Redlock::builder().nodes([url]).build().await.unwrap();
    assert_eq!(lock_once(&engine).await, 1);
    assert!(!format!("{engine:?}").contains("s3cret-pw"), "{engine:?}");

    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let err = Redlock::builder()
        .nodes([wrong])
        .connect_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(
        !err.to_string().contains("wrong-pw"),
        "the password is masked: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_acl_user_is_enough() {
    // The lock needs its own key and channel patterns, the connection
    // commands, the script commands, the commands its scripts run, and
    // pub/sub for release notifications.
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "locker",
        "on",
        ">locker-pw",
        "~redlock_*",
        "~redlock-fence_*",
        "resetchannels",
        "&redlock_*",
        "+@connection",
        "+eval",
        "+evalsha",
        "+script|load",
        "+get",
        "+set",
        "+incr",
        "+del",
        "+pexpire",
        "+publish",
        "+subscribe",
        "+unsubscribe",
    ]);
    let url = format!("redis://locker:locker-pw@127.0.0.1:{}", server.port());
    let engine = Redlock::builder()
        .app("acl")
        .nodes([url])
        .build()
        .await
        .unwrap();
    assert_eq!(lock_once(&engine).await, 1);
    support::every_kind_of_lock(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let pki = Pki::new();
    let tls_port = support::spare_port();
    let dir = std::env::temp_dir().join(format!("redlock-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.server_pem).unwrap();
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    let engine = Redlock::builder()
        .nodes([url.as_str()])
        .tls(pki.connector())
        .build()
        .await
        .expect("TLS connection trusting the test CA");
    assert_eq!(lock_once(&engine).await, 1);
    // The key went through TLS to the same server.
    let counter = server.client().await;
    let seen: Option<u64> =
        fred::prelude::KeysInterface::get(&counter, "redlock-fence_{app}:~:secured")
            .await
            .unwrap();
    assert_eq!(seen, Some(1));

    // Without the CA, the server's certificate is not trusted.
    let err = Redlock::builder()
        .nodes([url.as_str()])
        .connect_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_values_stay_secret_and_foreign_locks_untouchable() {
    let nodes = Nodes::start(3);
    let a = nodes.engine("t", quick()).await;
    let b = nodes.engine("t", quick()).await;
    let lock = a.acquire(&["s"], LockOptions::default()).await.unwrap();
    let value = nodes.values_when("redlock_{t}:~:s", everywhere).await[0]
        .clone()
        .unwrap();
    let shown = format!("{lock:?} {:?}", lock.context());
    assert!(
        !shown.contains(&value),
        "the full value is never shown: {shown}"
    );
    assert!(
        shown.contains(&value[..6]),
        "a prefix identifies it: {shown}"
    );

    // Another client can neither take nor release it.
    let err = b
        .acquire(
            &["s"],
            LockOptions::default().wait(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAcquired { .. }));
    assert!(!err.to_string().contains(&value), "{err}");
    assert_eq!(
        nodes.values("redlock_{t}:~:s").await,
        vec![Some(value.clone()); 3]
    );
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_resource_names_stay_inside_the_prefix() {
    let nodes = Nodes::start(1);
    let engine = nodes.engine("t", quick()).await;
    // Printable but tricky: each is locked under exactly prefix + name, and
    // none collides with another resource, an instance, or a fencing counter.
    let tricky = [
        "a:b",
        ":",
        "{hash}tag",
        "}{",
        "~:x",
        "redlock_{t}:~:x",
        "redlock-fence_{t}:~:x",
        "ünï\u{200b}cødé",
    ];
    let mut locks = Vec::new();
    for name in tricky {
        let lock = engine
            .acquire(
                &[name],
                LockOptions::default().wait(Duration::from_millis(100)),
            )
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let key = format!("redlock_{{t}}:~:{name}");
        assert!(
            nodes.values(&key).await[0].is_some(),
            "{name:?} locked under {key:?}"
        );
        locks.push(lock);
    }
    // All held at once: no two of them shared a key.
    assert_eq!(locks.len(), tricky.len());
    for lock in locks {
        lock.release().await.unwrap();
    }
    let long = "k".repeat(1 << 20);
    for bad in ["new\nline", "\r", "\u{1b}[31m", "", long.as_str()] {
        let err = engine
            .acquire(&[bad], LockOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidResource { .. }), "{bad:?}");
        assert!(
            err.to_string().len() < 600,
            "the error does not echo a huge name"
        );
    }
    for bad in ["a:b", "a b", "x\n"] {
        let err = engine
            .acquire(&["r"], LockOptions::default().instance(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOptions {
                    option: "instance",
                    ..
                }
            ),
            "{bad:?}"
        );
    }
}

/// A CA and a server certificate for 127.0.0.1, made fresh for the test.
struct Pki {
    ca_der: Vec<u8>,
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "redlock test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        Pki {
            ca_der: ca.der().to_vec(),
            ca_pem: ca.pem(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.ca_der.clone()))
            .unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(config)
    }
}
