//! JSON Web Tokens: see [`JwtAuthenticator`].

use super::{AuthError, Authenticator, ConnectRequest, Identity};
use crate::broker::BoxFuture;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The key tokens are verified with; it also fixes the algorithm accepted.
#[derive(Clone)]
#[non_exhaustive]
pub enum JwtKey {
    /// A shared secret: HS256. It must not be empty.
    Secret(Vec<u8>),
    /// A PEM public key (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`): RS256
    /// for an RSA key, ES256 for a P-256 key, EdDSA for an Ed25519 key.
    PublicKeyPem(Vec<u8>),
    /// A JWK set (JSON `{"keys": [...]}`) of RSA (RS256), EC P-256 (ES256)
    /// and OKP Ed25519 (EdDSA) keys. The token's `kid` picks the key; a token
    /// without `kid` is accepted only when the set holds one key.
    Jwks(String),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtKey::Secret(_) => "Secret(..)",
            JwtKey::PublicKeyPem(_) => "PublicKeyPem(..)",
            JwtKey::Jwks(_) => "Jwks(..)",
        })
    }
}

/// Settings of JWT authentication.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The verification key.
    pub key: JwtKey,
    /// Required `iss`, if set. Default `None`.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's), if set. Default `None`: the
    /// token's `aud` is then not looked at.
    pub audience: Option<String>,
    /// Claim holding the user name. Default `sub`.
    pub user_claim: String,
    /// Claim holding the roles (an array of strings, or one string of
    /// space-separated roles); a dotted path reaches into objects
    /// (`realm_access.roles`). Default `roles`.
    pub roles_claim: String,
    /// Cookie carrying the token, if any. Default `None`.
    pub cookie: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
}

impl JwtConfig {
    /// Settings with `key` and every other field at its default.
    pub fn new(key: JwtKey) -> JwtConfig {
        JwtConfig {
            key,
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            cookie: None,
            leeway: Duration::from_secs(30),
        }
    }
}

/// Longest token looked at. Real tokens are well under 2 KiB; the bound
/// keeps a client from making the server decode and parse a large blob.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest user name, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Most roles of one token: the roles live as long as the session does.
const MAX_ROLES: usize = 64;
/// Longest role, in bytes.
const MAX_ROLE_BYTES: usize = 256;

