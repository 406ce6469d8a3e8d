//! Access control against a real `noiseda serve` process: API keys with scopes, TLS and
//! mutual TLS with certificates made in the test, open health and reflection, refusals
//! logged without the secret.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::{serve_refuses, Server};
use noiseda::grpc::auth::Remote;
use noiseda::pb;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::Code;

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A client certificate from a CA the server does not trust.
    rogue_cert: PathBuf,
    rogue_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pki(dir: &Path) -> Pki {
    let authority = ca("noiseda test CA");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, authority.pem()).unwrap();
    let (server_cert, server_key) = leaf(dir, "server", &["localhost", "127.0.0.1"], &authority);
    let (client_cert, client_key) = leaf(dir, "client", &["client.test"], &authority);
    let rogue = ca("someone else");
    let (rogue_cert, rogue_key) = leaf(dir, "rogue", &["rogue.test"], &rogue);
    Pki {
        ca: ca_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

/// `noiseda keygen` appends an entry to the key file and prints the key.
fn keygen(file: &Path, name: &str, scopes: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_noiseda"))
        .args(["keygen", "--name", name, "--scopes", scopes, "--key-file"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("nda_") && key.len() > 40, "{key}");
    key
}

fn remote(server: &Server, pki: &Pki, key: Option<&str>, client_cert: bool) -> Remote {
    Remote {
        server: server.addr.replace("http://", "https://"),
        api_key: key.map(str::to_string),
        tls_ca: Some(pki.ca.clone()),
        tls_cert: client_cert.then(|| pki.client_cert.clone()),
        tls_key: client_cert.then(|| pki.client_key.clone()),
    }
}

async fn list_jobs(r: &Remote) -> Result<usize, tonic::Status> {
    let ch = r
        .channel()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = pb::training_client::TrainingClient::with_interceptor(ch, r.interceptor().unwrap());
    c.list_jobs(pb::ListJobsRequest::default())
        .await
        .map(|r| r.into_inner().jobs.len())
}

async fn list_models(r: &Remote) -> Result<usize, tonic::Status> {
    let ch = r.channel().await.unwrap();
    let mut c = pb::models_client::ModelsClient::with_interceptor(ch, r.interceptor().unwrap());
    c.list_models(pb::ListModelsRequest::default())
        .await
        .map(|r| r.into_inner().models.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_scopes_and_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let keys = tmp.path().join("keys.toml");
    let trainer = keygen(&keys, "trainer", "training");
    let restorer = keygen(&keys, "restorer", "restore");
    let text = std::fs::read_to_string(&keys).unwrap();
    assert!(
        !text.contains(&trainer) && !text.contains(&restorer),
        "the key file holds hashes, not keys"
    );
    let server = Server::start(
        &tmp.path().join("data"),
        &[
            "--api-keys",
            keys.to_str().unwrap(),
            "--tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--tls-key",
            pki.server_key.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca.to_str().unwrap(),
        ],
    );

    // Health stays open (no key), over mutual TLS.
    let open = remote(&server, &pki, None, true);
    let ch = open.channel().await.unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "noiseda.v1.Training".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    // So does reflection.
    {
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, ServerReflectionRequest,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(format!("{first:?}").contains("noiseda.v1.Training"));
    }

    // Training: no key, a wrong key, a key without the scope, the right key.
    let e = list_jobs(&open).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(
        e.message().contains("authorization: Bearer"),
        "{}",
        e.message()
    );
    let e = list_jobs(&remote(&server, &pki, Some("nda_not-a-key"), true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = list_jobs(&remote(&server, &pki, Some(&restorer), true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e
        .message()
        .contains("`restorer` lacks the `training` scope"));
    assert_eq!(
        list_jobs(&remote(&server, &pki, Some(&trainer), true))
            .await
            .unwrap(),
        0
    );
    // Restore side: the restore key may list models, the training key may not.
    assert_eq!(
        list_models(&remote(&server, &pki, Some(&restorer), true))
            .await
            .unwrap(),
        0
    );
    let e = list_models(&remote(&server, &pki, Some(&trainer), true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // mTLS: no client certificate, or one from another CA, gets no call through; neither does
    // plain HTTP/2 without TLS.
    for (cert, key) in [
        (None, None),
        (Some(pki.rogue_cert.clone()), Some(pki.rogue_key.clone())),
    ] {
        let r = Remote {
            tls_cert: cert,
            tls_key: key,
            ..remote(&server, &pki, Some(&trainer), false)
        };
        assert!(list_jobs(&r).await.is_err(), "{r:?} got through");
    }
    let plain = Remote {
        server: server.addr.clone(),
        api_key: Some(trainer.clone()),
        ..Remote::default()
    };
    assert!(list_jobs(&plain).await.is_err(), "plain HTTP/2 got through");

    // The CLI client with the same flags.
    let cli = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_noiseda"))
            .args(["jobs", "list", "--server"])
            .arg(server.addr.replace("http://", "https://"))
            .arg("--tls-ca")
            .arg(&pki.ca)
            .arg("--tls-cert")
            .arg(&pki.client_cert)
            .arg("--tls-key")
            .arg(&pki.client_key)
            .env("NOISEDA_API_KEY", key)
            .output()
            .unwrap()
    };
    let ok = cli(&trainer);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = cli(&restorer);
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("permission denied"), "{msg}");

    // Every refusal is logged with the peer and the method, never with a key.
    let log = server.log_text();
    assert!(log.matches("call refused").count() >= 5, "{log}");
    assert!(log.contains("/noiseda.v1.Training/ListJobs"));
    for secret in [&trainer, &restorer, "nda_not-a-key"] {
        assert!(!log.contains(secret), "the log holds a key");
    }
}

#[test]
fn bad_key_files_and_tls_files_stop_the_server_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\nname = \"x\"\nscopes = [\"admin\"]\nsecret = \"0123456789abcdef\"\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let msg = serve_refuses(&data, &["--api-keys", keys.to_str().unwrap()]);
    assert!(msg.contains("keys.toml") && msg.contains("admin"), "{msg}");
    let missing = tmp.path().join("nope.pem");
    let missing = missing.to_str().unwrap();
    let msg = serve_refuses(&data, &["--tls-cert", missing, "--tls-key", missing]);
    assert!(msg.contains("nope.pem"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_data_paths_stay_inside_the_data_roots() {
    use common::server::{start_request, tiny_toml};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("datasets");
    let clean = common::write_photos(&root.join("clean"), 2, 40, 40);
    let secret = common::write_photos(&tmp.path().join("secret"), 2, 40, 40);
    std::os::unix::fs::symlink(&secret, root.join("link-out")).unwrap();
    std::os::unix::fs::symlink(&clean, root.join("link-in")).unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--data-roots", root.to_str().unwrap()],
    );
    let mut c = server.client().await;
    let submit = |path: PathBuf| start_request(&tiny_toml("p", &path, 1, 1, None), "");
    let refused = [
        (root.join("../secret"), "must not contain `..`"),
        (root.join("link-out"), "outside the server's data roots"),
        (secret.clone(), "outside the server's data roots"),
        (
            tmp.path().join("no-such-dir"),
            "outside the server's data roots",
        ),
        (root.join("no-such-dir"), "does not exist"),
    ];
    for (path, why) in refused {
        let e = c.start_job(submit(path.clone())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{path:?}: {e:?}");
        assert!(
            e.message().contains("data.synthetic.clean"),
            "{}",
            e.message()
        );
        assert!(e.message().contains(why), "{path:?}: {}", e.message());
    }
    // Inside the root, directly or through a symlink that stays inside: accepted, and the
    // job reads the checked real path.
    for path in [clean.clone(), root.join("link-in")] {
        let job = c.start_job(submit(path)).await.unwrap().into_inner();
        let real = clean.canonicalize().unwrap();
        assert!(
            job.resolved_spec
                .contains(&format!("clean = \"{}\"", real.display())),
            "{}",
            job.resolved_spec
        );
    }
    let missing_root = tmp.path().join("missing-root");
    let msg = serve_refuses(
        &tmp.path().join("data2"),
        &["--data-roots", missing_root.to_str().unwrap()],
    );
    assert!(msg.contains("--data-roots"), "{msg}");
}
