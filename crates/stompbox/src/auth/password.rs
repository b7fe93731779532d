//! Password users with argon2id hashes.
//!
//! Every argon2 run is costly on purpose (tens of milliseconds and 19 MiB
//! with the default parameters), so this module takes care that logins
//! cannot starve the server: runs happen on hashing threads of their own,
//! [`PasswordConfig::max_concurrent_hashes`] of them, each reusing one
//! memory area (so the memory argon2 needs is held once per thread, not
//! allocated per run and left behind in the allocator's caches), with a
//! bounded queue in front of them; and a successful verification is
//! remembered for a while, so a reconnect storm after a restart of a load
//! balancer costs one argon2 run per user rather than one per reconnect.
//!
//! An unknown login costs one argon2 run too (against a dummy hash of the
//! same parameters), so the time of an answer does not tell which user
//! names exist.

use super::{AuthError, Authenticator, ConnectRequest, Identity};
use crate::broker::BoxFuture;
use argon2::password_hash::{Decimal, Output, ParamsString, SaltString};
use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version,
};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// One user who logs in with a password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordUser {
    /// The login, which becomes the user name.
    pub name: String,
    /// An argon2id PHC string, as `stompbox hash-password` prints.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
}

impl PasswordUser {
    /// A user `name` with the argon2id PHC string `password_hash`.
    pub fn new(name: impl Into<String>, password_hash: impl Into<String>) -> PasswordUser {
        PasswordUser {
            name: name.into(),
            password_hash: password_hash.into(),
            roles: Vec::new(),
        }
    }

    /// The same user with `roles`.
    #[must_use]
    pub fn with_roles<I, R>(mut self, roles: I) -> PasswordUser
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }
}

impl std::fmt::Debug for PasswordUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordUser")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Settings of password authentication.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PasswordConfig {
    /// The users.
    pub users: Vec<PasswordUser>,
    /// How long a successful verification is remembered, so a reconnect
    /// costs no argon2 run. Zero turns the cache off. Default 5 min.
    pub cache_ttl: Duration,
    /// Most remembered verifications. Default 10,000.
    pub cache_entries: usize,
    /// Most argon2 runs at once. Default: the number of CPUs.
    pub max_concurrent_hashes: usize,
    /// Most logins waiting for an argon2 run; past it a login is refused
    /// as "unavailable". Default 256.
    pub max_waiting: usize,
}

impl PasswordConfig {
    /// Settings for `users`, every other field at its default.
    pub fn new(users: Vec<PasswordUser>) -> PasswordConfig {
        PasswordConfig {
            users,
            cache_ttl: Duration::from_secs(300),
            cache_entries: 10_000,
            // Half the CPUs: a flood of logins from many addresses then
            // still leaves the other half to the messages.
            max_concurrent_hashes: std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).max(1)),
            max_waiting: 256,
        }
    }
}

/// Longest user name, in bytes: a name ends up in logs, metrics and
/// `/user/…` destinations, where a huge one is only trouble.
const MAX_NAME_BYTES: usize = 256;

/// Most memory one verification may use, in KiB (1 GiB): a hash's own
/// parameters decide the cost of checking it, so a careless (or hostile)
/// users file must not make every login allocate gigabytes.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;

/// Most passes over the memory one verification may make.
const MAX_ITERATIONS: u32 = 64;

/// Most lanes of one verification.
const MAX_PARALLELISM: u32 = 16;

/// Salt length of new hashes, in bytes (the argon2 crate's recommendation).
const SALT_BYTES: usize = 16;

/// Advice at the end of an error about an unusable hash.
const REMAKE: &str = " (make one with `stompbox hash-password`)";

/// The answer to a login that found every argon2 slot busy and the queue
/// in front of them full.
const TOO_MANY: &str = "too many logins at once";

/// One user, checked and ready for logins.
struct User {
    name: String,
    roles: Vec<String>,
    /// The PHC string; shared with the blocking task that verifies it.
    hash: Arc<str>,
}