/// The algorithms a key can be pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pinned {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl Pinned {
    /// The JOSE name, as a token's `alg` header spells it.
    fn name(self) -> &'static str {
        match self {
            Pinned::Hs256 => "HS256",
            Pinned::Rs256 => "RS256",
            Pinned::Es256 => "ES256",
            Pinned::EdDsa => "EdDSA",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Pinned::Hs256 => Algorithm::HS256,
            Pinned::Rs256 => Algorithm::RS256,
            Pinned::Es256 => Algorithm::ES256,
            Pinned::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// One verification key and the algorithm it is pinned to.
struct PinnedKey {
    /// The JWK `kid`; `None` for a secret, a PEM key, or a JWK without one.
    kid: Option<String>,
    pinned: Pinned,
    key: DecodingKey,
    /// Lets jsonwebtoken check only the signature, and only with `pinned`.
    /// The claims are checked by [`JwtAuthenticator::verify`]: each failure
    /// needs its own answer, and jsonwebtoken's checks differ from ours (it
    /// refuses any `aud` when no audience is configured and accepts an
    /// array `iss`).
    validation: Validation,
}

impl PinnedKey {
    fn new(kid: Option<String>, pinned: Pinned, key: DecodingKey) -> PinnedKey {
        let mut validation = Validation::new(pinned.algorithm());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        PinnedKey {
            kid,
            pinned,
            key,
            validation,
        }
    }
}

/// Authenticates with JSON Web Tokens.
///
/// The token is looked for, in this order, in the CONNECT `passcode`, a
/// CONNECT `Authorization: Bearer` header, the WebSocket handshake's
/// `Authorization: Bearer` header, its `access_token` query parameter and the
/// cookie [`JwtConfig::cookie`]; the first value that looks like a JWT
/// (three non-empty base64url segments, the first a JSON object) is the
/// token. Other values are not taken for one and are left to the other
/// methods, so a password (even `correct.horse.battery`) or an opaque token
/// still reaches them; without a token the answer is `Ok(None)`.
///
/// The key fixes the one algorithm its tokens may use: a token's `alg`
/// header never chooses how it is verified, which rules out the algorithm
/// confusion attacks (`alg: none`, or an HMAC keyed with an RSA public key).
/// A token must have an `exp`; `nbf`, when present, is checked too, both
/// with [`JwtConfig::leeway`]. The identity expires at the token's `exp`.
pub struct JwtAuthenticator {
    config: JwtConfig,
    keys: Vec<PinnedKey>,
    /// Whether the keys come from a JWK set, where the token's `kid` picks
    /// one. A secret or PEM key is the one key whatever the `kid`.
    by_kid: bool,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("config", &self.config)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl JwtAuthenticator {
    /// Checks the key and builds the authenticator.
    ///
    /// # Errors
    ///
    /// When the key cannot be used: an empty secret, a PEM that is not an
    /// RSA, P-256 or Ed25519 public key, a JWK set that is empty or holds
    /// other keys; or when `user_claim` is empty.
    pub fn new(config: JwtConfig) -> Result<JwtAuthenticator, String> {
        // jsonwebtoken panics on its first use when its build has no crypto
        // backend or two of them; find that out here instead.
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err("JWT: jsonwebtoken has no crypto provider in this build".into());
        }
        if config.user_claim.is_empty() {
            return Err("JWT: the user claim name is empty".into());
        }
        let (keys, by_kid) = match &config.key {
            JwtKey::Secret(secret) => (vec![secret_key(secret)?], false),
            JwtKey::PublicKeyPem(pem) => (vec![pem_key(pem)?], false),
            JwtKey::Jwks(json) => (jwks_keys(json)?, true),
        };
        Ok(JwtAuthenticator {
            config,
            keys,
            by_kid,
        })
    }

    /// The token of `request`: the first carrier, in the documented order,
    /// whose value looks like a JWT.
    fn token<'r>(&self, request: &'r ConnectRequest) -> Option<Cow<'r, str>> {
        let handshake = &request.handshake;
        let borrowed = [
            request.passcode(),
            request.connect_bearer_token(),
            handshake.bearer_token(),
        ];
        if let Some(token) = borrowed.into_iter().flatten().find(|t| looks_like_jwt(t)) {
            return Some(Cow::Borrowed(token));
        }
        if let Some(token) = handshake
            .query("access_token")
            .filter(|t| looks_like_jwt(t))
        {
            return Some(Cow::Owned(token));
        }
        let name = self.config.cookie.as_deref()?;
        handshake
            .cookie(name)
            .filter(|t| looks_like_jwt(t))
            .map(Cow::Borrowed)
    }

    /// Verifies `token` and reads its identity.
    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid("token too long"));
        }
        let (alg, kid) = read_header(token)?;
        // The `alg` is checked against what the keys accept before a key is
        // chosen, so `alg: none` gets its true answer whatever the `kid`.
        if !self.keys.iter().any(|k| k.pinned.name() == alg) {
            return Err(alg_not_accepted(&alg));
        }
        let key = self.select(kid.as_deref())?;
        if key.pinned.name() != alg {
            return Err(alg_not_accepted(&alg));
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    invalid("signature does not verify")
                }
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => alg_not_accepted(&alg),
                _ => malformed(),
            })?
            .claims;
        self.identity(&claims)
    }

    /// The key a token with `kid` is verified with.
    fn select(&self, kid: Option<&str>) -> Result<&PinnedKey, AuthError> {
        let only = match self.keys.as_slice() {
            [only] => Some(only),
            _ => None,
        };
        if !self.by_kid {
            return only.ok_or_else(malformed);
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                // A set of one key without a `kid` has nothing to match
                // against: that key is meant for every token.
                .or(only.filter(|k| k.kid.is_none()))
                .ok_or_else(|| invalid("unknown key id")),
            None => only.ok_or_else(|| invalid("the token has no key id (kid)")),
        }
    }

    /// Checks the claims of a token whose signature verified, and reads the
    /// identity they name.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let config = &self.config;
        let now = SystemTime::now();
        let expires_at = match claims.get("exp") {
            None => return Err(invalid("the token has no exp claim")),
            Some(exp) => numeric_date(exp).ok_or_else(malformed)?,
        };
        if now
            .duration_since(expires_at)
            .is_ok_and(|late| late >= config.leeway)
        {
            return Err(AuthError::TokenExpired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let not_before = numeric_date(nbf).ok_or_else(malformed)?;
            if not_before
                .duration_since(now)
                .is_ok_and(|early| early > config.leeway)
            {
                return Err(AuthError::TokenNotYetValid);
            }
        }
        if let Some(issuer) = &config.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(invalid("wrong issuer"));
        }
        if let Some(audience) = &config.audience {
            let fits = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !fits {
                return Err(invalid("wrong audience"));
            }
        }
        let name = claims
            .get(&config.user_claim)
            .and_then(Value::as_str)
            .filter(|name| usable_text(name, MAX_NAME_BYTES))
            .ok_or_else(|| {
                AuthError::InvalidToken(format!("no usable '{}' claim", config.user_claim))
            })?;
        let roles = roles(claim_at(claims, &config.roles_claim), &config.roles_claim)?;
        // The session ends where the check above would start refusing the
        // token: at `exp` plus the allowed clock skew.
        Ok(Identity::new(name)
            .with_roles(roles)
            .expiring_at(expires_at + config.leeway))
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        // A verification costs tens to hundreds of microseconds: it runs
        // here, on the connection's task.
        Box::pin(async move {
            match self.token(request) {
                Some(token) => self.verify(&token).map(Some),
                None => Ok(None),
            }
        })
    }
}

