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
mod tests {
    use super::*;
    use crate::auth::{Handshake, TransportKind};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use stompbox_codec::Headers;

    const SECRET: &[u8] = b"a test secret of at least 32 bytes!!";
    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/fixtures/jwt-rs256-private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/fixtures/jwt-rs256-public.pem");
    const RSA_PUBLIC_PKCS1: &[u8] =
        include_bytes!("../../tests/fixtures/jwt-rs256-public-pkcs1.pem");

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    /// Claims of a token for `alice` valid for ten minutes.
    fn claims() -> Value {
        json!({"sub": "alice", "exp": now() + 600})
    }

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        encode(&header, claims, key).expect("encode")
    }

    fn hs_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET).expect("secret")
    }

    fn hs_token(claims: &Value) -> String {
        sign(Algorithm::HS256, &hs_key(), None, claims)
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("RSA key")
    }

    /// A fresh key pair: the encoding key and the PEM public key.
    fn generated(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, String) {
        let pair = rcgen::KeyPair::generate_for(alg).expect("generate");
        let private = pair.serialize_pem();
        let key = if alg == &rcgen::PKCS_ED25519 {
            EncodingKey::from_ed_pem(private.as_bytes())
        } else {
            EncodingKey::from_ec_pem(private.as_bytes())
        }
        .expect("encoding key");
        (key, pair.public_key_pem())
    }

    fn authenticator(key: JwtKey) -> JwtAuthenticator {
        JwtAuthenticator::new(JwtConfig::new(key)).expect("authenticator")
    }

    fn hs_authenticator() -> JwtAuthenticator {
        authenticator(JwtKey::Secret(SECRET.to_vec()))
    }

    fn configured(edit: impl FnOnce(&mut JwtConfig)) -> JwtAuthenticator {
        let mut config = JwtConfig::new(JwtKey::Secret(SECRET.to_vec()));
        edit(&mut config);
        JwtAuthenticator::new(config).expect("authenticator")
    }

    fn handshake(headers: &[(&str, &str)], uri: &str) -> Handshake {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        Handshake {
            transport: TransportKind::WebSocket,
            tls: false,
            remote_addr: "127.0.0.1:1".parse().expect("addr"),
            headers: map,
            uri: Some(uri.parse().expect("uri")),
        }
    }

    fn request(connect: &[(&str, &str)], handshake: Handshake) -> ConnectRequest {
        let mut headers = Headers::new();
        for (name, value) in connect {
            headers.push_str(name, value);
        }
        ConnectRequest::new("s1", headers, handshake)
    }

    /// `token` as the CONNECT passcode.
    fn in_passcode(token: &str) -> ConnectRequest {
        request(
            &[("login", "ignored"), ("passcode", token)],
            handshake(&[], "/ws"),
        )
    }

    async fn check(
        authenticator: &JwtAuthenticator,
        token: &str,
    ) -> Result<Option<Identity>, AuthError> {
        authenticator.authenticate(&in_passcode(token)).await
    }

    async fn name_of(authenticator: &JwtAuthenticator, token: &str) -> String {
        check(authenticator, token)
            .await
            .expect("accepted")
            .expect("an identity")
            .name
    }

    fn refused(reason: &str) -> Result<Option<Identity>, AuthError> {
        Err(AuthError::InvalidToken(reason.into()))
    }

    /// A JWK of the public `key`, with `kid`.
    fn jwk(key: &DecodingKey, alg: Algorithm, kid: Option<&str>) -> Value {
        let mut jwk = Jwk::from_decoding_key(key, Some(alg)).expect("jwk");
        jwk.common.key_id = kid.map(String::from);
        serde_json::to_value(jwk).expect("json")
    }

    fn jwks(keys: &[Value]) -> JwtKey {
        JwtKey::Jwks(json!({ "keys": keys }).to_string())
    }

    fn new_error(key: JwtKey) -> String {
        JwtAuthenticator::new(JwtConfig::new(key)).expect_err("refused")
    }

    #[tokio::test]
    async fn hs256_token_gives_name_roles_and_expiry() {
        let exp = now() + 600;
        let token = hs_token(&json!({"sub": "alice", "exp": exp, "roles": ["admin", "ops"]}));
        let identity = check(&hs_authenticator(), &token)
            .await
            .expect("accepted")
            .expect("identity");
        assert_eq!(
            identity,
            Identity::new("alice")
                .with_roles(["admin", "ops"])
                .expiring_at(UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn rs256_with_spki_or_pkcs1_pem() {
        let token = sign(Algorithm::RS256, &rsa_key(), None, &claims());
        for pem in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
            let auth = authenticator(JwtKey::PublicKeyPem(pem.to_vec()));
            assert_eq!(name_of(&auth, &token).await, "alice");
        }
    }

    #[tokio::test]
    async fn es256_and_eddsa_with_pem() {
        for (rcgen_alg, alg) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
        ] {
            let (key, public) = generated(rcgen_alg);
            let auth = authenticator(JwtKey::PublicKeyPem(public.into_bytes()));
            let token = sign(alg, &key, None, &claims());
            assert_eq!(name_of(&auth, &token).await, "alice");
            // Signed by another key of the same kind.
            let (other, _) = generated(rcgen_alg);
            let forged = sign(alg, &other, None, &claims());
            assert_eq!(
                check(&auth, &forged).await,
                refused("signature does not verify")
            );
        }
    }

    #[tokio::test]
    async fn jwks_picks_the_key_by_kid() {
        let (ec, ec_public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (ed, ed_public) = generated(&rcgen::PKCS_ED25519);
        let rsa_public = DecodingKey::from_rsa_pem(RSA_PUBLIC).expect("rsa");
        let ec_public = DecodingKey::from_ec_pem(ec_public.as_bytes()).expect("ec");
        let ed_public = DecodingKey::from_ed_pem(ed_public.as_bytes()).expect("ed");
        let auth = authenticator(jwks(&[
            jwk(&rsa_public, Algorithm::RS256, Some("r")),
            jwk(&ec_public, Algorithm::ES256, Some("e")),
            jwk(&ed_public, Algorithm::EdDSA, Some("d")),
        ]));
        let rsa = rsa_key();
        for (alg, key, kid) in [
            (Algorithm::RS256, &rsa, "r"),
            (Algorithm::ES256, &ec, "e"),
            (Algorithm::EdDSA, &ed, "d"),
        ] {
            let token = sign(alg, key, Some(kid), &claims());
            assert_eq!(name_of(&auth, &token).await, "alice", "{kid}");
        }
        // The right key type under the wrong kid: that key pins another alg.
        let token = sign(Algorithm::ES256, &ec, Some("r"), &claims());
        assert_eq!(
            check(&auth, &token).await,
            refused("algorithm ES256 not accepted")
        );
        let token = sign(Algorithm::ES256, &ec, Some("nope"), &claims());
        assert_eq!(check(&auth, &token).await, refused("unknown key id"));
        let token = sign(Algorithm::ES256, &ec, None, &claims());
        assert_eq!(
            check(&auth, &token).await,
            refused("the token has no key id (kid)")
        );
    }

    #[tokio::test]
    async fn a_single_key_jwks_needs_no_kid() {
        let rsa_public = DecodingKey::from_rsa_pem(RSA_PUBLIC).expect("rsa");
        let token = sign(Algorithm::RS256, &rsa_key(), None, &claims());
        let without_kid = authenticator(jwks(&[jwk(&rsa_public, Algorithm::RS256, None)]));
        assert_eq!(name_of(&without_kid, &token).await, "alice");
        let with_kid = authenticator(jwks(&[jwk(&rsa_public, Algorithm::RS256, Some("k1"))]));
        assert_eq!(name_of(&with_kid, &token).await, "alice");
        let wrong_kid = sign(Algorithm::RS256, &rsa_key(), Some("k2"), &claims());
        assert_eq!(
            check(&with_kid, &wrong_kid).await,
            refused("unknown key id")
        );
    }

    #[tokio::test]
    async fn each_carrier_is_read_in_order() {
        let token = |name: &str| hs_token(&json!({"sub": name, "exp": now() + 600}));
        let (pass, connect, upgrade, query, cookie) = (
            token("passcode"),
            token("connect"),
            token("handshake"),
            token("query"),
            token("cookie"),
        );
        let auth = configured(|c| c.cookie = Some("jwt".into()));
        let connect_auth = format!("Bearer {connect}");
        let upgrade_auth = format!("Bearer {upgrade}");
        let cookie_header = format!("other=1; jwt={cookie}");
        let uri = format!("/ws?access_token={query}");
        let all_connect = [
            ("passcode", pass.as_str()),
            ("Authorization", connect_auth.as_str()),
        ];
        let all_handshake = [
            ("authorization", upgrade_auth.as_str()),
            ("cookie", cookie_header.as_str()),
        ];
        // Drop the carriers one at a time, first to last.
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        // (CONNECT headers, handshake headers, handshake URI, whose token wins)
        let cases: [(Pairs, Pairs, &str, &str); 5] = [
            (&all_connect, &all_handshake, &uri, "passcode"),
            (&all_connect[1..], &all_handshake, &uri, "connect"),
            (&[], &all_handshake, &uri, "handshake"),
            (&[], &all_handshake[1..], &uri, "query"),
            (&[], &all_handshake[1..], "/ws", "cookie"),
        ];
        for (connect, upgrade, uri, expected) in cases {
            let identity = auth
                .authenticate(&request(connect, handshake(upgrade, uri)))
                .await
                .expect("accepted")
                .expect("identity");
            assert_eq!(identity.name, expected);
        }
        let nothing = request(&[], handshake(&all_handshake[1..], "/ws"));
        assert_eq!(hs_authenticator().authenticate(&nothing).await, Ok(None));
    }

    #[tokio::test]
    async fn values_that_are_not_jwts_are_left_to_other_methods() {
        let auth = hs_authenticator();
        let passwords = [
            "hunter2",
            "correct.horse.battery",
            "a.b",
            "a.b.c.d",
            "a..c",
            "a.b.c d",
            "x.y.z=",
            "",
        ];
        for password in passwords {
            assert_eq!(check(&auth, password).await, Ok(None), "{password:?}");
        }
        let opaque = request(
            &[("Authorization", "Bearer opaque-token")],
            handshake(&[("authorization", "Basic dXNlcjpwdw==")], "/ws?x=1"),
        );
        assert_eq!(auth.authenticate(&opaque).await, Ok(None));
        let empty = request(
            &[],
            Handshake::tcp("127.0.0.1:1".parse().expect("addr"), false),
        );
        assert_eq!(auth.authenticate(&empty).await, Ok(None));
        // A password in the passcode does not hide a token further on.
        let token = hs_token(&claims());
        let both = request(
            &[("login", "bob"), ("passcode", "correct.horse.battery")],
            handshake(&[], &format!("/ws?access_token={token}")),
        );
        let identity = auth.authenticate(&both).await.expect("ok").expect("id");
        assert_eq!(identity.name, "alice");
    }

    #[tokio::test]
    async fn expiry_and_not_before_allow_the_leeway() {
        let auth = hs_authenticator();
        let at = |exp: u64, nbf: u64| hs_token(&json!({"sub": "alice", "exp": exp, "nbf": nbf}));
        let now = now();
        assert_eq!(
            check(&auth, &at(now - 120, now - 600)).await,
            Err(AuthError::TokenExpired)
        );
        assert_eq!(name_of(&auth, &at(now - 5, now - 600)).await, "alice");
        assert_eq!(
            check(&auth, &at(now + 900, now + 600)).await,
            Err(AuthError::TokenNotYetValid)
        );
        assert_eq!(name_of(&auth, &at(now + 900, now + 5)).await, "alice");
        let strict = configured(|c| c.leeway = Duration::ZERO);
        assert_eq!(
            check(&strict, &at(now - 5, now - 600)).await,
            Err(AuthError::TokenExpired)
        );
    }

    #[tokio::test]
    async fn exp_is_required_and_dates_must_be_numbers() {
        let auth = hs_authenticator();
        let no_exp = hs_token(&json!({"sub": "alice"}));
        assert_eq!(
            check(&auth, &no_exp).await,
            refused("the token has no exp claim")
        );
        for claims in [
            json!({"sub": "alice", "exp": "tomorrow"}),
            json!({"sub": "alice", "exp": -1}),
            json!({"sub": "alice", "exp": now() + 600, "nbf": "now"}),
        ] {
            assert_eq!(
                check(&auth, &hs_token(&claims)).await,
                refused("malformed token")
            );
        }
        let fractional = hs_token(&json!({"sub": "alice", "exp": now() as f64 + 600.5}));
        assert_eq!(name_of(&auth, &fractional).await, "alice");
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let auth = configured(|c| {
            c.issuer = Some("https://idp.example".into());
            c.audience = Some("stompbox".into());
        });
        let with = |extra: Value| {
            let mut claims = claims();
            for (name, value) in extra.as_object().expect("object") {
                claims[name] = value.clone();
            }
            hs_token(&claims)
        };
        let iss = "https://idp.example";
        for good in [
            json!({"iss": iss, "aud": "stompbox"}),
            json!({"iss": iss, "aud": ["other", "stompbox"]}),
        ] {
            assert_eq!(name_of(&auth, &with(good)).await, "alice");
        }
        for (claims, reason) in [
            (json!({"iss": iss, "aud": "other"}), "wrong audience"),
            (json!({"iss": iss, "aud": ["a", "b"]}), "wrong audience"),
            (json!({"iss": iss}), "wrong audience"),
            (
                json!({"iss": "https://evil.example", "aud": "stompbox"}),
                "wrong issuer",
            ),
            (json!({"iss": [iss], "aud": "stompbox"}), "wrong issuer"),
            (json!({"aud": "stompbox"}), "wrong issuer"),
        ] {
            assert_eq!(check(&auth, &with(claims)).await, refused(reason));
        }
        // Without an audience configured, the token's is not looked at.
        let open = hs_authenticator();
        assert_eq!(
            name_of(&open, &with(json!({"aud": "anyone", "iss": "x"}))).await,
            "alice"
        );
    }

    #[tokio::test]
    async fn a_wrong_signature_is_refused() {
        let other = EncodingKey::from_secret(b"another secret").expect("secret");
        let token = sign(Algorithm::HS256, &other, None, &claims());
        assert_eq!(
            check(&hs_authenticator(), &token).await,
            refused("signature does not verify")
        );
        // A valid token whose payload was swapped.
        let good = hs_token(&claims());
        let evil = hs_token(&json!({"sub": "root", "exp": now() + 600}));
        let parts: Vec<&str> = good.split('.').collect();
        let evil_payload = evil.split('.').nth(1).expect("payload");
        let spliced = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(
            check(&hs_authenticator(), &spliced).await,
            refused("signature does not verify")
        );
    }

    #[tokio::test]
    async fn unsigned_tokens_are_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        let rsa = authenticator(JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()));
        for auth in [&hs_authenticator(), &rsa] {
            let with_signature = format!("{header}.{payload}.c2ln");
            assert_eq!(
                check(auth, &with_signature).await,
                refused("algorithm none not accepted")
            );
            // Without a signature it is not even taken for a token.
            let bare = format!("{header}.{payload}.");
            assert_eq!(check(auth, &bare).await, Ok(None));
        }
    }

    #[tokio::test]
    async fn an_hmac_keyed_with_the_rsa_public_key_is_refused() {
        let confused = EncodingKey::from_secret(RSA_PUBLIC).expect("secret");
        let token = sign(Algorithm::HS256, &confused, None, &claims());
        let rsa = authenticator(JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()));
        assert_eq!(
            check(&rsa, &token).await,
            refused("algorithm HS256 not accepted")
        );
        // And the other way round: a secret accepts no RS256 token.
        let rs = sign(Algorithm::RS256, &rsa_key(), None, &claims());
        assert_eq!(
            check(&hs_authenticator(), &rs).await,
            refused("algorithm RS256 not accepted")
        );
    }

    #[tokio::test]
    async fn the_user_claim_must_be_a_usable_name() {
        let auth = hs_authenticator();
        for sub in [
            Value::Null,
            json!(""),
            json!(42),
            json!("ali\nce"),
            json!("x".repeat(257)),
        ] {
            let token = hs_token(&json!({"sub": sub, "exp": now() + 600}));
            assert_eq!(
                check(&auth, &token).await,
                refused("no usable 'sub' claim"),
                "{sub}"
            );
        }
        let missing = hs_token(&json!({"exp": now() + 600}));
        assert_eq!(
            check(&auth, &missing).await,
            refused("no usable 'sub' claim")
        );
        let longest = "é".repeat(128);
        let token = hs_token(&json!({"sub": longest, "exp": now() + 600}));
        assert_eq!(name_of(&auth, &token).await, longest);

        let custom = configured(|c| c.user_claim = "preferred_username".into());
        let token =
            hs_token(&json!({"sub": "id-1", "preferred_username": "carol", "exp": now() + 600}));
        assert_eq!(name_of(&custom, &token).await, "carol");
        assert_eq!(
            check(&custom, &hs_token(&claims())).await,
            refused("no usable 'preferred_username' claim")
        );
    }

    async fn roles_of(auth: &JwtAuthenticator, extra: Value) -> Result<Vec<String>, AuthError> {
        let mut claims = claims();
        for (name, value) in extra.as_object().expect("object") {
            claims[name] = value.clone();
        }
        check(auth, &hs_token(&claims))
            .await
            .map(|identity| identity.expect("identity").roles)
    }

    #[tokio::test]
    async fn roles_come_as_an_array_a_string_or_a_path() {
        let auth = hs_authenticator();
        assert_eq!(roles_of(&auth, json!({})).await, Ok(vec![]));
        assert_eq!(
            roles_of(&auth, json!({"roles": ["a", "b"]})).await,
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            roles_of(&auth, json!({"roles": " read  write\tadmin "})).await,
            Ok(vec!["read".into(), "write".into(), "admin".into()])
        );
        for bad in [json!({"roles": 7}), json!({"roles": ["a", 1]})] {
            assert_eq!(
                roles_of(&auth, bad).await,
                Err(AuthError::InvalidToken("unusable 'roles' claim".into()))
            );
        }

        let keycloak = configured(|c| c.roles_claim = "realm_access.roles".into());
        assert_eq!(
            roles_of(&keycloak, json!({"realm_access": {"roles": ["user"]}})).await,
            Ok(vec!["user".into()])
        );
        assert_eq!(
            roles_of(&keycloak, json!({"realm_access": {"other": 1}})).await,
            Ok(vec![])
        );
        let scope = configured(|c| c.roles_claim = "scope".into());
        assert_eq!(
            roles_of(&scope, json!({"scope": "openid send:chat"})).await,
            Ok(vec!["openid".into(), "send:chat".into()])
        );
        let namespaced = configured(|c| c.roles_claim = "https://example.com/roles".into());
        assert_eq!(
            roles_of(&namespaced, json!({"https://example.com/roles": ["x"]})).await,
            Ok(vec!["x".into()])
        );
    }

    #[tokio::test]
    async fn roles_are_bounded() {
        let auth = hs_authenticator();
        let names = |n: usize| (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>();
        assert_eq!(
            roles_of(&auth, json!({"roles": names(64)})).await,
            Ok(names(64))
        );
        let too_many = Err(AuthError::InvalidToken(
            "more than 64 roles in 'roles'".into(),
        ));
        assert_eq!(roles_of(&auth, json!({"roles": names(65)})).await, too_many);
        assert_eq!(
            roles_of(&auth, json!({"roles": names(65).join(" ")})).await,
            too_many
        );
        assert_eq!(
            roles_of(&auth, json!({"roles": ["x".repeat(257)]})).await,
            Err(AuthError::InvalidToken(
                "a role in 'roles' is longer than 256 bytes".into()
            ))
        );
    }

    #[tokio::test]
    async fn oversized_and_malformed_tokens_are_refused() {
        let auth = hs_authenticator();
        let big = hs_token(&json!({"sub": "alice", "exp": now() + 600, "pad": "x".repeat(8200)}));
        assert!(big.len() > MAX_TOKEN_BYTES);
        assert_eq!(check(&auth, &big).await, refused("token too long"));
        let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
        let payload = b64(&claims().to_string());
        for token in [
            format!("{}.{payload}.c2ln", b64(r#"{"typ":"JWT"}"#)),
            format!("{}.{payload}.c2ln", b64(r#"{"alg":5}"#)),
            format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256","kid":5}"#)),
            // Well signed, but the claims are not an object.
            hs_token(&json!([1])),
        ] {
            assert_eq!(check(&auth, &token).await, refused("malformed token"));
        }
        let odd_alg = format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256\n; x"}"#));
        assert_eq!(
            check(&auth, &odd_alg).await,
            refused("algorithm not accepted")
        );
    }

    #[test]
    fn new_refuses_unusable_keys() {
        assert!(new_error(JwtKey::Secret(Vec::new())).contains("secret is empty"));

        let private = new_error(JwtKey::PublicKeyPem(RSA_PRIVATE.to_vec()));
        assert!(private.contains("a public key is needed"), "{private}");
        let ec_private = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate")
            .serialize_pem();
        let private = new_error(JwtKey::PublicKeyPem(ec_private.into_bytes()));
        assert!(private.contains("a public key is needed"), "{private}");

        let garbage = new_error(JwtKey::PublicKeyPem(b"not a key".to_vec()));
        assert!(garbage.contains("not a PEM public key"), "{garbage}");
        let broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let broken = new_error(JwtKey::PublicKeyPem(broken.to_vec()));
        assert!(
            broken.contains("not a valid SubjectPublicKeyInfo"),
            "{broken}"
        );
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            .expect("generate")
            .public_key_pem();
        let p384 = new_error(JwtKey::PublicKeyPem(p384.into_bytes()));
        assert!(p384.contains("other than P-256"), "{p384}");

        assert!(new_error(JwtKey::Jwks(r#"{"keys":[]}"#.into())).contains("no keys"));
        assert!(new_error(JwtKey::Jwks("{".into())).contains("not JSON"));
        assert!(new_error(JwtKey::Jwks("{}".into())).contains("no \"keys\" array"));
    }

    #[test]
    fn new_refuses_unusable_jwks() {
        let rsa = DecodingKey::from_rsa_pem(RSA_PUBLIC).expect("rsa");
        let rsa_jwk = |kid: Option<&str>| jwk(&rsa, Algorithm::RS256, kid);
        let with = |mut jwk: Value, field: &str, value: Value| {
            jwk[field] = value;
            jwk
        };
        let cases = [
            (
                vec![json!({"kty": "oct", "k": "c2VjcmV0"})],
                "symmetric key",
            ),
            (
                vec![json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"})],
                "curve other than P-256",
            ),
            (
                vec![json!({"kty": "RSA", "n": "AQAB"})],
                "missing or malformed",
            ),
            (vec![json!({"kty": "AKP", "x": "AA"})], "key type \"AKP\""),
            (
                vec![with(rsa_jwk(None), "alg", json!("RS512"))],
                "alg \"RS512\"",
            ),
            (
                vec![with(rsa_jwk(None), "alg", json!("RSA-OAEP"))],
                "alg \"RSA-OAEP\"",
            ),
            (
                vec![with(rsa_jwk(None), "use", json!("enc"))],
                "not for signatures",
            ),
            (
                vec![with(rsa_jwk(None), "key_ops", json!(["encrypt"]))],
                "not for verifying",
            ),
            (vec![rsa_jwk(Some("a")), rsa_jwk(Some("a"))], "two keys"),
            (vec![rsa_jwk(Some("a")), rsa_jwk(None)], "no kid"),
            // Too short for Ed25519 (jsonwebtoken would panic on it).
            (
                vec![json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})],
                "32 bytes",
            ),
            // Not a point of P-256.
            (
                vec![json!({"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"})],
                "not a valid ES256 key",
            ),
        ];
        for (keys, expected) in cases {
            let error = new_error(jwks(&keys));
            assert!(error.contains(expected), "{error} (wanted {expected:?})");
        }
        // A matching alg and "use": "sig" are fine.
        let fine = with(
            with(rsa_jwk(Some("a")), "alg", json!("RS256")),
            "use",
            json!("sig"),
        );
        assert!(JwtAuthenticator::new(JwtConfig::new(jwks(&[fine]))).is_ok());
    }

    #[test]
    fn what_is_taken_for_a_jwt() {
        assert!(is_jwt_shaped("a.b.c"));
        assert!(is_jwt_shaped("eyJ-_09.AZaz.x"));
        for value in [
            "", "a", "a.b", "a.b.", ".b.c", "a.b.c.d", "a.b.c=", "a+b.c.d", "a.b.c ",
        ] {
            assert!(!is_jwt_shaped(value), "{value:?}");
        }
        // Shaped, but the header is no JSON object: a password.
        assert!(!looks_like_jwt("abc.def.ghi"));
        assert!(!looks_like_jwt(&format!(
            "{}.e30.x",
            URL_SAFE_NO_PAD.encode("[1]")
        )));
        assert!(looks_like_jwt(&format!(
            "{}.x.x",
            URL_SAFE_NO_PAD.encode("{}")
        )));
        assert!(looks_like_jwt(&hs_token(&claims())));
        // Too long to be looked into: taken as a token, to be refused.
        assert!(looks_like_jwt(&format!(
            "a.{}.c",
            "b".repeat(MAX_TOKEN_BYTES)
        )));
    }
}