/// Authenticates password users.
///
/// A CONNECT without `login` is not for this method (`Ok(None)`). A known
/// login with the right `passcode` is that user, with its roles; with a
/// wrong or missing passcode it is refused
/// ([`AuthError::BadCredentials`]). An unknown login is `Ok(None)`, after
/// as much work as a known one, so that another method may know it.
pub struct PasswordAuthenticator {
    users: Vec<User>,
    by_name: HashMap<String, usize>,
    /// A PHC string with the users' (most common) parameters and a random
    /// salt and output: verifying against it costs what verifying a real
    /// user costs, and never succeeds.
    dummy: Arc<str>,
    /// `None` when turned off (zero TTL or zero entries).
    cache: Option<VerifiedCache>,
    /// One permit per argon2 run allowed at once.
    slots: Arc<Semaphore>,
    max_concurrent_hashes: usize,
    /// Logins waiting for a permit of `slots`.
    waiting: AtomicUsize,
    max_waiting: usize,
    /// The hashing threads: each run a permit of `slots` allows goes here.
    jobs: std::sync::mpsc::Sender<HashJob>,
    /// argon2 runs so far; the tests tell a cache hit by it.
    argon2_runs: Arc<AtomicU64>,
}

/// One verification for a hashing thread.
struct HashJob {
    hash: Arc<str>,
    passcode: String,
    reply: tokio::sync::oneshot::Sender<Result<bool, argon2::password_hash::Error>>,
    /// Held until the run is over: when a client goes away mid-login its
    /// run still finishes, and its slot stays taken until then, so
    /// abandoned logins cannot pile up argon2 runs beyond the limit.
    _permit: OwnedSemaphorePermit,
}

/// Starts `count` hashing threads taking jobs from one queue; they end when
/// the authenticator (the sending side) is dropped.
fn hashing_threads(
    count: usize,
    runs: &Arc<AtomicU64>,
) -> Result<std::sync::mpsc::Sender<HashJob>, String> {
    let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..count {
        let queue = Arc::clone(&queue);
        let runs = Arc::clone(runs);
        std::thread::Builder::new()
            .name(format!("stompbox-argon2-{i}"))
            .spawn(move || {
                // Grown to the largest parameters seen, then reused.
                let mut memory: Vec<Block> = Vec::new();
                loop {
                    let job = {
                        let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
                        queue.recv()
                    };
                    let Ok(job) = job else { return };
                    runs.fetch_add(1, Ordering::Relaxed);
                    let result = verify_with(&mut memory, &job.hash, job.passcode.as_bytes());
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| format!("passwords: cannot start a hashing thread: {e}"))?;
    }
    Ok(jobs)
}

/// Whether `passcode` matches the PHC string `hash`, computed in `memory`
/// (grown as the hash's parameters need). What argon2's own verification
/// does, but without allocating the memory anew for every run.
fn verify_with(
    memory: &mut Vec<Block>,
    hash: &str,
    passcode: &[u8],
) -> Result<bool, argon2::password_hash::Error> {
    use argon2::password_hash::Error;
    let parsed = PasswordHash::new(hash)?;
    let expected = parsed.hash.ok_or(Error::Crypto)?;
    let salt = parsed.salt.ok_or(Error::Crypto)?;
    let params = Params::try_from(&parsed)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v)?,
        None => Version::default(),
    };
    let mut salt_buffer = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buffer)?;
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out.get_mut(..expected.len()).ok_or(Error::Crypto)?;
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        passcode,
        salt,
        out,
        &mut memory[..blocks],
    )?;
    // Output's comparison takes the same time whatever the bytes.
    Ok(Output::new(out)? == expected)
}

