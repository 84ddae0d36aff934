//! `[auth]` end to end: every refused credential gets `UNAUTHENTICATED` with its reason,
//! every RPC of every service is checked against the permission docs/SECURITY.md gives
//! it, callers learn nothing about namespaces they may not use, the key set can rotate,
//! and `prism status` presents credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use prism_acceptance::harness::{run_prism, Server};
use prism_api::*;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "prism";

/// An ES256 signing key and its public JWK.
struct SigningKey {
    kid: String,
    pem: String,
    jwk: serde_json::Value,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
        });
        SigningKey { kid: kid.to_owned(), pem: pair.serialize_pem(), jwk }
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap()).unwrap()
    }
}

fn now() -> i64 {
    plugin_abi::unix_millis() / 1000
}

fn claims(subject: &str) -> serde_json::Value {
    serde_json::json!({ "sub": subject, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "groups": ["ops"] })
}

fn jwks(keys: &[&SigningKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

const NAMESPACES: &str = r#"
[plugins.memstore]
path = "{memstore}"

[[namespaces]]
name = "default"
pattern = "keyvalue"
slots.store = { plugin = "memstore" }

[[namespaces]]
name = "lists"
pattern = "list"
slots.store = { plugin = "memstore" }

[[namespaces]]
name = "events"
pattern = "pubsub"
slots.broker = { plugin = "memstore" }

[[namespaces]]
name = "logs"
pattern = "stream"
slots.log = { plugin = "memstore" }

[[namespaces]]
name = "devices"
pattern = "multicast-registry"
slots.registry = { plugin = "memstore" }
slots.messaging = { plugin = "memstore" }
"#;

/// A gateway with JWT auth (key set in `dir`), one API key per permission (`key-read`
/// grants only read on every namespace, …), `key-none` (a key with a rule for a
/// namespace that does not exist), and `group:ops` granted read on `default`.
fn start(dir: &std::path::Path, keys: &[&SigningKey]) -> Server {
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks(keys)).unwrap();
    start_with_key_source(&format!("jwks_file = \"{}\"", jwks_file.display()))
}

/// Like [`start`], the key set named by `key_source` (`jwks_file = …` or `jwks_url = …`).
fn start_with_key_source(key_source: &str) -> Server {
    let mut config = format!(
        r#"
[auth.jwt]
{key_source}
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
"#
    );
    for permission in ["read", "write", "publish", "subscribe", "consume", "admin", "none"] {
        config += &format!(
            "\n[[auth.api_keys]]\nname = \"key-{permission}\"\nsha256 = \"{}\"\n",
            sha256_hex(&format!("secret-key-{permission}"))
        );
        let (namespaces, permissions) = match permission {
            "none" => (
                "[\"elsewhere\"]",
                "[\"read\", \"write\", \"publish\", \"subscribe\", \"consume\", \"admin\"]".to_owned(),
            ),
            _ => ("[\"*\"]", format!("[\"{permission}\"]")),
        };
        config += &format!(
            "\n[[auth.rules]]\nprincipals = [\"api_key:key-{permission}\"]\nnamespaces = {namespaces}\npermissions = {permissions}\n"
        );
    }
    config += "\n[[auth.rules]]\nprincipals = [\"group:ops\"]\nnamespaces = [\"default\"]\npermissions = [\"read\"]\n";
    config += NAMESPACES;
    Server::start(&config)
}

fn with_metadata<T>(message: T, name: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(name, value.parse().unwrap());
    request
}

/// One metadata entry to send, e.g. `("x-api-key", key)`.
type Credential = Option<(&'static str, String)>;

async fn get_with(
    channel: &Channel,
    header: Option<(&'static str, String)>,
) -> Result<GetResponse, tonic::Status> {
    let mut kv = key_value_service_client::KeyValueServiceClient::new(channel.clone());
    let message = GetRequest { key: "k".into(), ..Default::default() };
    let request = match header {
        Some((name, value)) => with_metadata(message, name, &value),
        None => Request::new(message),
    };
    kv.get(request).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn every_bad_credential_is_unauthenticated_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let other = SigningKey::new("k1");
    let server = start(dir.path(), &[&key]);
    let channel = server.channel().await;

    let bearer = |token: String| Some(("authorization", format!("Bearer {token}")));
    let mut expired = claims("alice");
    expired["exp"] = (now() - 3600).into();
    let mut early = claims("alice");
    early["nbf"] = (now() + 3600).into();
    let mut wrong_issuer = claims("alice");
    wrong_issuer["iss"] = "https://elsewhere.test".into();
    let mut wrong_audience = claims("alice");
    wrong_audience["aud"] = "not-prism".into();
    let unknown_kid = {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k-unknown".into());
        encode(&header, &claims("alice"), &EncodingKey::from_ec_pem(key.pem.as_bytes()).unwrap()).unwrap()
    };
    let tampered = {
        let token = key.sign(&claims("alice"));
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload = claims("mallory");
        payload["groups"] = serde_json::json!(["ops", "admins"]);
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let alg_none = {
        let b64 = |text: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#.into()), b64(claims("alice").to_string()))
    };
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let public = serde_json::to_vec(&key.jwk).unwrap();
        encode(&header, &claims("alice"), &EncodingKey::from_secret(&public)).unwrap()
    };
    let truncated = {
        let token = key.sign(&claims("alice"));
        token[..token.rfind('.').unwrap()].to_owned()
    };
    let oversized = format!("{}.{}.sig", "e".repeat(16 * 1024), "e".repeat(10));

    let cases: Vec<(&str, Credential, &str)> = vec![
        ("no credentials", None, "no credentials"),
        ("expired", bearer(key.sign(&expired)), "the token has expired"),
        ("not yet valid", bearer(key.sign(&early)), "not valid yet"),
        ("wrong issuer", bearer(key.sign(&wrong_issuer)), "issuer is not"),
        ("wrong audience", bearer(key.sign(&wrong_audience)), "audience does not include 'prism'"),
        ("unknown kid", bearer(unknown_kid), "key id 'k-unknown' is not in the key set"),
        ("another key with the same kid", bearer(other.sign(&claims("alice"))), "signature does not verify"),
        ("tampered payload", bearer(tampered), "signature does not verify"),
        ("alg none", bearer(alg_none), "algorithm 'none' is not accepted"),
        ("HS256 with the public key", bearer(hs256_with_public_key), "algorithm HS256 is not accepted"),
        ("truncated", bearer(truncated), "not a JWT"),
        ("oversized (16 KiB)", bearer(oversized), "at most 8192"),
        ("not a bearer", Some(("authorization", "Basic YWxpY2U6cHc=".into())), "not 'Bearer <JWT>'"),
        (
            "unknown API key",
            Some(("x-api-key", "secret-key-unknown".into())),
            "API key is not one this gateway knows",
        ),
    ];
    for (case, header, reason) in cases {
        let shown = header.as_ref().map(|(_, value)| value.clone()).unwrap_or_default();
        let status = get_with(&channel, header).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(status.message().contains(reason), "{case}: '{}' should say '{reason}'", status.message());
        if shown.len() > 20 {
            let credential = shown.trim_start_matches("Bearer ");
            assert!(!status.message().contains(credential), "{case}: the message quotes the credential");
        }
    }

    let log = server.stderr();
    assert!(
        log.contains("prism::audit")
            && log.contains("decision=\"unauthenticated\"")
            && log.contains("the token has expired"),
        "refused credentials are in the audit log:\n{log}"
    );
    // And the good ones pass: a token whose group may read, an API key that may read.
    assert!(get_with(&channel, bearer(key.sign(&claims("alice")))).await.is_ok());
    assert!(get_with(&channel, Some(("x-api-key", "secret-key-read".into()))).await.is_ok());
    // The scheme's name is case-insensitive (RFC 7235).
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let header = Some(("authorization", format!("{scheme} {}", key.sign(&claims("alice")))));
        let answer = get_with(&channel, header).await;
        assert!(answer.is_ok(), "scheme '{scheme}': {answer:?}");
    }
    // A token is as good the second time (the cache), and within the leeway after exp.
    let mut just_expired = claims("alice");
    just_expired["exp"] = (now() - 5).into();
    let token = key.sign(&just_expired);
    for _ in 0..2 {
        assert!(get_with(&channel, bearer(token.clone())).await.is_ok());
    }
}

#[tokio::test]
async fn health_stays_open_and_callers_learn_nothing_about_namespaces_they_may_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let server = start(dir.path(), &[&key]);
    let channel = server.channel().await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let reply = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(
        reply.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Health answers anyone, so it does not tell which namespaces exist.
    for service in ["default", "does-not-exist"] {
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let status = health.check(request).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{service}: {status:?}");
    }

    let mut kv = key_value_service_client::KeyValueServiceClient::new(channel.clone());
    for namespace in ["default", "does-not-exist"] {
        let request = with_metadata(
            GetRequest { namespace: namespace.into(), key: "k".into(), ..Default::default() },
            "x-api-key",
            "secret-key-none",
        );
        let status = kv.get(request).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{namespace}: {status:?}");
        assert_eq!(
            status.message(),
            format!(
                "api_key:key-none may not read on namespace '{namespace}' (KeyValueService.Get needs read)"
            )
        );
    }
    // A caller allowed everywhere is told a namespace is missing, but not which exist.
    let request = with_metadata(
        GetRequest { namespace: "does-not-exist".into(), key: "k".into(), ..Default::default() },
        "x-api-key",
        "secret-key-read",
    );
    let status = kv.get(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "namespace 'does-not-exist' is not configured");
    let log = server.stderr();
    assert!(
        log.contains("prism::audit") && log.contains("api_key:key-none") && log.contains("decision=\"deny\""),
        "the denial is in the audit log:\n{log}"
    );
}

/// The permission each RPC needs, read from docs/SECURITY.md's table (the table is the
/// promise; the gateway must keep it).
fn documented_permissions() -> BTreeMap<(String, String), String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SECURITY.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            (cells.len() == 3 && cells[0].ends_with("Service"))
                .then(|| ((cells[0].to_owned(), cells[1].to_owned()), cells[2].to_owned()))
        })
        .collect()
}