fn invalid(reason: &str) -> AuthError {
    AuthError::InvalidToken(reason.into())
}

fn malformed() -> AuthError {
    invalid("malformed token")
}

/// The refusal of a token signed with `alg`. The name comes from the
/// client, so it is shown only when it looks like an algorithm name.
fn alg_not_accepted(alg: &str) -> AuthError {
    let printable = !alg.is_empty()
        && alg.len() <= 16
        && alg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if printable {
        AuthError::InvalidToken(format!("algorithm {alg} not accepted"))
    } else {
        invalid("algorithm not accepted")
    }
}

/// Whether `value` is taken for a JWT: it has the shape of one and its
/// first segment decodes to a JSON object (its header). Anything else is a
/// password or an opaque token for some other method: the shape alone would
/// take a password like `correct.horse.battery` for a token.
fn looks_like_jwt(value: &str) -> bool {
    if !is_jwt_shaped(value) {
        return false;
    }
    // Too long to be looked into: verifying refuses it.
    if value.len() > MAX_TOKEN_BYTES {
        return true;
    }
    let header = value.split('.').next().unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(header)
        .is_ok_and(|json| serde_json::from_slice::<Map<String, Value>>(&json).is_ok())
}

/// Whether `value` has the shape of a JWS compact serialization: three
/// non-empty base64url segments separated by dots.
fn is_jwt_shaped(value: &str) -> bool {
    let mut segments = 0;
    for segment in value.split('.') {
        segments += 1;
        let base64url = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if segments > 3 || segment.is_empty() || !base64url {
            return false;
        }
    }
    segments == 3
}

