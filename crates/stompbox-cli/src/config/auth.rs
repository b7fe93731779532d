//! `[auth]`: the authentication methods (password users, JSON Web Tokens,
//! an HTTP service), anonymous sessions, limits and access rules.
//!
//! Each method is checked by the library's own constructor here, at
//! configuration time, so a bad key, hash or URL is an error naming its key
//! and where it was set, not a failure of every CONNECT later. Secrets (the
//! JWT secret, password hashes) are never quoted back.

use super::check::Check;
use super::file::{AuthSection, RuleEntry, UserEntry, millis};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stompbox::auth::access::{AccessRules, Rule, Who};
use stompbox::auth::{
    AuthConfig, HttpAuthConfig, HttpAuthenticator, JwtAuthenticator, JwtConfig, JwtKey,
    PasswordAuthenticator, PasswordConfig, PasswordUser, verify_password_hash,
};

/// Longest wait before a refused CONNECT's ERROR: past a minute a client
/// would have given up and the connection only sits there.
const MAX_FAILURE_DELAY_MS: u64 = 60_000;
/// Shortest HS256 secret: the hash's own size. A shorter one can be found
/// by trying secrets against one captured token.
const MIN_JWT_SECRET_BYTES: usize = 32;
/// Largest clock skew allowed on a token's `exp`: beyond it "expired" stops
/// meaning much.
const MAX_JWT_LEEWAY_MS: u64 = 600_000;

/// Printed at start-up when no authentication method is configured.
pub(super) const AUTH_OFF: &str = "authentication is off: every session is anonymous and a \
     CONNECT login is only a display name; set up users, a JWT key or an HTTP service in \
     [auth] of stompbox.toml to verify who connects";

/// What `--check` needs of `[auth]` that [`AuthConfig`] does not keep in a
/// form that can be printed back.
#[derive(Debug, Clone, Default)]
pub(super) struct AuthSource {
    /// `auth.rules` as written; `None`: the key is absent, access is open.
    pub(super) rules: Option<Vec<RuleEntry>>,
    /// The file the JWT key was read from, when it came from one.
    pub(super) jwt_key_file: Option<PathBuf>,
}

/// Checks `[auth]` into the library's settings and what `--check` prints.
pub(super) fn auth_config(check: &mut Check, a: AuthSection) -> (AuthConfig, AuthSource) {
    let mut c = AuthConfig::default();
    let mut source = AuthSource::default();
    if let Some(on) = a.anonymous {
        // Without a method every session is anonymous anyway; that is said
        // at start-up, and documented, rather than refused.
        c.allow_anonymous = on;
    }
    if let Some(ms) = a.failure_delay_ms {
        check.at_most("auth.failure_delay_ms", ms, MAX_FAILURE_DELAY_MS);
        c.failure_delay = Duration::from_millis(ms);
    }
    if let Some(n) = a.sessions_per_user {
        // 0 is no limit.
        c.max_sessions_per_user = n;
    }
    if let Some(n) = a.failures_per_address_per_min {
        // 0 is no limit.
        c.failures_per_address_per_min = n;
    }
    c.passwords = passwords(check, a.users, a.users_file, a.password_cache_ttl_ms);
    let keys = JwtKeys {
        secret: a.jwt_secret,
        public_key_file: a.jwt_public_key_file,
        jwks_file: a.jwt_jwks_file,
    };
    let options = JwtOptions {
        issuer: a.jwt_issuer,
        audience: a.jwt_audience,
        user_claim: a.jwt_user_claim,
        roles_claim: a.jwt_roles_claim,
        cookie: a.jwt_cookie,
        leeway_ms: a.jwt_leeway_ms,
    };
    (c.jwt, source.jwt_key_file) = jwt(check, keys, options);
    c.http = http(
        check,
        a.http_url,
        a.http_timeout_ms,
        a.http_cache_ttl_ms,
        a.http_ca_file,
    );
    if let Some(entries) = a.rules {
        let (rules, entries) = rules(check, entries);
        if let Some(rules) = rules {
            c.rules = rules;
        }
        source.rules = Some(entries);
    }
    (c, source)
}

