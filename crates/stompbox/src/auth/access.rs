//! Access rules: who may SEND to and SUBSCRIBE to which destinations.
//! (Skeleton: the matching lands with its tests.)

use crate::app::User;
use std::sync::Arc;

/// Whom a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Who {
    /// Every session.
    Anyone,
    /// Sessions with a verified identity.
    Authenticated,
    /// Sessions without one.
    Anonymous,
    /// Users with this role.
    Role(String),
    /// This user.
    User(String),
}

impl Who {
    /// Parses `anyone`, `authenticated`, `anonymous`, `role:NAME` or `user:NAME`.
    ///
    /// # Errors
    ///
    /// A message naming what is accepted.
    pub fn parse(text: &str) -> Result<Who, String> {
        match text.trim() {
            "anyone" => Ok(Who::Anyone),
            "authenticated" => Ok(Who::Authenticated),
            "anonymous" => Ok(Who::Anonymous),
            other => match other.split_once(':') {
                Some(("role", name)) if !name.is_empty() => Ok(Who::Role(name.to_owned())),
                Some(("user", name)) if !name.is_empty() => Ok(Who::User(name.to_owned())),
                _ => Err(format!(
                    "\"{text}\" is not anyone, authenticated, anonymous, role:NAME or user:NAME"
                )),
            },
        }
    }
}

/// One rule: `who` may SEND to the `send` patterns and SUBSCRIBE to the
/// `subscribe` patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rule {
    /// Whom the rule is for.
    pub who: Who,
    /// Destination patterns `who` may SEND to.
    pub send: Vec<String>,
    /// Destination patterns `who` may SUBSCRIBE to.
    pub subscribe: Vec<String>,
}

impl Rule {
    /// A rule for `who` that allows nothing yet.
    pub fn new(who: Who) -> Rule {
        Rule {
            who,
            send: Vec::new(),
            subscribe: Vec::new(),
        }
    }

    /// Adds patterns `who` may SEND to.
    #[must_use]
    pub fn send<I, P>(mut self, patterns: I) -> Rule
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.send.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Adds patterns `who` may SUBSCRIBE to.
    #[must_use]
    pub fn subscribe<I, P>(mut self, patterns: I) -> Rule
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.subscribe.extend(patterns.into_iter().map(Into::into));
        self
    }
}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// SEND.
    Send,
    /// SUBSCRIBE.
    Subscribe,
}

#[derive(Debug)]
struct Inner {
    rules: Option<Vec<Rule>>,
}

/// A server's access rules. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessRules {
    inner: Arc<Inner>,
}

impl AccessRules {
    /// No rules: every SEND and SUBSCRIBE is allowed, except that anonymous
    /// sessions may not send to other users' `/user/{name}/…` destinations
    /// (the session enforces that part).
    pub fn open() -> AccessRules {
        AccessRules {
            inner: Arc::new(Inner { rules: None }),
        }
    }

    /// Rules: what no rule allows is refused.
    ///
    /// # Errors
    ///
    /// A message naming the rule and pattern that is not valid.
    pub fn new(rules: Vec<Rule>) -> Result<AccessRules, String> {
        Ok(AccessRules {
            inner: Arc::new(Inner { rules: Some(rules) }),
        })
    }

    /// True for [`AccessRules::open`].
    pub fn is_open(&self) -> bool {
        self.inner.rules.is_none()
    }

    /// Whether `user` may do `operation` on `destination`.
    pub fn allows(&self, user: &User, operation: Operation, destination: &str) -> bool {
        let _ = (user, operation, destination);
        self.inner.rules.is_none()
    }
}