/// Every RPC of `prism.v1` with the field number of its request's `namespace`, if any.
fn rpcs() -> Vec<(String, String, Option<i32>)> {
    let set = prost_types::FileDescriptorSet::decode(prism_api::FILE_DESCRIPTOR_SET).unwrap();
    let messages: BTreeMap<String, &prost_types::DescriptorProto> = set
        .file
        .iter()
        .flat_map(|file| {
            file.message_type.iter().map(move |m| (format!(".{}.{}", file.package(), m.name()), m))
        })
        .collect();
    set.file
        .iter()
        .filter(|file| file.package() == "prism.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            let messages = &messages;
            service.method.iter().map(move |method| {
                let input = messages[method.input_type()];
                let field = input.field.iter().find(|f| f.name() == "namespace").map(|f| f.number());
                (service.name().to_owned(), method.name().to_owned(), field)
            })
        })
        .collect()
}

/// A request message holding only `namespace`, encoded by hand (a string field).
fn namespace_only(field: Option<i32>, namespace: &str) -> Vec<u8> {
    let Some(field) = field else { return Vec::new() };
    let mut out = Vec::new();
    prost::encoding::string::encode(field as u32, &namespace.to_owned(), &mut out);
    out
}

#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = bytes::Buf::copy_to_bytes(src, bytes::Buf::remaining(src));
        Ok(Some(bytes.to_vec()))
    }
}