impl std::fmt::Debug for PasswordAuthenticator {
    // By hand: neither hashes nor cache keys belong in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordAuthenticator")
            .field("users", &self.users.len())
            .field("cache", &self.cache)
            .field("max_concurrent_hashes", &self.max_concurrent_hashes)
            .field("max_waiting", &self.max_waiting)
            .field("argon2_runs", &self.argon2_runs.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PasswordAuthenticator {
    /// Checks every user and builds the authenticator.
    ///
    /// # Errors
    ///
    /// A message naming the user (never showing a hash) when a name is
    /// empty, repeated, longer than 256 bytes or holds control characters,
    /// a role is empty, or a hash does not pass [`verify_password_hash`];
    /// also when `max_concurrent_hashes` is zero or the system's random
    /// number generator fails.
    pub fn new(config: PasswordConfig) -> Result<PasswordAuthenticator, String> {
        if config.max_concurrent_hashes == 0
            || config.max_concurrent_hashes > Semaphore::MAX_PERMITS
        {
            return Err(format!(
                "passwords: max_concurrent_hashes must be between 1 and {}",
                Semaphore::MAX_PERMITS
            ));
        }
        let mut users = Vec::with_capacity(config.users.len());
        let mut by_name = HashMap::with_capacity(config.users.len());
        let mut shapes = Vec::with_capacity(config.users.len());
        for (i, user) in config.users.into_iter().enumerate() {
            check_name(i, &user.name)?;
            if let Some(&first) = by_name.get(&user.name) {
                return Err(format!(
                    "{}: the name is also that of password user #{}",
                    describe(i, &user.name),
                    first + 1
                ));
            }
            if user.roles.iter().any(String::is_empty) {
                return Err(format!("{}: a role is empty", describe(i, &user.name)));
            }
            let shape = check_hash(&user.password_hash)
                .map_err(|e| format!("{}: password_hash: {e}", describe(i, &user.name)))?;
            shapes.push(shape);
            by_name.insert(user.name.clone(), i);
            users.push(User {
                name: user.name,
                roles: user.roles,
                hash: user.password_hash.into(),
            });
        }
        let dummy = dummy_hash(&dummy_shape(&shapes)?)?;
        let cache = if config.cache_ttl.is_zero() || config.cache_entries == 0 {
            None
        } else {
            Some(VerifiedCache::new(config.cache_ttl, config.cache_entries)?)
        };
        let argon2_runs = Arc::new(AtomicU64::new(0));
        let jobs = hashing_threads(config.max_concurrent_hashes, &argon2_runs)?;
        Ok(PasswordAuthenticator {
            users,
            by_name,
            dummy: dummy.into(),
            cache,
            slots: Arc::new(Semaphore::new(config.max_concurrent_hashes)),
            max_concurrent_hashes: config.max_concurrent_hashes,
            waiting: AtomicUsize::new(0),
            max_waiting: config.max_waiting,
            jobs,
            argon2_runs,
        })
    }

    fn identity(&self, index: usize) -> Identity {
        let user = &self.users[index];
        Identity::new(user.name.clone()).with_roles(user.roles.iter().cloned())
    }

    /// Whether `passcode` matches the PHC string `hash`: one argon2 run on
    /// a hashing thread, once a slot is free.
    async fn verify(&self, hash: Arc<str>, passcode: &str) -> Result<bool, AuthError> {
        let permit = self.slot().await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = HashJob {
            hash,
            passcode: passcode.to_owned(),
            reply,
            _permit: permit,
        };
        if self.jobs.send(job).is_err() {
            return Err(AuthError::Unavailable("the password check failed".into()));
        }
        match answer.await {
            Ok(Ok(matches)) => Ok(matches),
            // `new` checked every hash, so this is not expected; refuse
            // rather than guess.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a password hash could not be verified");
                Ok(false)
            }
            Err(_) => {
                tracing::warn!("a hashing thread stopped");
                Err(AuthError::Unavailable("the password check failed".into()))
            }
        }
    }

    /// A permit for one argon2 run; waits for one only while fewer than
    /// `max_waiting` other logins do.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, AuthError> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::NoPermits) => {}
            // Never closed; answered all the same.
            Err(TryAcquireError::Closed) => return Err(AuthError::Unavailable(TOO_MANY.into())),
        }
        let max = self.max_waiting;
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(AuthError::Unavailable(TOO_MANY.into()));
        }
        // Counted out on every exit, a dropped (abandoned) login included.
        let _waiting = WaitingGuard(&self.waiting);
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Unavailable(TOO_MANY.into()))
    }

    #[cfg(test)]
    fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }
}

/// Takes one login off the waiting count when dropped.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Authenticator for PasswordAuthenticator {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let Some(login) = request.login() else {
                return Ok(None);
            };
            // No passcode is an empty one: wrong, but checked all the same
            // so that it takes as long as any other wrong passcode.
            let passcode = request.passcode().unwrap_or("");
            let Some(&index) = self.by_name.get(login) else {
                // Same work as for a known user, then the answer of a
                // request that is not for this method; the server still
                // refuses a login no method accepted.
                self.verify(Arc::clone(&self.dummy), passcode).await?;
                return Ok(None);
            };
            let cached = self
                .cache
                .as_ref()
                .map(|cache| (cache, cache.key(login, passcode)));
            if let Some((cache, key)) = &cached
                && cache.get(key) == Some(index)
            {
                return Ok(Some(self.identity(index)));
            }
            if !self
                .verify(Arc::clone(&self.users[index].hash), passcode)
                .await?
            {
                return Err(AuthError::BadCredentials);
            }
            if let Some((cache, key)) = cached {
                cache.insert(key, index);
            }
            Ok(Some(self.identity(index)))
        })
    }
}

