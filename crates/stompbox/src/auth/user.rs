//! The user a session belongs to.

use std::fmt;
use std::sync::Arc;

/// The user a session belongs to: the identity the server's authenticator
/// verified, or, without one, the session itself (an anonymous session).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    name: Arc<str>,
    authenticated: bool,
    /// `None` rather than an empty slice: most sessions have no roles, and
    /// an empty `Arc` would still be an allocation per session.
    roles: Option<Arc<[Box<str>]>>,
}

impl User {
    pub(crate) fn authenticated(identity: &super::Identity) -> User {
        User {
            name: identity.name.as_str().into(),
            authenticated: true,
            roles: (!identity.roles.is_empty())
                .then(|| identity.roles.iter().map(|r| r.as_str().into()).collect()),
        }
    }

    pub(crate) fn anonymous(session_id: &Arc<str>) -> User {
        User {
            name: Arc::clone(session_id),
            authenticated: false,
            roles: None,
        }
    }

    /// The user name; for an anonymous session, the session id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when the server's authenticator verified this user.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The roles of the verified identity (none for an anonymous session).
    pub fn roles(&self) -> &[Box<str>] {
        self.roles.as_deref().unwrap_or_default()
    }

    /// True when the user has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().iter().any(|r| &**r == role)
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