/// Calls any RPC with one raw request message (as a stream, which serves every kind of
/// method) and returns the first status it ends with, or OK when it is still streaming.
async fn call_raw(channel: &Channel, service: &str, method: &str, body: Vec<u8>, api_key: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = format!("/prism.v1.{service}/{method}").parse().unwrap();
    let request = with_metadata(tokio_stream::iter(vec![body]), "x-api-key", api_key);
    let call = async {
        match grpc.streaming(request, path, RawCodec).await {
            Err(status) => status.code(),
            Ok(response) => match response.into_inner().message().await {
                Err(status) => status.code(),
                Ok(_) => Code::Ok,
            },
        }
    };
    tokio::time::timeout(Duration::from_secs(2), call).await.unwrap_or(Code::Ok)
}

#[tokio::test]
async fn every_rpc_needs_exactly_the_permission_the_docs_give_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let server = start(dir.path(), &[&key]);
    let channel = server.channel().await;
    let documented = documented_permissions();
    // No queue namespace (memstore has no queue): QueueService calls name "jobs", which
    // an allowed caller is told is not configured and any other is refused.
    let namespace_of = |service: &str| match service {
        "KeyValueService" => "default",
        "ListService" => "lists",
        "QueueService" => "jobs",
        "PubSubService" => "events",
        "StreamService" => "logs",
        "MulticastRegistryService" => "devices",
        _ => "",
    };
    let rpcs = rpcs();
    assert_eq!(rpcs.len(), documented.len(), "docs/SECURITY.md lists every RPC once");
    let mut checked = 0;
    for (service, method, field) in rpcs {
        let needed = documented
            .get(&(service.clone(), method.clone()))
            .unwrap_or_else(|| panic!("docs/SECURITY.md has no row for {service}.{method}"));
        for holder in ["read", "write", "publish", "subscribe", "consume", "admin", "none"] {
            let body = namespace_only(field, namespace_of(&service));
            let code = call_raw(&channel, &service, &method, body, &format!("secret-key-{holder}")).await;
            if holder == needed {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{service}.{method} with {holder}: {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{service}.{method} with {holder} (needs {needed})");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, documented.len() * 7);
}

#[tokio::test]
async fn a_new_key_in_the_key_set_is_picked_up_and_old_tokens_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let old = SigningKey::new("2026-old");
    let new = SigningKey::new("2026-new");
    let server = start(dir.path(), &[&old]);
    let channel = server.channel().await;
    let bearer = |token: String| Some(("authorization", format!("Bearer {token}")));
    let old_token = old.sign(&claims("alice"));
    assert!(get_with(&channel, bearer(old_token.clone())).await.is_ok());
    let status = get_with(&channel, bearer(new.sign(&claims("alice")))).await.unwrap_err();
    assert!(status.message().contains("key id '2026-new' is not in the key set"), "{status:?}");

    // The issuer publishes the new key next to the old one (written aside, renamed in).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let staging = dir.path().join("jwks.json.new");
    std::fs::write(&staging, jwks(&[&old, &new])).unwrap();
    std::fs::rename(&staging, dir.path().join("jwks.json")).unwrap();
    assert!(
        get_with(&channel, bearer(new.sign(&claims("bob")))).await.is_ok(),
        "the new kid after the refresh"
    );
    assert!(get_with(&channel, bearer(old_token)).await.is_ok(), "tokens of the old key until they expire");
    assert!(get_with(&channel, bearer(old.sign(&claims("carol")))).await.is_ok());
}

// Multi-threaded: the issuer must answer while Server::start blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_url_is_fetched_refreshed_early_for_a_new_key_and_kept_when_the_issuer_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::certs::Ca::new("issuer CA");
    std::fs::write(dir.path().join("issuer-ca.pem"), ca.pem()).unwrap();
    let old = SigningKey::new("url-old");
    let new = SigningKey::new("url-new");
    let issuer = crate::jwks_server::KeySetServer::start(&ca.issue(&["127.0.0.1"]), jwks(&[&old])).await;
    let server = start_with_key_source(&format!(
        "jwks_url = \"{}\"\njwks_ca_file = \"{}\"\njwks_refresh_s = 3600",
        issuer.url,
        dir.path().join("issuer-ca.pem").display()
    ));
    let channel = server.channel().await;
    let bearer = |token: String| Some(("authorization", format!("Bearer {token}")));
    assert!(get_with(&channel, bearer(old.sign(&claims("alice")))).await.is_ok());
    let fetched = issuer.fetches();
    assert_eq!(fetched, 1, "fetched once at start, then served from memory");

    // Within the gap after a fetch, an unknown key id is refused from what is held…
    issuer.publish(Some(jwks(&[&old, &new])));
    let status = get_with(&channel, bearer(new.sign(&claims("bob")))).await.unwrap_err();
    assert!(status.message().contains("key id 'url-new' is not in the key set at https://"), "{status:?}");
    assert_eq!(issuer.fetches(), fetched);
    // …after it, a token naming a key the issuer published waits for one early fetch.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert!(get_with(&channel, bearer(new.sign(&claims("bob")))).await.is_ok(), "the new kid, fetched early");
    assert_eq!(issuer.fetches(), fetched + 1);

    // Made-up key ids cannot make the gateway hammer the issuer: within the gap they
    // are refused from what is held.
    for attempt in 0..5 {
        let stranger = SigningKey::new(&format!("made-up-{attempt}"));
        let status = get_with(&channel, bearer(stranger.sign(&claims("mallory")))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status
                .message()
                .contains(&format!("key id 'made-up-{attempt}' is not in the key set at https://127.0.0.1:")),
            "{status:?}"
        );
    }
    assert_eq!(issuer.fetches(), fetched + 1, "no fetch for made-up key ids within the gap");

    // The issuer fails: the set fetched before keeps verifying (fresh tokens, not cached).
    issuer.publish(None);
    assert!(get_with(&channel, bearer(old.sign(&claims("carol")))).await.is_ok());
    assert!(get_with(&channel, bearer(new.sign(&claims("dave")))).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_url_the_gateway_cannot_trust_refuses_tokens_saying_why() {
    let ca = crate::certs::Ca::new("private CA nobody trusts");
    let key = SigningKey::new("k1");
    let issuer = crate::jwks_server::KeySetServer::start(&ca.issue(&["127.0.0.1"]), jwks(&[&key])).await;
    // No jwks_ca_file: the system's CAs do not know this one.
    let server = start_with_key_source(&format!("jwks_url = \"{}\"", issuer.url));
    let channel = server.channel().await;
    let status =
        get_with(&channel, Some(("authorization", format!("Bearer {}", key.sign(&claims("alice"))))))
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains(&format!("the key set at {}, which could not be fetched (", issuer.url)),
        "{status:?}"
    );
    assert!(status.message().to_lowercase().contains("certificate"), "{status:?}");
    assert_eq!(issuer.fetches(), 0, "the TLS handshake failed before any request");
}

#[tokio::test]
async fn prism_status_presents_an_api_key_and_admin_needs_admin() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let server = start(dir.path(), &[&key]);
    let url = server.url();
    let (code, _, stderr) = run_prism(&["status", "--server", &url]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Unauthenticated") && stderr.contains("no credentials"), "{stderr}");
    let (code, _, stderr) = run_prism(&["status", "--server", &url, "--api-key", "secret-key-read"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("needs admin on every namespace"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run_prism(&["status", "--server", &url, "--api-key", "secret-key-admin"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("memstore"), "{stdout}");
    let mut admin_token = claims("root");
    admin_token["groups"] = serde_json::json!([]);
    let output = std::process::Command::new(prism_acceptance::harness::prism_binary())
        .args(["status", "--server", &url])
        .env("PRISM_TOKEN", key.sign(&admin_token))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("subject:root may not call AdminService.GetReloadStatus"), "{stderr}");
    let log = server.stderr();
    for line in [
        r#"principal="api_key:key-admin" method="AdminService.GetReloadStatus" namespace="*" permission=admin decision="allow""#,
        r#"principal="api_key:key-read" method="AdminService.GetReloadStatus" namespace="*" permission=admin decision="deny""#,
    ] {
        assert!(log.contains(line), "the audit log has {line}:\n{log}");
    }
}

#[tokio::test]
async fn rules_reload_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let server = start(dir.path(), &[&key]);
    let channel = server.channel().await;
    let read_key = || Some(("x-api-key", "secret-key-read".to_owned()));
    get_with(&channel, read_key()).await.expect("key-read may read everywhere");

    // The operator narrows key-read's rule to one namespace and reloads.
    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let rule = "principals = [\"api_key:key-read\"]\nnamespaces = [\"*\"]";
    assert!(config.contains(rule), "{config}");
    let narrowed = config.replace(rule, "principals = [\"api_key:key-read\"]\nnamespaces = [\"lists\"]");
    std::fs::write(server.config_path(), narrowed).unwrap();
    let (code, stdout, stderr) =
        run_prism(&["reload", "--server", &server.url(), "--api-key", "secret-key-admin"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let status = get_with(&channel, read_key()).await.expect_err("the rule no longer covers default");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn a_token_accepted_before_a_reload_is_judged_again_by_the_new_jwt_settings() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let server = start(dir.path(), &[&key]);
    let channel = server.channel().await;
    // One token, sent again and again, as a client does (ES256 signs differently each time).
    let token = key.sign(&claims("alice"));
    let bearer = || Some(("authorization", format!("Bearer {token}")));
    // Often enough that every worker thread of the gateway has seen (and remembers) it.
    for _ in 0..20 {
        get_with(&channel, bearer()).await.expect("alice's token is accepted");
    }

    let config = std::fs::read_to_string(server.config_path()).unwrap();
    let audience = format!("audience = \"{AUDIENCE}\"");
    assert!(config.contains(&audience), "{config}");
    std::fs::write(server.config_path(), config.replace(&audience, "audience = \"another-service\""))
        .unwrap();
    let (code, stdout, stderr) =
        run_prism(&["reload", "--server", &server.url(), "--api-key", "secret-key-admin"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    for _ in 0..20 {
        let status = get_with(&channel, bearer()).await.expect_err("the audience no longer matches");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
}

#[test]
fn prism_auth_new_api_key_prints_a_key_and_only_its_hash_for_the_config() {
    let (code, stdout, stderr) = run_prism(&["auth", "new-api-key", "billing-batch"]);
    assert_eq!(code, 0, "{stderr}");
    let key = stdout.lines().find_map(|line| line.trim().strip_prefix("prism_")).expect("a key line");
    let key = format!("prism_{key}");
    assert_eq!(key.len(), "prism_".len() + 64);
    assert!(stdout.contains(&format!("sha256 = \"{}\"", sha256_hex(&key))), "{stdout}");
    assert!(stdout.contains("name = \"billing-batch\""), "{stdout}");
    let (_, second, _) = run_prism(&["auth", "new-api-key", "billing-batch"]);
    assert_ne!(stdout, second, "each key is new");
    let (code, _, stderr) = run_prism(&["auth", "new-api-key", "no spaces"]);
    assert_eq!(code, 2, "{stderr}");
}

/// Lists services over reflection, presenting `api_key` if given.
async fn list_services(channel: &Channel, api_key: Option<&str>) -> Result<usize, tonic::Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let stream = tokio_stream::iter(vec![request]);
    let request = match api_key {
        Some(key) => with_metadata(stream, "x-api-key", key),
        None => Request::new(stream),
    };
    let mut replies =
        ServerReflectionClient::new(channel.clone()).server_reflection_info(request).await?.into_inner();
    let reply = replies.message().await?.expect("a reply");
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.len()),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test]
async fn reflection_is_open_by_default_and_closed_to_anonymous_callers_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::new("k1");
    let open = start(dir.path(), &[&key]);
    assert!(list_services(&open.channel().await, None).await.unwrap() > 5);

    let config_path = open.config_path();
    let closed_config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("[auth.jwt]", "[auth]\nopen_reflection = false\n\n[auth.jwt]");
    drop(open);
    let closed = Server::start(&closed_config);
    let channel = closed.channel().await;
    let status = list_services(&channel, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(list_services(&channel, Some("secret-key-none")).await.unwrap() > 5, "any authenticated caller");
}

/// A gateway where `alice` and `bob` may read and write `default` (sqlite, which has
/// transactions) and `reader` may only read it.
fn two_writers_and_a_reader(data: &std::path::Path) -> Server {
    let auth = super::observe::api_keys_config(&[
        ("alice", "alice-key", "\"default\"", "\"read\", \"write\""),
        ("bob", "bob-key", "\"default\"", "\"read\", \"write\""),
        ("reader", "reader-key", "\"default\"", "\"read\""),
    ]);
    let store = data.join("kv.db");
    Server::start(&format!(
        "{auth}\n[plugins.sqlite]\npath = \"{{sqlite}}\"\n\n[[namespaces]]\nname = \"default\"\npattern = \"keyvalue\"\n\
         slots.store = {{ plugin = \"sqlite\", config = {{ path = \"{}\" }} }}\n",
        store.display()
    ))
}

#[tokio::test]
async fn a_transaction_is_its_beginners_and_reading_in_one_needs_write() {
    let data = tempfile::tempdir().unwrap();
    let server = two_writers_and_a_reader(data.path());
    let mut kv = key_value_service_client::KeyValueServiceClient::new(server.channel().await);
    let begin = BeginTransactionRequest { namespace: "default".into(), ..Default::default() };
    let id = kv.begin_transaction(with_metadata(begin, "x-api-key", "alice-key")).await.unwrap().into_inner();
    let id = id.transaction_id;
    let write = SetRequest {
        key: "k".into(),
        value: b"uncommitted".to_vec().into(),
        transaction_id: id,
        ..Default::default()
    };
    kv.set(with_metadata(write.clone(), "x-api-key", "alice-key"))
        .await
        .expect("alice writes in her transaction");

    let read = GetRequest { key: "k".into(), transaction_id: id, ..Default::default() };
    let status = kv
        .get(with_metadata(read.clone(), "x-api-key", "reader-key"))
        .await
        .expect_err("a reader's Get in it");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("a Get inside a transaction needs write"), "{status:?}");

    // Bob may write the namespace, but the transaction is alice's: to him it is not open.
    let not_open = |status: tonic::Status, call: &str| {
        assert_eq!(status.code(), Code::NotFound, "bob's {call}: {status:?}");
        assert!(status.message().contains("is not open"), "bob's {call}: {status:?}");
    };
    not_open(kv.get(with_metadata(read.clone(), "x-api-key", "bob-key")).await.unwrap_err(), "Get");
    not_open(kv.set(with_metadata(write, "x-api-key", "bob-key")).await.unwrap_err(), "Set");
    let rollback = RollbackTransactionRequest { transaction_id: id, ..Default::default() };
    not_open(
        kv.rollback_transaction(with_metadata(rollback, "x-api-key", "bob-key")).await.unwrap_err(),
        "Rollback",
    );

    let mine =
        kv.get(with_metadata(read, "x-api-key", "alice-key")).await.expect("alice reads in her transaction");
    assert_eq!(mine.into_inner().value.as_ref(), b"uncommitted");
    let commit = CommitTransactionRequest { transaction_id: id, ..Default::default() };
    kv.commit_transaction(with_metadata(commit, "x-api-key", "alice-key")).await.expect("alice commits");
}

#[tokio::test]
async fn an_idempotency_token_is_its_senders_alone() {
    let data = tempfile::tempdir().unwrap();
    let server = two_writers_and_a_reader(data.path());
    let mut kv = key_value_service_client::KeyValueServiceClient::new(server.channel().await);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let token = format!("{now}-shared-token-0001");

    // Bob uses the token first, for another write: alice's own write with it still runs.
    let bobs = SetRequest {
        key: "b".into(),
        value: b"bob".to_vec().into(),
        idempotency_token: token.clone(),
        ..Default::default()
    };
    kv.set(with_metadata(bobs, "x-api-key", "bob-key")).await.expect("bob's write");
    let alices = SetRequest {
        key: "a".into(),
        value: b"alice".to_vec().into(),
        idempotency_token: token.clone(),
        ..Default::default()
    };
    kv.set(with_metadata(alices, "x-api-key", "alice-key"))
        .await
        .expect("alice's write is hers, whatever bob sent");

    // Alice swaps with a token; bob re-sending her exact call runs his own, which conflicts.
    let swap = CompareAndSwapRequest {
        key: "c".into(),
        expected_version: 0,
        value: b"x".to_vec().into(),
        idempotency_token: format!("{now}-shared-token-0002"),
        ..Default::default()
    };
    let first = kv
        .compare_and_swap(with_metadata(swap.clone(), "x-api-key", "alice-key"))
        .await
        .expect("alice's swap");
    let again = kv
        .compare_and_swap(with_metadata(swap.clone(), "x-api-key", "alice-key"))
        .await
        .expect("alice's retry");
    assert_eq!(again.into_inner().version, first.into_inner().version, "her retry gets her first answer");
    let status =
        kv.compare_and_swap(with_metadata(swap, "x-api-key", "bob-key")).await.expect_err("bob's replay");
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "bob's call ran and found the key written: {status:?}"
    );
    assert!(status.message().contains("version mismatch"), "{status:?}");
}
