//! Access control: API keys with scopes (a tower layer in front of every gRPC service), the
//! key file, TLS / mTLS settings, and the client side that sends a key.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::{Error, Result};

/// What a key may do. Health and reflection need none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The Training service: submit, list, follow, cancel, export.
    Training,
    /// The Restore service and the read-only Models calls (ListModels, ServerInfo).
    Restore,
    /// Model management: LoadModel, UnloadModel, SetDefault.
    Models,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Training => "training",
            Scope::Restore => "restore",
            Scope::Models => "models",
        }
    }

    /// The scope a gRPC method path needs; `None` for open services (health, reflection) and
    /// paths no service serves (they get UNIMPLEMENTED).
    pub fn for_path(path: &str) -> Option<Scope> {
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        match service {
            "noiseda.v1.Training" => Some(Scope::Training),
            "noiseda.v1.Restore" => Some(Scope::Restore),
            "noiseda.v1.Models" => Some(match method {
                "ListModels" | "ServerInfo" => Scope::Restore,
                _ => Scope::Models,
            }),
            // The Open Inference Protocol: its liveness/readiness are health checks (open),
            // the rest is restoring.
            "inference.GRPCInferenceService" => match method {
                "ServerLive" | "ServerReady" => None,
                _ => Some(Scope::Restore),
            },
            _ => None,
        }
    }
}

/// One entry of the key file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// Logged in place of the key.
    name: String,
    scopes: Vec<Scope>,
    /// Hex SHA-256 of the key (what `noiseda keygen` prints), or the key itself.
    sha256: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

/// The API keys a server accepts, by the SHA-256 of the key (the secrets themselves are not
/// kept in memory when the file holds hashes).
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: HashMap<[u8; 32], (String, Vec<Scope>)>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ApiKeys {
    /// Reads a key file (TOML, `[[key]]` entries with `name`, `scopes` and `sha256` or
    /// `secret`). Every problem is named with its entry.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Invalid {
                key: Some(key),
                msg,
            } => Error::invalid(format!("--api-keys {}: {key}", path.display()), msg),
            e => e,
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        let file: KeyFile = toml::from_str(text)
            .map_err(|e| Error::invalid("key file", e.message().to_string()))?;
        if file.key.is_empty() {
            return Err(Error::invalid("key", "the file has no [[key]] entries"));
        }
        let mut keys = HashMap::new();
        for (i, k) in file.key.into_iter().enumerate() {
            let at = |field: &str| format!("key[{i}] ({}).{field}", k.name);
            if k.name.is_empty() {
                return Err(Error::invalid(
                    format!("key[{i}].name"),
                    "must not be empty",
                ));
            }
            if k.scopes.is_empty() {
                return Err(Error::invalid(
                    at("scopes"),
                    "give at least one of training, restore, models",
                ));
            }
            let d = match (&k.sha256, &k.secret) {
                (Some(h), None) => {
                    let h = h.trim().to_ascii_lowercase();
                    let bytes: Option<Vec<u8>> = (h.len() == 64)
                        .then(|| {
                            (0..32)
                                .map(|j| u8::from_str_radix(&h[2 * j..2 * j + 2], 16).ok())
                                .collect()
                        })
                        .flatten();
                    let bytes = bytes.ok_or_else(|| {
                        Error::invalid(at("sha256"), "must be 64 hex digits (a SHA-256)")
                    })?;
                    <[u8; 32]>::try_from(bytes).expect("32 bytes")
                }
                (None, Some(s)) if s.len() >= 16 => digest(s),
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        at("secret"),
                        "keys shorter than 16 characters are refused",
                    ))
                }
                _ => {
                    return Err(Error::invalid(
                        at("sha256"),
                        "give exactly one of sha256 and secret",
                    ))
                }
            };
            if keys.insert(d, (k.name.clone(), k.scopes)).is_some() {
                return Err(Error::invalid(at("sha256"), "the same key appears twice"));
            }
        }
        Ok(Self { keys })
    }

    /// Checks the `authorization` metadata of a call to `path`; returns the key's name.
    pub fn check(&self, path: &str, authorization: Option<&[u8]>) -> Result<Option<String>> {
        let Some(scope) = Scope::for_path(path) else {
            return Ok(None);
        };
        let header = authorization.ok_or_else(|| {
            Error::Unauthenticated(
                "no API key: send the metadata `authorization: Bearer <key>`".into(),
            )
        })?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| {
                let (kind, token) = h.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then_some(token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Unauthenticated(
                    "malformed `authorization` metadata: expected `Bearer <key>`".into(),
                )
            })?;
        let (name, scopes) = self
            .keys
            .get(&digest(token))
            .ok_or_else(|| Error::Unauthenticated("unknown API key".into()))?;
        if !scopes.contains(&scope) {
            return Err(Error::Denied(format!(
                "API key `{name}` lacks the `{}` scope that {path} needs",
                scope.name()
            )));
        }
        Ok(Some(name.clone()))
    }
}

/// A new random key and the key-file entry that accepts it.
pub fn keygen(name: &str, scopes: &[Scope]) -> (String, String) {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!("nda_{}", hex(&bytes));
    let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{}\"", s.name())).collect();
    let entry = format!(
        "[[key]]\nname = \"{name}\"\nscopes = [{}]\nsha256 = \"{}\"\n",
        scopes.join(", "),
        hex(&digest(&key))
    );
    (key, entry)
}