/// A text key that is off when empty.
fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Refuses a key of a method that is off, as `relay.tls_*` without
/// `relay.tls`: set to anything but its default, it would silently do
/// nothing. (The default itself is accepted, so the shipped file, every
/// key uncommented, stays valid.)
fn stray(check: &mut Check, key: &'static str, set: bool, needs: &str) {
    if set {
        check.fail(key, format!("has no effect while {needs}"));
    }
}

// ---------------------------------------------------------------------------
// Password users.

/// The `auth.users_file` format: `[[users]]` tables like `auth.users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a file of [[users]] tables")]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// Password users from `auth.users` and `auth.users_file`, merged. Password
/// login is on when either has a user; an `auth.users_file` that is set
/// always turns it on (an empty file is an error), so a file that fails to
/// load never quietly leaves the server without authentication.
fn passwords(
    check: &mut Check,
    users: Option<Vec<UserEntry>>,
    users_file: Option<String>,
    cache_ttl_ms: Option<u64>,
) -> Option<PasswordConfig> {
    let problems_before = check.problems.len();
    let inline = users.unwrap_or_default();
    let file = non_empty(users_file).map(PathBuf::from);
    // Where each name was seen first, for the duplicate error.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut all = Vec::new();
    for user in inline.iter() {
        check_user(check, "auth.users", None, user);
        if let Some(first) = seen.get(&user.name) {
            check.fail(
                "auth.users",
                format!("user \"{}\" is listed twice (first {first})", user.name),
            );
        } else {
            seen.insert(user.name.clone(), "in auth.users".to_owned());
        }
        all.push(user.clone());
    }
    if let Some(path) = &file {
        match read_users_file(path) {
            Ok(users) if users.is_empty() => check.fail(
                "auth.users_file",
                format!(
                    "{} has no [[users]] entries, so password login would let nobody in; add \
                     users, or set auth.users_file = \"\"",
                    path.display()
                ),
            ),
            Ok(users) => {
                for user in users {
                    check_user(check, "auth.users_file", Some(path), &user);
                    if let Some(first) = seen.get(&user.name) {
                        check.fail(
                            "auth.users_file",
                            format!(
                                "{}: user \"{}\" is a duplicate: it is also {first}",
                                path.display(),
                                user.name
                            ),
                        );
                    } else {
                        seen.insert(user.name.clone(), format!("earlier in {}", path.display()));
                    }
                    all.push(user);
                }
            }
            Err(message) => check.fail("auth.users_file", message),
        }
    }
    let d = PasswordConfig::new(Vec::new());
    if all.is_empty() && file.is_none() {
        stray(
            check,
            "auth.password_cache_ttl_ms",
            cache_ttl_ms.is_some_and(|ms| ms != millis(d.cache_ttl)),
            "no password user is configured (auth.users, auth.users_file)",
        );
        return None;
    }
    let users = all
        .into_iter()
        .map(|u| PasswordUser::new(u.name, u.password_hash).with_roles(u.roles))
        .collect();
    let mut config = PasswordConfig::new(users);
    if let Some(ms) = cache_ttl_ms {
        // 0 turns the cache off: every login costs an argon2 run.
        config.cache_ttl = Duration::from_millis(ms);
    }
    // The library's own check, once the users passed those above (it would
    // only repeat their problems, without saying where a user came from).
    if check.problems.len() == problems_before
        && let Err(message) = PasswordAuthenticator::new(config.clone())
    {
        let key = if inline.is_empty() {
            "auth.users_file"
        } else {
            "auth.users"
        };
        check.fail(key, message);
    }
    Some(config)
}

