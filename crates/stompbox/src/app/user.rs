//! User destinations.
//!
//! A session's SUBSCRIBE to `/user/queue/x` becomes two broker
//! subscriptions, both delivering under the client's subscription id: one to
//! a destination for *this user* and `/queue/x`, one to a destination for
//! *this session* and `/queue/x`. A message for user `u` is published once,
//! to the user's destination, and reaches every session of `u` subscribed to
//! `/user/queue/x`, on this server or on any other instance sharing the
//! broker; a reply for one session goes to the session's destination.
//!
//! So no instance needs to know where a user's sessions are (Spring
//! broadcasts its whole user registry between instances for that). The
//! broker names the destinations ([`Broker::user_destination`]) in a
//! namespace clients cannot subscribe to: the embedded broker keeps it
//! internal, the relay uses RabbitMQ's `amq.direct` exchange (exact routing
//! keys, so no wildcard subscription can reach it), and the session refuses
//! any client frame naming it.
//!
//! [`Broker::user_destination`]: crate::broker::Broker::user_destination

/// The routing key for `destination` (e.g. `/queue/x`) of user `user`.
///
/// Hashed so that any user name or destination yields a short key made only
/// of characters every broker accepts in a routing key.
pub(crate) fn user_key(user: &str, destination: &str) -> String {
    format!("u.{}", digest(user, destination))
}

/// The routing key for `destination` of one session.
pub(crate) fn session_key(session_id: &str, destination: &str) -> String {
    format!("s.{}", digest(session_id, destination))
}

fn digest(owner: &str, destination: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(owner.as_bytes());
    // A separator no destination or name starts with keeps ("ab", "/c")
    // and ("a", "b/c") apart.
    sha.update(b"\n");
    sha.update(destination.as_bytes());
    sha.digest().to_string()
}

/// A fresh unguessable session id: 128 random bits as 32 hex digits.
pub(crate) fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Without OS randomness, fall back to hashes keyed per process: not
        // cryptographic, but not predictable from outside either.
        use std::hash::{BuildHasher, Hasher};
        let state = std::hash::RandomState::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = state.build_hasher();
            h.write_u128(now);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_users_sessions_and_destinations() {
        assert_ne!(user_key("ann", "/queue/x"), user_key("ben", "/queue/x"));
        assert_ne!(user_key("ann", "/queue/x"), user_key("ann", "/queue/y"));
        assert_ne!(user_key("ab", "/c"), user_key("a", "b/c"));
        assert_ne!(user_key("s1", "/queue/x"), session_key("s1", "/queue/x"));
        assert_eq!(user_key("ann", "/queue/x"), user_key("ann", "/queue/x"));
        assert!(
            user_key("a.b*#", "/queue/x")
                .bytes()
                .all(|b| b == b'.' || b.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn session_ids_are_random() {
        let id = new_session_id();
        assert_eq!(id.len(), 32);
        assert_ne!(new_session_id(), id);
    }
}