/// The `alg` and `kid` of a token's header.
fn read_header(token: &str) -> Result<(String, Option<String>), AuthError> {
    let encoded = token.split('.').next().ok_or_else(malformed)?;
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let mut header: Map<String, Value> = serde_json::from_slice(&json).map_err(|_| malformed())?;
    let alg = match header.remove("alg") {
        Some(Value::String(alg)) => alg,
        _ => return Err(malformed()),
    };
    let kid = match header.remove("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid),
        Some(_) => return Err(malformed()),
    };
    Ok((alg, kid))
}

/// A NumericDate (seconds since the epoch, maybe with a fraction) as a time.
fn numeric_date(value: &Value) -> Option<SystemTime> {
    let since_epoch = match value.as_u64() {
        Some(secs) => Duration::from_secs(secs),
        None => Duration::try_from_secs_f64(value.as_f64()?).ok()?,
    };
    UNIX_EPOCH.checked_add(since_epoch)
}

/// Whether `text` can be a user name or role: not empty, at most `max`
/// bytes, no control characters (which would forge log lines).
fn usable_text(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control)
}

/// The claim at `path`: the top-level claim of that exact name (namespaced
/// claims such as `https://example.com/roles` hold dots), else the dotted
/// path through nested objects.
fn claim_at<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The roles of the claim `value` (named `claim`, for the messages).
fn roles(value: Option<&Value>, claim: &str) -> Result<Vec<String>, AuthError> {
    let unusable = || AuthError::InvalidToken(format!("unusable '{claim}' claim"));
    let too_many = || AuthError::InvalidToken(format!("more than {MAX_ROLES} roles in '{claim}'"));
    let names: Vec<&str> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        // `take` bounds the work on a long string; one more than allowed
        // is enough to know there are too many.
        Some(Value::String(text)) => text.split_whitespace().take(MAX_ROLES + 1).collect(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_ROLES {
                return Err(too_many());
            }
            let mut names = items
                .iter()
                .map(|item| item.as_str().ok_or_else(unusable))
                .collect::<Result<Vec<_>, _>>()?;
            names.retain(|name| !name.is_empty());
            names
        }
        Some(_) => return Err(unusable()),
    };
    if names.len() > MAX_ROLES {
        return Err(too_many());
    }
    if let Some(name) = names.iter().find(|n| !usable_text(n, MAX_ROLE_BYTES)) {
        return Err(if name.len() > MAX_ROLE_BYTES {
            AuthError::InvalidToken(format!(
                "a role in '{claim}' is longer than {MAX_ROLE_BYTES} bytes"
            ))
        } else {
            unusable()
        });
    }
    Ok(names.into_iter().map(String::from).collect())
}

fn secret_key(secret: &[u8]) -> Result<PinnedKey, String> {
    if secret.is_empty() {
        return Err("JWT: the secret is empty".into());
    }
    let key = DecodingKey::from_secret(secret).map_err(|e| format!("JWT: the secret: {e}"))?;
    Ok(PinnedKey::new(None, Pinned::Hs256, key))
}

/// DER contents of the OIDs that name the supported public keys.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