/// Checks one user; `file` is where it came from, if not `auth.users`.
fn check_user(check: &mut Check, key: &'static str, file: Option<&Path>, user: &UserEntry) {
    let at = match file {
        Some(path) => format!("{}: ", path.display()),
        None => String::new(),
    };
    let name = &user.name;
    if name.trim().is_empty() || name.trim() != name || name.chars().any(char::is_control) {
        check.fail(
            key,
            format!(
                "{at}user name \"{}\" must not be empty, nor start or end with spaces, nor hold \
                 control characters",
                name.escape_debug()
            ),
        );
    }
    // The hash itself is never quoted: it lets anyone who sees it try
    // passwords offline.
    if let Err(message) = verify_password_hash(&user.password_hash) {
        check.fail(
            key,
            format!(
                "{at}user \"{}\": password_hash is not usable: {message}; make one with \
                 `stompbox hash-password`",
                name.escape_debug()
            ),
        );
    }
    for role in &user.roles {
        if !role_ok(role) {
            check.fail(
                key,
                format!(
                    "{at}user \"{}\": role \"{}\" must be a word without spaces, like \"admin\"",
                    name.escape_debug(),
                    role.escape_debug()
                ),
            );
        }
    }
}

/// A role as the access rules name it (`role:NAME`) and a token's
/// space-separated roles claim can carry it.
fn role_ok(role: &str) -> bool {
    !role.is_empty() && !role.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The users of `path`. A syntax error names the line, without quoting it
/// (as the TOML parser would): the line may hold a password hash.
fn read_users_file(path: &Path) -> Result<Vec<UserEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: UsersFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| {
                let before = text.get(..span.start).unwrap_or_default();
                format!(" line {}:", before.matches('\n').count() + 1)
            })
            .unwrap_or_default();
        format!(
            "{}:{line} {}",
            path.display(),
            e.message().trim_end().replace('\n', " ")
        )
    })?;
    Ok(file.users)
}

// ---------------------------------------------------------------------------
// JSON Web Tokens.

/// The three ways to give the JWT key, of which at most one is set.
struct JwtKeys {
    secret: Option<String>,
    public_key_file: Option<String>,
    jwks_file: Option<String>,
}

/// The JWT keys other than the key.
struct JwtOptions {
    issuer: Option<String>,
    audience: Option<String>,
    user_claim: Option<String>,
    roles_claim: Option<String>,
    cookie: Option<String>,
    leeway_ms: Option<u64>,
}

