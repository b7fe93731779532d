//! User destinations: which sessions belong to which user, and which user
//! destinations each session subscribed to.
//!
//! A SUBSCRIBE to `/user/queue/x` becomes a broker subscription to
//! `/queue/x-user<session id>`, a name unique to that session. Session ids are
//! 128 random bits, and clients may not name resolved destinations directly,
//! so no client can read another session's messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The broker destination that stands for `destination` (e.g. `/queue/x`)
/// of one session.
pub(crate) fn resolve(destination: &str, session_id: &str) -> String {
    format!("{destination}-user{session_id}")
}

/// True for names of the form [`resolve`] produces, which only the server
/// may use.
pub(crate) fn is_resolved(destination: &str) -> bool {
    destination.rsplit_once("-user").is_some_and(|(_, id)| {
        id.len() == SESSION_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Length of a session id: 32 hex digits.
pub(crate) const SESSION_ID_LEN: usize = 32;

/// A fresh unguessable session id.
pub(crate) fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Without OS randomness, fall back to a hash keyed per process: not
        // cryptographic, but never predictable from outside.
        use std::hash::{BuildHasher, Hasher};
        let state = std::hash::RandomState::new();
        for chunk in bytes.chunks_mut(8) {
            let mut h = state.build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Default)]
struct SessionEntry {
    user: Arc<str>,
    /// User destination (without `/user`) → number of subscriptions to it.
    subscriptions: HashMap<String, usize>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<Arc<str>, SessionEntry>,
    users: HashMap<Arc<str>, Vec<Arc<str>>>,
}

/// The sessions of every connected user.
#[derive(Debug, Default)]
pub(crate) struct UserRegistry {
    inner: Mutex<Inner>,
}

impl UserRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_session(&self, session: &Arc<str>, user: &str) {
        let mut inner = self.lock();
        let user: Arc<str> = user.into();
        inner
            .users
            .entry(Arc::clone(&user))
            .or_default()
            .push(Arc::clone(session));
        inner.sessions.insert(
            Arc::clone(session),
            SessionEntry {
                user,
                subscriptions: HashMap::new(),
            },
        );
    }

    pub(crate) fn remove_session(&self, session: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.remove(session) else {
            return;
        };
        if let Some(sessions) = inner.users.get_mut(&entry.user) {
            sessions.retain(|s| s.as_ref() != session);
            if sessions.is_empty() {
                inner.users.remove(&entry.user);
            }
        }
    }

    pub(crate) fn subscribe(&self, session: &str, destination: &str) {
        if let Some(entry) = self.lock().sessions.get_mut(session) {
            *entry
                .subscriptions
                .entry(destination.to_owned())
                .or_default() += 1;
        }
    }

    pub(crate) fn unsubscribe(&self, session: &str, destination: &str) {
        if let Some(entry) = self.lock().sessions.get_mut(session)
            && let Some(count) = entry.subscriptions.get_mut(destination)
        {
            *count -= 1;
            if *count == 0 {
                entry.subscriptions.remove(destination);
            }
        }
    }

    /// Sessions of `user` subscribed to `destination`. Messages go only to
    /// these, so nothing piles up for a session that never subscribed.
    pub(crate) fn targets(&self, user: &str, destination: &str) -> Vec<Arc<str>> {
        let inner = self.lock();
        inner
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter(|s| {
                inner
                    .sessions
                    .get(s.as_ref())
                    .is_some_and(|e| e.subscriptions.contains_key(destination))
            })
            .cloned()
            .collect()
    }

    pub(crate) fn session_subscribed(&self, session: &str, destination: &str) -> bool {
        self.lock()
            .sessions
            .get(session)
            .is_some_and(|e| e.subscriptions.contains_key(destination))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_names_are_recognised() {
        let id = new_session_id();
        assert_eq!(id.len(), SESSION_ID_LEN);
        assert!(is_resolved(&resolve("/queue/x", &id)));
        assert!(!is_resolved("/queue/power-users"));
        assert!(!is_resolved("/queue/x-user1"));
        assert_ne!(new_session_id(), id);
    }

    #[test]
    fn targets_are_subscribed_sessions_of_the_user() {
        let registry = UserRegistry::default();
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        registry.add_session(&a, "ann");
        registry.add_session(&b, "ann");
        registry.add_session(&c, "bob");
        registry.subscribe("a", "/queue/x");
        registry.subscribe("c", "/queue/x");
        assert_eq!(registry.targets("ann", "/queue/x"), vec![Arc::clone(&a)]);
        registry.subscribe("b", "/queue/x");
        assert_eq!(registry.targets("ann", "/queue/x").len(), 2);
        registry.remove_session("a");
        assert_eq!(registry.targets("ann", "/queue/x"), vec![b]);
        registry.unsubscribe("c", "/queue/x");
        assert!(registry.targets("bob", "/queue/x").is_empty());
    }
}
