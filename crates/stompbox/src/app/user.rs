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
    // Lowercase hex, as `Digest`'s `Display` writes it, without going
    // through the formatter byte by byte.
    let mut hex = String::with_capacity(40);
    for byte in sha.digest().bytes() {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How many user destinations one session remembers the broker destination
/// of ([`ReplyRoutes`]). A handler usually answers at one or two.
const REPLY_ROUTES: usize = 8;

/// Whose user destination a reply goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Every session of the session's user.
    User,
    /// The session alone.
    Session,
}

/// The broker destinations a session's handler replies were last sent to,
/// by user destination: a handler answering every request at the same
/// `/queue/…` would otherwise hash and format the same key on each reply.
/// The user and the session are fixed for the session's life, so the
/// answer never changes; the cache is bounded by [`REPLY_ROUTES`].
#[derive(Debug, Default)]
pub(crate) struct ReplyRoutes {
    routes: Vec<(Owner, Box<str>, Box<str>)>,
}

impl ReplyRoutes {
    /// The broker destination of `destination` (e.g. `/queue/x`) for
    /// `owner`: `user` is the session's user name, `session_id` its id.
    pub(crate) fn resolve(
        &mut self,
        broker: &dyn crate::broker::Broker,
        owner: Owner,
        user: &str,
        session_id: &str,
        destination: &str,
    ) -> &str {
        let found = self
            .routes
            .iter()
            .position(|(o, d, _)| *o == owner && d.as_ref() == destination);
        let at = match found {
            Some(at) => at,
            None => {
                let key = match owner {
                    Owner::User => user_key(user, destination),
                    Owner::Session => session_key(session_id, destination),
                };
                if self.routes.len() >= REPLY_ROUTES {
                    self.routes.remove(0);
                }
                self.routes.push((
                    owner,
                    destination.into(),
                    broker.user_destination(&key).into(),
                ));
                self.routes.len() - 1
            }
        };
        &self.routes[at].2
    }
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(2 * bytes.len());
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;

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
    fn keys_are_the_hex_sha1_of_owner_and_destination() {
        // Other instances sharing the broker compute the same keys, so the
        // encoding must never change.
        let sha1_hex = |input: &[u8]| {
            let mut sha = sha1_smol::Sha1::new();
            sha.update(input);
            sha.digest().to_string()
        };
        assert_eq!(
            user_key("ann", "/queue/x"),
            format!("u.{}", sha1_hex(b"ann\n/queue/x"))
        );
        assert_eq!(
            session_key("s1", "/queue/x"),
            format!("s.{}", sha1_hex(b"s1\n/queue/x"))
        );
    }

    #[test]
    fn reply_routes_remember_a_bounded_number_of_destinations() {
        let broker = crate::broker::embedded::EmbeddedBroker::new(Default::default());
        let mut routes = ReplyRoutes::default();
        let direct = broker.user_destination(&session_key("s1", "/queue/a"));
        assert_eq!(
            routes.resolve(&broker, Owner::Session, "ann", "s1", "/queue/a"),
            direct
        );
        assert_eq!(
            routes.resolve(&broker, Owner::Session, "ann", "s1", "/queue/a"),
            direct
        );
        assert_eq!(
            routes.resolve(&broker, Owner::User, "ann", "s1", "/queue/a"),
            broker.user_destination(&user_key("ann", "/queue/a"))
        );
        for i in 0..3 * REPLY_ROUTES {
            let destination = format!("/queue/{i}");
            assert_eq!(
                routes.resolve(&broker, Owner::Session, "ann", "s1", &destination),
                broker.user_destination(&session_key("s1", &destination))
            );
        }
        assert_eq!(routes.routes.len(), REPLY_ROUTES);
    }

    #[test]
    fn session_ids_are_random() {
        let id = new_session_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_ne!(new_session_id(), id);
    }
}