/// Tower layer that checks API keys in front of the gRPC services (a no-op without keys).
#[derive(Clone)]
pub struct AuthLayer {
    keys: Option<Arc<ApiKeys>>,
}

impl AuthLayer {
    pub fn new(keys: Option<Arc<ApiKeys>>) -> Self {
        Self { keys }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    keys: Option<Arc<ApiKeys>>,
}

fn peer(req: &http::Request<Body>) -> String {
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|t| t.get_ref().remote_addr())
        })
        .map_or_else(|| "unknown".into(), |a| a.to_string())
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = std::result::Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Auth<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if let Some(keys) = &self.keys {
            let auth = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if let Err(e) = keys.check(req.uri().path(), auth) {
                // The key itself is never logged.
                tracing::warn!(peer = %peer(&req), method = %req.uri().path(), reason = %e, "call refused");
                let status = tonic::Status::from(e);
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The inner service was polled ready; take it and leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

/// TLS files of `noiseda serve`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, clients must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    pub fn server_config(&self) -> Result<tonic::transport::ServerTlsConfig> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(config)
    }
}

/// How a client reaches a server: address, optional API key, optional CA and client identity.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    pub server: String,
    pub api_key: Option<String>,
    /// CA certificate (PEM) to verify an `https://` server; without it the system roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that require mTLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Adds `authorization: Bearer <key>` to every call when a key is set.
#[derive(Clone)]
pub struct KeyInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for KeyInterceptor {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Remote {
    pub fn new(server: &str) -> Self {
        Self {
            server: server.to_string(),
            ..Self::default()
        }
    }

    /// The server as a URL (`http://` added to a bare host:port).
    pub fn url(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("http://{}", self.server)
        }
    }

    pub fn interceptor(&self) -> Result<KeyInterceptor> {
        let value = match &self.api_key {
            Some(k) => Some(
                format!("Bearer {k}")
                    .parse()
                    .map_err(|_| Error::invalid_input("--api-key must be printable ASCII"))?,
            ),
            None => None,
        };
        Ok(KeyInterceptor(value))
    }

    /// Connects (TLS for `https://` URLs).
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let url = self.url();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::invalid_input(format!("--server {}: {e}", self.server)))?
            .connect_timeout(std::time::Duration::from_secs(10));
        if url.starts_with("https://") {
            let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
            let mut tls = ClientTlsConfig::new();
            tls = match &self.tls_ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => tls.with_native_roots(),
            };
            match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => return Err(Error::invalid_input("--tls-cert and --tls-key go together")),
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::invalid_input(format!("TLS settings: {e}")))?;
        }
        endpoint.connect().await.map_err(|e| {
            Error::unavailable(format!(
                "cannot reach the server at {url}: {e} (is `noiseda serve` running?)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Open Inference Protocol's health calls are open like grpc.health; the rest needs
    /// the `restore` scope, as noiseda.v1.Restore does.
    #[test]
    fn inference_protocol_scopes() {
        let svc = "/inference.GRPCInferenceService";
        for open in ["ServerLive", "ServerReady"] {
            assert_eq!(Scope::for_path(&format!("{svc}/{open}")), None, "{open}");
        }
        for m in [
            "ModelInfer",
            "ModelReady",
            "ModelMetadata",
            "ServerMetadata",
        ] {
            assert_eq!(
                Scope::for_path(&format!("{svc}/{m}")),
                Some(Scope::Restore),
                "{m}"
            );
        }
    }

    #[test]
    fn scopes_and_keys() {
        let (key, entry) = keygen("ci", &[Scope::Training]);
        let file = format!(
            "{entry}\n[[key]]\nname = \"inline\"\nscopes = [\"restore\", \"models\"]\nsecret = \"0123456789abcdef\"\n"
        );
        let keys = ApiKeys::parse(&file).unwrap();
        let bearer = |k: &str| format!("Bearer {k}").into_bytes();
        let p = "/noiseda.v1.Training/StartJob";
        assert_eq!(
            keys.check(p, Some(&bearer(&key))).unwrap(),
            Some("ci".into())
        );
        assert_eq!(
            keys.check("/grpc.health.v1.Health/Check", None).unwrap(),
            None
        );
        let code = |r: Result<Option<String>>| r.unwrap_err().code();
        assert_eq!(code(keys.check(p, None)), tonic::Code::Unauthenticated);
        assert_eq!(
            code(keys.check(p, Some(b"Basic abc"))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(keys.check(p, Some(&bearer("nope")))),
            tonic::Code::Unauthenticated
        );
        let denied = keys
            .check("/noiseda.v1.Restore/Restore", Some(&bearer(&key)))
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied
            .to_string()
            .contains("`ci` lacks the `restore` scope"));
        assert!(keys
            .check(
                "/noiseda.v1.Models/LoadModel",
                Some(&bearer("0123456789abcdef"))
            )
            .is_ok());
        for bad in [
            "[[key]]\nname = \"a\"\nscopes = []\nsecret = \"0123456789abcdef\"",
            "[[key]]\nname = \"a\"\nscopes = [\"training\"]\nsecret = \"short\"",
            "[[key]]\nname = \"a\"\nscopes = [\"training\"]\nsha256 = \"xyz\"",
            "[[key]]\nname = \"a\"\nscopes = [\"admin\"]\nsecret = \"0123456789abcdef\"",
            "",
        ] {
            assert!(ApiKeys::parse(bad).is_err(), "{bad}");
        }
    }
}