fn pem_key(pem: &[u8]) -> Result<PinnedKey, String> {
    const HINT: &str = "give the public key (PEM \"PUBLIC KEY\", as `openssl pkey -pubout` writes)";
    let (label, body) = first_pem_block(pem).ok_or_else(|| {
        format!("JWT: the key is not a PEM public key (no BEGIN/END lines); {HINT}")
    })?;
    let pinned = match label {
        "RSA PUBLIC KEY" => Pinned::Rs256,
        "PUBLIC KEY" => {
            // jsonwebtoken tells RSA, EC and Ed25519 keys apart but not the
            // curve of an EC key, which decides between ES256 and ES384: read
            // the SubjectPublicKeyInfo's algorithm identifier here.
            let der = STANDARD
                .decode(body.split_ascii_whitespace().collect::<String>())
                .map_err(|_| "JWT: the PEM public key's body is not base64".to_string())?;
            let (oid, curve) = spki_algorithm(&der)
                .ok_or("JWT: the PEM public key is not a valid SubjectPublicKeyInfo")?;
            if oid == OID_RSA_ENCRYPTION {
                Pinned::Rs256
            } else if oid == OID_EC_PUBLIC_KEY && curve == Some(OID_P256) {
                Pinned::Es256
            } else if oid == OID_EC_PUBLIC_KEY {
                return Err(
                    "JWT: the PEM public key is an EC key on a curve other than P-256; \
                     only P-256 (ES256) is supported"
                        .into(),
                );
            } else if oid == OID_ED25519 {
                Pinned::EdDsa
            } else {
                return Err("JWT: the PEM public key is neither RSA, EC P-256 nor Ed25519".into());
            }
        }
        label if label.contains("PRIVATE KEY") => {
            return Err(format!(
                "JWT: the key is a private key (PEM \"{label}\"), but a public key is needed \
                 to verify tokens; {HINT}"
            ));
        }
        "CERTIFICATE" => return Err(format!("JWT: the key is a certificate; {HINT}")),
        label => return Err(format!("JWT: the key is a PEM \"{label}\"; {HINT}")),
    };
    let key = match pinned {
        Pinned::Rs256 => DecodingKey::from_rsa_pem(pem),
        Pinned::Es256 => DecodingKey::from_ec_pem(pem),
        Pinned::EdDsa => DecodingKey::from_ed_pem(pem),
        Pinned::Hs256 => return Err("JWT: a PEM key cannot be an HMAC secret".into()),
    }
    .map_err(|e| format!("JWT: the PEM public key cannot be read: {e}"))?;
    check_key(pinned, &key).map_err(|e| format!("JWT: the PEM public key {e}"))?;
    Ok(PinnedKey::new(None, pinned, key))
}

/// The label and base64 body of the first PEM block of `pem`.
fn first_pem_block(pem: &[u8]) -> Option<(&str, &str)> {
    const BEGIN: &str = "-----BEGIN ";
    let text = std::str::from_utf8(pem).ok()?;
    let after_begin = text.get(text.find(BEGIN)? + BEGIN.len()..)?;
    let (label, rest) = after_begin.split_once("-----")?;
    let (body, _) = rest.split_once(&format!("-----END {label}-----"))?;
    Some((label, body))
}

/// The algorithm OID of a DER SubjectPublicKeyInfo, with its parameter
/// when that is an OID (the curve of an EC key).
fn spki_algorithm(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, spki, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der_element(spki)? else {
        return None;
    };
    let (OID, oid, parameters) = der_element(algorithm)? else {
        return None;
    };
    let curve = match der_element(parameters) {
        Some((OID, curve, _)) => Some(curve),
        _ => None,
    };
    Some((oid, curve))
}

/// The first DER element of `input`: its tag, its contents and what
/// follows it. `None` when it is cut short or its length is not definite.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 {
            return None;
        }
        let (octets, rest) = rest.split_at_checked(octets)?;
        let len = octets
            .iter()
            .fold(0usize, |len, &octet| (len << 8) | usize::from(octet));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// Checks that `key` can verify `pinned` signatures, so a bad key is found
/// at start-up rather than refusing every token. The text completes "the
/// key …".
fn check_key(pinned: Pinned, key: &DecodingKey) -> Result<(), String> {
    match (pinned, key.kind()) {
        // jsonwebtoken reads the RSA key only when it verifies, and then
        // reports a bad key as a bad signature.
        (Pinned::Rs256, DecodingKeyKind::SecretOrDer(der)) if !is_pkcs1_public_key(der) => {
            return Err("is not a valid RSA public key".into());
        }
        (Pinned::Rs256, DecodingKeyKind::RsaModulusExponent { n, e })
            if n.is_empty() || e.is_empty() =>
        {
            return Err("is not a valid RSA public key".into());
        }
        // jsonwebtoken takes the first 32 bytes of an Ed25519 key, and
        // panics on fewer.
        (Pinned::EdDsa, DecodingKeyKind::SecretOrDer(bytes)) if bytes.len() != 32 => {
            return Err("is not an Ed25519 public key of 32 bytes".into());
        }
        _ => {}
    }
    // Building a verifier parses an EC or Ed25519 point: a point off the
    // curve fails here. The signature is of course wrong.
    jsonwebtoken::crypto::verify("", b"", key, pinned.algorithm())
        .map(drop)
        .map_err(|_| format!("is not a valid {} key", pinned.name()))
}