/// JWT settings, and the file the key came from, if any.
fn jwt(check: &mut Check, keys: JwtKeys, o: JwtOptions) -> (Option<JwtConfig>, Option<PathBuf>) {
    // The secret is taken as written (spaces are bytes of it); empty is off.
    let secret = keys.secret.filter(|s| !s.is_empty());
    let pem_file = non_empty(keys.public_key_file).map(PathBuf::from);
    let jwks_file = non_empty(keys.jwks_file).map(PathBuf::from);
    let given: Vec<&'static str> = [
        ("auth.jwt_secret", secret.is_some()),
        ("auth.jwt_public_key_file", pem_file.is_some()),
        ("auth.jwt_jwks_file", jwks_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    for extra in given.iter().skip(1) {
        check.fail(
            extra,
            format!(
                "only one JWT key may be set, and {} is set too; use auth.jwt_secret for HS256, \
                 auth.jwt_public_key_file for a PEM public key, or auth.jwt_jwks_file for a JWK set",
                given[0]
            ),
        );
    }
    let d = JwtConfig::new(JwtKey::Secret(Vec::new()));
    let Some(&key_key) = given.first() else {
        let needs = "no JWT key is set (auth.jwt_secret, auth.jwt_public_key_file or \
                     auth.jwt_jwks_file)";
        for (key, set) in [
            ("auth.jwt_issuer", non_empty(o.issuer).is_some()),
            ("auth.jwt_audience", non_empty(o.audience).is_some()),
            (
                "auth.jwt_user_claim",
                o.user_claim.is_some_and(|v| v.trim() != d.user_claim),
            ),
            (
                "auth.jwt_roles_claim",
                o.roles_claim.is_some_and(|v| v.trim() != d.roles_claim),
            ),
            ("auth.jwt_cookie", non_empty(o.cookie).is_some()),
            (
                "auth.jwt_leeway_ms",
                o.leeway_ms.is_some_and(|ms| ms != millis(d.leeway)),
            ),
        ] {
            stray(check, key, set, needs);
        }
        return (None, None);
    };
    let (key, file) = if let Some(secret) = &secret {
        if secret.len() < MIN_JWT_SECRET_BYTES {
            check.fail(
                "auth.jwt_secret",
                format!(
                    "must be at least {MIN_JWT_SECRET_BYTES} bytes, as a shorter HS256 secret can \
                     be found from one token (got {}); e.g. `openssl rand -hex 32`",
                    secret.len()
                ),
            );
        }
        (Some(JwtKey::Secret(secret.clone().into_bytes())), None)
    } else if let Some(path) = pem_file {
        // Read now: the file is not read again while the server runs.
        let key = match std::fs::read(&path) {
            Ok(pem) => Some(JwtKey::PublicKeyPem(pem)),
            Err(e) => {
                check.fail(
                    "auth.jwt_public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
        (key, Some(path))
    } else if let Some(path) = jwks_file {
        let key = match std::fs::read_to_string(&path) {
            Ok(json) => Some(JwtKey::Jwks(json)),
            Err(e) => {
                check.fail(
                    "auth.jwt_jwks_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
        (key, Some(path))
    } else {
        (None, None)
    };
    let mut c = JwtConfig::new(JwtKey::Secret(Vec::new()));
    c.issuer = non_empty(o.issuer);
    c.audience = non_empty(o.audience);
    for (key, value, target) in [
        ("auth.jwt_user_claim", o.user_claim, &mut c.user_claim),
        ("auth.jwt_roles_claim", o.roles_claim, &mut c.roles_claim),
    ] {
        if let Some(value) = value {
            if value.trim().is_empty() {
                check.fail(
                    key,
                    "must name a claim of the token, like \"sub\" or \"roles\"".to_owned(),
                );
            }
            *target = value.trim().to_owned();
        }
    }
    if let Some(cookie) = non_empty(o.cookie) {
        // A cookie name is an HTTP token (RFC 6265).
        let token = cookie
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token {
            check.fail(
                "auth.jwt_cookie",
                format!("\"{cookie}\" is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
            );
        }
        c.cookie = Some(cookie);
    }
    if let Some(ms) = o.leeway_ms {
        check.at_most("auth.jwt_leeway_ms", ms, MAX_JWT_LEEWAY_MS);
        c.leeway = Duration::from_millis(ms);
    }
    let problems_before = check.problems.len();
    if let Some(key) = key {
        c.key = key;
        if let Err(message) = JwtAuthenticator::new(c.clone()) {
            // The library is not expected to quote a secret, but an error
            // message is no place for one in any case.
            let message = match &secret {
                Some(secret) => message.replace(secret.as_str(), super::REDACTED),
                None => message,
            };
            check.fail(key_key, message);
        }
    }
    // Only a key that was read and accepted makes a configuration; the
    // problems above stop start-up anyway.
    let ok = check.problems.len() == problems_before && given.len() == 1;
    (ok.then_some(c), file)
}

// ---------------------------------------------------------------------------
// The HTTP authentication service.

fn http(
    check: &mut Check,
    url: Option<String>,
    timeout_ms: Option<u64>,
    cache_ttl_ms: Option<u64>,
    ca_file: Option<String>,
) -> Option<HttpAuthConfig> {
    let d = HttpAuthConfig::new("");
    let ca_file = non_empty(ca_file).map(PathBuf::from);
    let Some(url) = non_empty(url) else {
        let needs = "auth.http_url is empty";
        stray(
            check,
            "auth.http_timeout_ms",
            timeout_ms.is_some_and(|ms| ms != millis(d.timeout)),
            needs,
        );
        stray(
            check,
            "auth.http_cache_ttl_ms",
            cache_ttl_ms.is_some_and(|ms| ms != millis(d.cache_ttl)),
            needs,
        );
        stray(check, "auth.http_ca_file", ca_file.is_some(), needs);
        return None;
    };
    let mut c = HttpAuthConfig::new(url);
    if let Some(ms) = timeout_ms {
        // The CONNECT waits for the answer; a minute is already far too long
        // for a person, and below 100 ms a healthy service would time out.
        check.at_least("auth.http_timeout_ms", ms, 100);
        check.at_most("auth.http_timeout_ms", ms, 60_000);
        c.timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = cache_ttl_ms {
        // 0 turns the cache off: every CONNECT asks the service.
        c.cache_ttl = Duration::from_millis(ms);
    }
    if let Some(path) = &ca_file
        && c.url.to_ascii_lowercase().starts_with("http://")
    {
        check.fail(
            "auth.http_ca_file",
            format!(
                "has no effect with the plain http:// URL of auth.http_url; use https:// to \
                 check the service's certificate against {}",
                path.display()
            ),
        );
    }
    c.ca_file = ca_file;
    if let Err(message) = HttpAuthenticator::new(c.clone()) {
        let about_ca = c
            .ca_file
            .as_ref()
            .is_some_and(|p| message.contains(&p.display().to_string()));
        check.fail(
            if about_ca {
                "auth.http_ca_file"
            } else {
                "auth.http_url"
            },
            message,
        );
    }
    Some(c)
}

// ---------------------------------------------------------------------------
// Access rules.

/// The rules, when they are valid, and the entries as `--check` prints them.
fn rules(check: &mut Check, entries: Vec<RuleEntry>) -> (Option<AccessRules>, Vec<RuleEntry>) {
    let problems_before = check.problems.len();
    let mut rules = Vec::with_capacity(entries.len());
    let mut printed = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let n = i + 1;
        let who = match Who::parse(&entry.who) {
            Ok(who) => who,
            Err(message) => {
                check.fail("auth.rules", format!("rule {n}: who: {message}"));
                // A stand-in keeps the numbering of the library's messages
                // about the patterns right.
                Who::Anyone
            }
        };
        if entry.send.is_empty() && entry.subscribe.is_empty() {
            check.fail(
                "auth.rules",
                format!(
                    "rule {n} (who = \"{}\") allows nothing: give it send or subscribe patterns",
                    entry.who
                ),
            );
        }
        rules.push(
            Rule::new(who)
                .send(entry.send.iter().cloned())
                .subscribe(entry.subscribe.iter().cloned()),
        );
        printed.push(RuleEntry {
            who: entry.who.trim().to_owned(),
            ..entry
        });
    }
    let rules = match AccessRules::new(rules) {
        Ok(rules) => Some(rules),
        Err(message) => {
            check.fail("auth.rules", message);
            None
        }
    };
    let ok = check.problems.len() == problems_before;
    (rules.filter(|_| ok), printed)
}

// ---------------------------------------------------------------------------
// Back to the file format, and the start-up line.

impl AuthSection {
    /// The effective `[auth]` for --check: the keys of the methods that are
    /// off are left out (they would be refused when loaded back), and the
    /// users of `auth.users_file` are listed with the others under
    /// `auth.users`, so what is printed loads to the same settings.
    pub(super) fn from_config(a: &AuthConfig, source: &AuthSource) -> AuthSection {
        let jwt = a.jwt.as_ref();
        let http = a.http.as_ref();
        let passwords = a.passwords.as_ref();
        let file = source
            .jwt_key_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let (secret, pem_file, jwks_file) = match jwt.map(|j| &j.key) {
            Some(JwtKey::Secret(bytes)) => (
                String::from_utf8_lossy(bytes).into_owned(),
                String::new(),
                String::new(),
            ),
            Some(JwtKey::PublicKeyPem(_)) => (String::new(), file, String::new()),
            Some(JwtKey::Jwks(_)) => (String::new(), String::new(), file),
            // A key kind this build does not know cannot be printed.
            Some(_) | None => (String::new(), String::new(), String::new()),
        };
        AuthSection {
            anonymous: Some(a.allow_anonymous),
            failure_delay_ms: Some(millis(a.failure_delay)),
            sessions_per_user: Some(a.max_sessions_per_user),
            failures_per_address_per_min: Some(a.failures_per_address_per_min),
            users_file: Some(String::new()),
            password_cache_ttl_ms: passwords.map(|p| millis(p.cache_ttl)),
            jwt_secret: Some(secret),
            jwt_public_key_file: Some(pem_file),
            jwt_jwks_file: Some(jwks_file),
            jwt_issuer: jwt.map(|j| j.issuer.clone().unwrap_or_default()),
            jwt_audience: jwt.map(|j| j.audience.clone().unwrap_or_default()),
            jwt_user_claim: jwt.map(|j| j.user_claim.clone()),
            jwt_roles_claim: jwt.map(|j| j.roles_claim.clone()),
            jwt_cookie: jwt.map(|j| j.cookie.clone().unwrap_or_default()),
            jwt_leeway_ms: jwt.map(|j| millis(j.leeway)),
            http_url: Some(http.map(|h| h.url.clone()).unwrap_or_default()),
            http_timeout_ms: http.map(|h| millis(h.timeout)),
            http_cache_ttl_ms: http.map(|h| millis(h.cache_ttl)),
            http_ca_file: http.map(|h| {
                h.ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            }),
            users: Some(
                passwords
                    .map(|p| {
                        p.users
                            .iter()
                            .map(|u| UserEntry {
                                name: u.name.clone(),
                                password_hash: u.password_hash.clone(),
                                roles: u.roles.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            rules: source.rules.clone(),
        }
    }

    /// Every key with its default, the methods' keys included: the keys the
    /// environment and --set may name.
    pub(super) fn every_key() -> AuthSection {
        let mut all = AuthSection::from_config(&AuthConfig::default(), &AuthSource::default());
        let passwords = PasswordConfig::new(Vec::new());
        let jwt = JwtConfig::new(JwtKey::Secret(Vec::new()));
        let http = HttpAuthConfig::new("");
        all.password_cache_ttl_ms = Some(millis(passwords.cache_ttl));
        all.jwt_issuer = Some(String::new());
        all.jwt_audience = Some(String::new());
        all.jwt_user_claim = Some(jwt.user_claim);
        all.jwt_roles_claim = Some(jwt.roles_claim);
        all.jwt_cookie = Some(String::new());
        all.jwt_leeway_ms = Some(millis(jwt.leeway));
        all.http_timeout_ms = Some(millis(http.timeout));
        all.http_cache_ttl_ms = Some(millis(http.cache_ttl));
        all.http_ca_file = Some(String::new());
        // Absent by default (open access), but a key all the same.
        all.rules = Some(Vec::new());
        all
    }
}

/// The start-up line about authentication when some method is on: which
/// methods, what a CONNECT without credentials gets, and the access rules.
/// `None` when none is on ([`AUTH_OFF`] is said instead).
pub(super) fn summary(a: &AuthConfig, source: &AuthSource) -> Option<String> {
    if !a.has_methods() {
        return None;
    }
    let mut methods = Vec::new();
    if a.jwt.is_some() {
        methods.push("JSON Web Tokens".to_owned());
    }
    if let Some(p) = &a.passwords {
        methods.push(format!("passwords ({} users)", p.users.len()));
    }
    if a.http.is_some() {
        methods.push("an HTTP service".to_owned());
    }
    let anonymous = if a.allow_anonymous {
        "a CONNECT without credentials gets an anonymous session"
    } else {
        "a CONNECT without credentials is refused (auth.anonymous = false)"
    };
    let rules = match &source.rules {
        None => "access rules: open (no auth.rules)".to_owned(),
        Some(rules) => format!(
            "access rules: {} rule{}, what no rule allows is refused",
            rules.len(),
            if rules.len() == 1 { "" } else { "s" }
        ),
    };
    Some(format!(
        "authentication: {}; {anonymous}; {rules}",
        methods.join(", ")
    ))
}
