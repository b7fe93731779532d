use super::*;
use crate::auth::Handshake;
use argon2::{Algorithm, Version};
use stompbox_codec::Headers;

/// A hash with cheap parameters (256 KiB, 1 pass): the defaults take
/// seconds in a debug build.
fn cheap_hash_with(algorithm: Algorithm, password: &str) -> String {
    let params = Params::new(256, 1, 1, None).expect("params");
    let mut salt = [0; SALT_BYTES];
    getrandom::fill(&mut salt).expect("random");
    let salt = SaltString::encode_b64(&salt).expect("salt");
    Argon2::new(algorithm, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn cheap_hash(password: &str) -> String {
    cheap_hash_with(Algorithm::Argon2id, password)
}

fn request(login: Option<&str>, passcode: Option<&str>) -> ConnectRequest {
    let mut headers = Headers::new();
    if let Some(login) = login {
        headers.push_str("login", login);
    }
    if let Some(passcode) = passcode {
        headers.push_str("passcode", passcode);
    }
    ConnectRequest::new(
        "s1",
        headers,
        Handshake::tcp("127.0.0.1:1".parse().expect("addr"), false),
    )
}

/// alice (password "wonderland", roles admin and ops) and bob
/// ("builder", no roles).
fn users() -> Vec<PasswordUser> {
    vec![
        PasswordUser::new("alice", cheap_hash("wonderland")).with_roles(["admin", "ops"]),
        PasswordUser::new("bob", cheap_hash("builder")),
    ]
}

fn authenticator(config: PasswordConfig) -> PasswordAuthenticator {
    PasswordAuthenticator::new(config).expect("authenticator")
}

async fn login(
    auth: &PasswordAuthenticator,
    name: &str,
    passcode: &str,
) -> Result<Option<Identity>, AuthError> {
    auth.authenticate(&request(Some(name), Some(passcode)))
        .await
}

#[tokio::test]
async fn the_right_password_authenticates_with_the_users_roles() {
    let auth = authenticator(PasswordConfig::new(users()));
    assert_eq!(
        login(&auth, "alice", "wonderland").await,
        Ok(Some(Identity::new("alice").with_roles(["admin", "ops"])))
    );
    assert_eq!(
        login(&auth, "bob", "builder").await,
        Ok(Some(Identity::new("bob")))
    );
}

#[tokio::test]
async fn a_wrong_or_missing_passcode_is_refused() {
    let auth = authenticator(PasswordConfig::new(users()));
    assert_eq!(
        login(&auth, "alice", "builder").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(
        login(&auth, "alice", "").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(
        auth.authenticate(&request(Some("alice"), None)).await,
        Err(AuthError::BadCredentials)
    );
    // Each of them was checked, missing passcode included.
    assert_eq!(auth.argon2_runs(), 3);
}

#[tokio::test]
async fn an_unknown_user_costs_one_run_and_is_not_for_this_method() {
    let auth = authenticator(PasswordConfig::new(users()));
    assert_eq!(login(&auth, "mallory", "wonderland").await, Ok(None));
    assert_eq!(auth.argon2_runs(), 1);
    assert_eq!(
        auth.authenticate(&request(Some("carol"), None)).await,
        Ok(None)
    );
    assert_eq!(auth.argon2_runs(), 2);
}

#[tokio::test]
async fn a_request_without_login_is_not_for_this_method() {
    let auth = authenticator(PasswordConfig::new(users()));
    assert_eq!(auth.authenticate(&request(None, None)).await, Ok(None));
    assert_eq!(
        auth.authenticate(&request(None, Some("wonderland"))).await,
        Ok(None)
    );
    assert_eq!(auth.argon2_runs(), 0);
}

#[test]
fn the_dummy_hash_has_the_users_parameters() {
    let odd = {
        let params = Params::new(512, 2, 1, None).expect("params");
        let salt = SaltString::encode_b64(&[7; SALT_BYTES]).expect("salt");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"x", &salt)
            .expect("hash")
            .to_string()
    };
    let mut list = users();
    list.insert(0, PasswordUser::new("odd", odd));
    let auth = authenticator(PasswordConfig::new(list));
    let dummy = check_hash(&auth.dummy).expect("dummy is valid");
    let alice = check_hash(&auth.users[1].hash).expect("alice");
    assert_eq!(dummy, alice);
    assert_ne!(&*auth.dummy, &*auth.users[1].hash);

    // Without users: the parameters of `hash_password`.
    let none = authenticator(PasswordConfig::new(Vec::new()));
    let dummy = PasswordHash::new(&none.dummy).expect("dummy");
    assert_eq!(dummy.params.as_str(), "m=19456,t=2,p=1");
}

#[tokio::test]
async fn a_cached_login_runs_no_argon2() {
    let auth = authenticator(PasswordConfig::new(users()));
    let alice = Ok(Some(Identity::new("alice").with_roles(["admin", "ops"])));
    assert_eq!(login(&auth, "alice", "wonderland").await, alice);
    assert_eq!(auth.argon2_runs(), 1);
    assert_eq!(login(&auth, "alice", "wonderland").await, alice);
    assert_eq!(login(&auth, "alice", "wonderland").await, alice);
    assert_eq!(auth.argon2_runs(), 1);
    // Another passcode for the same user is not a hit.
    assert_eq!(
        login(&auth, "alice", "wonderland ").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(auth.argon2_runs(), 2);
    // Nor is the same passcode for another user.
    assert_eq!(
        login(&auth, "bob", "wonderland").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(auth.argon2_runs(), 3);
    // Failures are not remembered.
    assert_eq!(
        login(&auth, "bob", "wonderland").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(auth.argon2_runs(), 4);
    assert_eq!(auth.cache.as_ref().map(VerifiedCache::len), Some(1));
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let mut config = PasswordConfig::new(users());
    config.cache_ttl = Duration::ZERO;
    let auth = authenticator(config);
    assert!(auth.cache.is_none());
    for _ in 0..2 {
        assert!(matches!(login(&auth, "bob", "builder").await, Ok(Some(_))));
    }
    assert_eq!(auth.argon2_runs(), 2);
}

#[tokio::test]
async fn cached_logins_expire() {
    let mut config = PasswordConfig::new(users());
    config.cache_ttl = Duration::from_millis(50);
    let auth = authenticator(config);
    assert!(login(&auth, "bob", "builder").await.is_ok());
    assert!(login(&auth, "bob", "builder").await.is_ok());
    assert_eq!(auth.argon2_runs(), 1);
    // Real time: the cache uses `std::time::Instant`.
    std::thread::sleep(Duration::from_millis(80));
    assert!(login(&auth, "bob", "builder").await.is_ok());
    assert_eq!(auth.argon2_runs(), 2);
    // The expired entry made way for the new one.
    assert_eq!(auth.cache.as_ref().map(VerifiedCache::len), Some(1));
}

#[tokio::test]
async fn the_cache_is_bounded_and_drops_the_oldest() {
    let mut list = users();
    list.push(PasswordUser::new("carol", cheap_hash("christmas")));
    let mut config = PasswordConfig::new(list);
    config.cache_entries = 2;
    let auth = authenticator(config);
    let entries = || auth.cache.as_ref().map(VerifiedCache::len);
    assert!(login(&auth, "alice", "wonderland").await.is_ok());
    assert!(login(&auth, "bob", "builder").await.is_ok());
    assert_eq!(entries(), Some(2));
    assert!(login(&auth, "carol", "christmas").await.is_ok());
    assert_eq!(entries(), Some(2));
    assert_eq!(auth.argon2_runs(), 3);
    // carol and bob are remembered; alice, the oldest, is not.
    assert!(login(&auth, "carol", "christmas").await.is_ok());
    assert!(login(&auth, "bob", "builder").await.is_ok());
    assert_eq!(auth.argon2_runs(), 3);
    assert!(login(&auth, "alice", "wonderland").await.is_ok());
    assert_eq!(auth.argon2_runs(), 4);
    assert_eq!(entries(), Some(2));
}

#[test]
fn cache_keys_depend_on_name_passcode_and_process() {
    let cache = VerifiedCache::new(Duration::from_secs(1), 1).expect("cache");
    let other = VerifiedCache::new(Duration::from_secs(1), 1).expect("cache");
    let key = cache.key("alice", "pw");
    assert_eq!(key, cache.key("alice", "pw"));
    assert_ne!(key, cache.key("alice", "pw2"));
    assert_ne!(key, cache.key("alicep", "w"));
    assert_ne!(key, other.key("alice", "pw"));
}

#[tokio::test]
async fn too_many_logins_at_once_are_refused() {
    let mut config = PasswordConfig::new(users());
    config.max_concurrent_hashes = 1;
    config.max_waiting = 1;
    config.cache_ttl = Duration::ZERO;
    let auth = authenticator(config);
    let requests: Vec<_> = (0..6)
        .map(|_| request(Some("bob"), Some("builder")))
        .collect();
    let results =
        futures_util::future::join_all(requests.iter().map(|r| auth.authenticate(r))).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    let unavailable = results
        .iter()
        .filter(|r| matches!(r, Err(AuthError::Unavailable(m)) if m == TOO_MANY))
        .count();
    assert!(ok >= 1, "{results:?}");
    assert!(unavailable >= 1, "{results:?}");
    assert_eq!(ok + unavailable, results.len(), "{results:?}");
    assert_eq!(auth.argon2_runs(), ok as u64);
    // Nobody is left counted as waiting, and the slot is free again.
    assert_eq!(auth.waiting.load(Ordering::Acquire), 0);
    assert!(login(&auth, "bob", "builder").await.is_ok());
}

#[tokio::test]
async fn an_abandoned_login_leaves_the_queue() {
    let mut config = PasswordConfig::new(users());
    config.max_concurrent_hashes = 1;
    config.max_waiting = 1;
    let auth = authenticator(config);
    // Hold the only slot, so a login has to wait.
    let held = Arc::clone(&auth.slots).acquire_owned().await.expect("slot");
    let r = request(Some("bob"), Some("builder"));
    let mut waiting = auth.authenticate(&r);
    assert!(futures_util::poll!(&mut waiting).is_pending());
    assert_eq!(auth.waiting.load(Ordering::Acquire), 1);
    assert_eq!(
        login(&auth, "bob", "builder").await,
        Err(AuthError::Unavailable(TOO_MANY.into()))
    );
    drop(waiting);
    assert_eq!(auth.waiting.load(Ordering::Acquire), 0);
    drop(held);
    assert!(login(&auth, "bob", "builder").await.is_ok());
}

#[tokio::test]
async fn hash_password_makes_default_argon2id_hashes() {
    let hash = hash_password("correct horse").expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert_eq!(verify_password_hash(&hash), Ok(()));
    assert_ne!(
        hash,
        hash_password("correct horse").expect("hash"),
        "salted"
    );
    let auth = authenticator(PasswordConfig::new(vec![PasswordUser::new("dave", &hash)]));
    assert_eq!(
        login(&auth, "dave", "correct horse").await,
        Ok(Some(Identity::new("dave")))
    );
    assert_eq!(
        login(&auth, "dave", "correct horse!").await,
        Err(AuthError::BadCredentials)
    );
}

/// `new`'s error for `users`, which must name user #`number` and not
/// repeat any hash.
fn refused(users: Vec<PasswordUser>, number: usize) -> String {
    let hashes: Vec<String> = users.iter().map(|u| u.password_hash.clone()).collect();
    let error = PasswordAuthenticator::new(PasswordConfig::new(users)).expect_err("refused");
    assert!(
        error.contains(&format!("password user #{number} ")),
        "{error}"
    );
    for hash in hashes.iter().filter(|h| h.len() > 3) {
        assert!(!error.contains(hash.as_str()), "{error}");
    }
    error
}

#[test]
fn new_refuses_bad_names_and_roles() {
    let hash = cheap_hash("pw");
    let user = |name: &str| PasswordUser::new(name, &hash);
    let error = refused(vec![user("alice"), user("bob"), user("alice")], 3);
    assert!(
        error.contains("\"alice\"") && error.contains("#1"),
        "{error}"
    );
    let error = refused(vec![user("alice"), user("")], 2);
    assert!(error.contains("empty"), "{error}");
    let error = refused(vec![user("al\nice")], 1);
    assert!(error.contains("control"), "{error}");
    let error = refused(vec![user(&"a".repeat(257))], 1);
    assert!(error.contains("256"), "{error}");
    assert!(PasswordAuthenticator::new(PasswordConfig::new(vec![user(&"é".repeat(128))])).is_ok());
    let error = refused(vec![user("alice").with_roles(["admin", ""])], 1);
    assert!(error.contains("role"), "{error}");
    let mut config = PasswordConfig::new(vec![user("alice")]);
    config.max_concurrent_hashes = 0;
    assert!(PasswordAuthenticator::new(config).is_err());
}

#[test]
fn new_refuses_hashes_it_cannot_use() {
    let user = |hash: &str| vec![PasswordUser::new("alice", hash)];
    let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    let error = refused(user(bcrypt), 1);
    assert!(error.contains("bcrypt"), "{error}");
    let error = refused(user(&cheap_hash_with(Algorithm::Argon2i, "pw")), 1);
    assert!(error.contains("argon2i, not argon2id"), "{error}");
    let error = refused(user("hunter2"), 1);
    assert!(error.contains("not a PHC string"), "{error}");
    refused(user(""), 1);

    let good = cheap_hash("pw");
    let with = |from: &str, to: &str| {
        assert!(good.contains(from));
        good.replacen(from, to, 1)
    };
    let error = refused(user(&with("m=256,", "m=2097152,")), 1);
    assert!(error.contains("memory"), "{error}");
    let error = refused(user(&with("t=1,", "t=65,")), 1);
    assert!(error.contains("iterations"), "{error}");
    let error = refused(user(&with("p=1$", "p=17$")), 1);
    assert!(error.contains("parallelism"), "{error}");
    let error = refused(user(&with("v=19", "v=20")), 1);
    assert!(error.contains("version"), "{error}");
    // Cut after the salt: no output to compare with.
    let salt_end = good.rfind('$').expect("$");
    let error = refused(user(&good[..salt_end]), 1);
    assert!(error.contains("no hash output"), "{error}");
    // At the limits is fine.
    assert_eq!(verify_password_hash(&good), Ok(()));
    assert_eq!(
        verify_password_hash(&with("m=256,t=1,p=1", "m=1048576,t=64,p=16")),
        Ok(())
    );
}