/// Successful verifications of late, so that a reconnect costs no argon2
/// run. Keyed by a keyed hash of user name and passcode: the passcode is
/// not kept, and without the per-process key a key cannot be tested
/// against guesses.
struct VerifiedCache {
    /// Random per process.
    secret: [u8; 32],
    ttl: Duration,
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Key → (user index, expiry).
    entries: HashMap<[u8; 32], (usize, Instant)>,
    /// Keys in insertion order, which is also expiry order (one TTL for
    /// all, expiry computed under the lock): expired entries and the
    /// oldest are both at the front. Holds exactly the keys of `entries`.
    order: VecDeque<([u8; 32], Instant)>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    fn new(ttl: Duration, capacity: usize) -> Result<VerifiedCache, String> {
        let mut secret = [0; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| format!("passwords: no random numbers for the login cache: {e}"))?;
        Ok(VerifiedCache {
            secret,
            ttl,
            capacity,
            inner: Mutex::new(CacheInner::default()),
        })
    }

    fn key(&self, name: &str, passcode: &str) -> [u8; 32] {
        // A name holds no control characters, so the NUL separator makes
        // the (name, passcode) split unambiguous.
        Sha256::new()
            .chain_update(self.secret)
            .chain_update(name.as_bytes())
            .chain_update([0])
            .chain_update(passcode.as_bytes())
            .finalize()
            .into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock cannot leave an entry half
        // written (every update is one insert or remove), so the data of a
        // poisoned lock is still good.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user index of an unexpired entry.
    fn get(&self, key: &[u8; 32]) -> Option<usize> {
        let inner = self.lock();
        let &(index, expires) = inner.entries.get(key)?;
        (Instant::now() < expires).then_some(index)
    }

    fn insert(&self, key: [u8; 32], index: usize) {
        let mut inner = self.lock();
        let now = Instant::now();
        // Expired entries go first, whether or not the cache is full: they
        // are at the front, so this costs nothing when there are none.
        while inner.order.front().is_some_and(|&(_, at)| at <= now) {
            inner.pop_oldest();
        }
        // Another login of the same user and passcode got here first.
        if inner.entries.contains_key(&key) {
            return;
        }
        while inner.entries.len() >= self.capacity {
            inner.pop_oldest();
        }
        let expires = now + self.ttl;
        inner.entries.insert(key, (index, expires));
        inner.order.push_back((key, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl CacheInner {
    fn pop_oldest(&mut self) {
        if let Some((key, _)) = self.order.pop_front() {
            self.entries.remove(&key);
        }
    }
}

/// `password user #3 ("alice")`, the name cut short and escaped, for
/// error messages.
fn describe(index: usize, name: &str) -> String {
    let shown: String = name.chars().take(64).collect();
    let more = if shown.len() < name.len() { "…" } else { "" };
    format!("password user #{} ({shown:?}{more})", index + 1)
}

fn check_name(index: usize, name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "the name is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "the name is longer than 256 bytes"
    } else if name.chars().any(char::is_control) {
        "the name holds a control character"
    } else {
        return Ok(());
    };
    Err(format!("{}: {problem}", describe(index, name)))
}

/// What the cost of verifying a hash depends on: its parameters and the
/// lengths of its salt and output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HashShape {
    version: Option<Decimal>,
    params: ParamsString,
    salt_bytes: usize,
    output_bytes: usize,
}

/// Parses and checks a PHC string (see [`verify_password_hash`]).
fn check_hash(hash: &str) -> Result<HashShape, String> {
    // bcrypt's `$2b$…` is no PHC string, and the parser would only say
    // that its salt is wrong; the likeliest mistake deserves a clear word.
    if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
    {
        return Err(format!("a bcrypt hash, not argon2id{REMAKE}"));
    }
    // The parser's errors name the faulty part, never repeat the string.
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC string: {e}"))?;
    if parsed.algorithm != ARGON2ID_IDENT {
        return Err(format!(
            "the algorithm is {}, not argon2id{REMAKE}",
            parsed.algorithm
        ));
    }
    if let Some(version) = parsed.version {
        argon2::Version::try_from(version)
            .map_err(|_| format!("unknown argon2 version {version} (expected 19)"))?;
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad parameters: {e}"))?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return Err(format!(
            "memory m={} KiB is more than the limit of {MAX_MEMORY_KIB} KiB (1 GiB)",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_ITERATIONS {
        return Err(format!(
            "iterations t={} are more than the limit of {MAX_ITERATIONS}",
            params.t_cost()
        ));
    }
    if params.p_cost() > MAX_PARALLELISM {
        return Err(format!(
            "parallelism p={} is more than the limit of {MAX_PARALLELISM}",
            params.p_cost()
        ));
    }
    let salt = parsed.salt.ok_or("there is no salt")?;
    // A salt is at most 64 base64 characters, 48 bytes.
    let mut buf = [0; 64];
    let salt_bytes = salt
        .decode_b64(&mut buf)
        .map_err(|e| format!("bad salt: {e}"))?
        .len();
    if salt_bytes < argon2::MIN_SALT_LEN {
        return Err(format!(
            "the salt has {salt_bytes} bytes; argon2 needs at least {}",
            argon2::MIN_SALT_LEN
        ));
    }
    let output = parsed.hash.ok_or("there is no hash output")?;
    Ok(HashShape {
        version: parsed.version,
        params: parsed.params,
        salt_bytes,
        output_bytes: output.len(),
    })
}

/// The shape most users share, or that of
/// [`hash_password`] without users: unknown logins then cost what most
/// known ones do.
fn dummy_shape(shapes: &[HashShape]) -> Result<HashShape, String> {
    // Counted by the text of the parameters (`ParamsString` is not `Hash`).
    let mut counts: HashMap<(Option<Decimal>, &str, usize, usize), usize> = HashMap::new();
    let mut best: Option<(usize, &HashShape)> = None;
    for shape in shapes {
        let count = counts
            .entry((
                shape.version,
                shape.params.as_str(),
                shape.salt_bytes,
                shape.output_bytes,
            ))
            .or_default();
        *count += 1;
        if best.is_none_or(|(most, _)| *count > most) {
            best = Some((*count, shape));
        }
    }
    if let Some((_, shape)) = best {
        return Ok(shape.clone());
    }
    let params = ParamsString::try_from(&Params::default())
        .map_err(|e| format!("passwords: default argon2 parameters: {e}"))?;
    Ok(HashShape {
        version: Some(argon2::Version::default().into()),
        params,
        salt_bytes: SALT_BYTES,
        output_bytes: Params::DEFAULT_OUTPUT_LEN,
    })
}

/// A PHC string of `shape` with a random salt and a random output: as
/// costly to verify as a real hash of that shape, and matched by no
/// password (but by a chance of 2^-(8·output_bytes)).
fn dummy_hash(shape: &HashShape) -> Result<String, String> {
    let failed = |e: &dyn std::fmt::Display| format!("passwords: cannot make the dummy hash: {e}");
    let mut salt = vec![0; shape.salt_bytes];
    let mut output = vec![0; shape.output_bytes];
    getrandom::fill(&mut salt).map_err(|e| failed(&e))?;
    getrandom::fill(&mut output).map_err(|e| failed(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: shape.version,
        params: shape.params.clone(),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Hashes `password` as an argon2id PHC string with a random salt and the
/// argon2 crate's default parameters (19 MiB, 2 iterations, 1 lane), as
/// `stompbox hash-password` prints it.
///
/// Any password is hashed, the empty one included; refusing weak ones is
/// up to the caller.
///
/// # Errors
///
/// When the system's random number generator fails, or hashing does.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| format!("no random numbers for the salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    // Argon2::default() is argon2id, version 19, default parameters.
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Checks that `hash` is an argon2id PHC string this server can verify:
/// version 19 (or 16), a salt of at least 8 bytes, an output, and
/// parameters within bounds (memory at most 1 GiB, at most 64 iterations,
/// at most 16 lanes), since a hash's own parameters set what each login
/// costs.
///
/// # Errors
///
/// A message saying what is wrong with it (which never repeats the hash).
pub fn verify_password_hash(hash: &str) -> Result<(), String> {
    check_hash(hash).map(|_| ())
}

#[cfg(test)]
mod tests;