/// Whether `der` is a PKCS#1 RSAPublicKey: a SEQUENCE of two INTEGERs.
fn is_pkcs1_public_key(der: &[u8]) -> bool {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    let Some((SEQUENCE, fields, [])) = der_element(der) else {
        return false;
    };
    let Some((INTEGER, modulus, rest)) = der_element(fields) else {
        return false;
    };
    let Some((INTEGER, exponent, [])) = der_element(rest) else {
        return false;
    };
    !modulus.is_empty() && !exponent.is_empty()
}

fn jwks_keys(json: &str) -> Result<Vec<PinnedKey>, String> {
    let set: Value =
        serde_json::from_str(json).map_err(|e| format!("JWT: the JWK set is not JSON: {e}"))?;
    let entries = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWT: the JWK set has no \"keys\" array")?;
    if entries.is_empty() {
        return Err("JWT: the JWK set has no keys".into());
    }
    let mut keys: Vec<PinnedKey> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let key = jwk_key(entry).map_err(|e| {
            let kid = entry.get("kid").and_then(Value::as_str);
            match kid {
                Some(kid) => format!("JWT: key {index} (kid {kid:?}) of the JWK set {e}"),
                None => format!("JWT: key {index} of the JWK set {e}"),
            }
        })?;
        match &key.kid {
            Some(kid) if keys.iter().any(|k| k.kid.as_ref() == Some(kid)) => {
                return Err(format!("JWT: two keys of the JWK set have the kid {kid:?}"));
            }
            // Only a set's sole key can be used by a token without `kid`.
            None if entries.len() > 1 => {
                return Err(format!(
                    "JWT: key {index} of the JWK set has no kid, which every key of a set \
                     of several needs"
                ));
            }
            _ => {}
        }
        keys.push(key);
    }
    Ok(keys)
}

/// One key of a JWK set. The text of an error completes "key N of the JWK
/// set …".
fn jwk_key(entry: &Value) -> Result<PinnedKey, String> {
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("is not a JWK: {e}"))?;
    let kty = entry.get("kty").and_then(Value::as_str).unwrap_or("");
    let pinned = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Pinned::Rs256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Pinned::Es256,
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Pinned::EdDsa
        }
        AlgorithmParameters::EllipticCurve(_) => {
            return Err("is an EC key on a curve other than P-256 (ES256)".into());
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("is an OKP key on a curve other than Ed25519 (EdDSA)".into());
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "is a symmetric key (kty \"oct\"), which a JWK set may not hold; \
                 give an HS256 secret as the secret key"
                    .into(),
            );
        }
        _ if matches!(kty, "RSA" | "EC" | "OKP") => {
            return Err(format!(
                "is a {kty} key whose parameters are missing or malformed"
            ));
        }
        _ => {
            return Err(format!(
                "has the key type {kty:?}; RSA, EC P-256 and OKP Ed25519 keys are supported"
            ));
        }
    };
    if let Some(alg) = jwk.common.key_algorithm
        && alg != KeyAlgorithm::from(pinned.algorithm())
    {
        let alg = entry.get("alg").and_then(Value::as_str).unwrap_or("");
        return Err(format!(
            "has the alg {alg:?}, but a {kty} key verifies {}",
            pinned.name()
        ));
    }
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("is not for signatures (its \"use\" is not \"sig\")".into()),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("is not for verifying (its \"key_ops\" lack \"verify\")".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot be read: {e}"))?;
    check_key(pinned, &key)?;
    Ok(PinnedKey::new(jwk.common.key_id.clone(), pinned, key))
}

#[cfg(test)]
mod tests;
