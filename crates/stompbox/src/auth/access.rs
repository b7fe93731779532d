//! Access rules: who may SEND to and SUBSCRIBE to which destinations.
//!
//! [`AccessRules::new`] is a closed world: an operation is allowed when some
//! [`Rule`] for the session's user lists a pattern, for that operation, that
//! allows the destination; everything else is refused.
//!
//! # Patterns
//!
//! A pattern starts with `/`, is at most 1 KiB and has no whitespace or
//! control characters. In it:
//!
//! - a literal character matches itself;
//! - `**` matches any run of characters, `/` and `.` included, possibly
//!   empty. It must be a whole segment: right after a `/` or `.`, and
//!   followed by `/`, `.` or the end (`/topic/**`, `/a/**/b`, `/t/x.**`).
//!   Being a run of characters, `/a/**/b` matches `/a//b` and `/a/x/y/b`
//!   but not `/a/b`, and `/t/x.**` does not match `/t/x`;
//! - `*` matches any run of characters, possibly empty, without the
//!   separator written right before it: after a `.`, one dot-word (no `.`,
//!   but `/` is fine); after a `/`, one path segment (no `/`, but `.` is
//!   fine); anywhere else, neither `.` nor `/`;
//! - `{user}` (in access rules only) stands for the user name of an
//!   authenticated session, taken literally. For an anonymous session, or
//!   a name that is empty or has a `/`, `.`, `*`, `#`, `>` or control
//!   character, a pattern with `{user}` matches nothing, so that a user
//!   named `bob/queue` cannot reach `/user/bob/…` through `/user/{user}/**`.
//!
//! Any other `{…}`, a lone `{` or `}`, `***`, a `**` glued to other
//! characters, and a whole word (between `/` and `.`) that is `#` or `>` are
//! errors: the last two are broker wildcards, which in a rule would only
//! have matched themselves literally.
//!
//! # Destinations
//!
//! A SEND destination is literal: it is allowed when a pattern matches it.
//! So is a SUBSCRIBE destination without a *wildcard word*: a part of it,
//! split on both `.` and `/`, that is exactly `*`, `#` or `>`. That is a
//! superset of what RabbitMQ, ActiveMQ and the embedded broker treat as
//! wildcards, which keeps the check below sound for all of them.
//!
//! A wildcard SUBSCRIBE is allowed only when *one* pattern matches every
//! destination the subscription can receive messages for. In the
//! subscription, `*` is one broker word (any run without `.`; it may hold
//! `/`), and `#` and `>` are any run, or zero words, in which case the word
//! disappears with one adjacent `.` (`a.#` also means `a`, `#.b` also `b`).
//! The check lines up the subscription's wildcards with the pattern's: a
//! subscription `*` is covered only by a `**` or by a `*` written after a
//! `.`; a `#` or `>` only by a `**`, and its zero-word case separately.
//!
//! The check never allows a subscription that could receive from a
//! destination no pattern allows, at the price of refusing some that only
//! several patterns together cover: with `/t/a` and `/t/a.**`,
//! `SUBSCRIBE /t/a.#` is refused although each of its destinations is
//! allowed. Such a subscription needs one pattern that covers all of it,
//! here `/t/**`; or clients subscribe to `/t/a` and `/t/a.*.#` apart.
//!
//! # Cost
//!
//! Patterns are compiled once, in [`AccessRules::new`]. Matching a literal
//! destination walks the pattern's tokens over a bit set of destination
//! positions: O(destination × pattern) at worst, linear for the usual
//! literal prefix and a trailing wildcard, and without allocating for
//! destinations up to the 8 KiB header line limit. The wildcard check is a
//! dynamic program over (subscription position, pattern position): O(the
//! product) time, O(pattern) memory, never exponential.

use crate::app::User;
use std::fmt;
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

    /// Whether the rule applies to `user`. Roles and names come only from a
    /// verified identity, so an anonymous session whose id happens to equal
    /// a user name is not that user.
    fn matches(&self, user: &User) -> bool {
        match self {
            Who::Anyone => true,
            Who::Authenticated => user.is_authenticated(),
            Who::Anonymous => !user.is_authenticated(),
            Who::Role(role) => user.is_authenticated() && user.has_role(role),
            Who::User(name) => user.is_authenticated() && user.name() == name,
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

/// Longest pattern accepted, in bytes. It bounds the work of one match.
const MAX_PATTERN_LEN: usize = 1024;

/// The separators a `*` of a pattern does not cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Excluded {
    /// After a `.`: one dot-word.
    Dot,
    /// After a `/`: one path segment.
    Slash,
    /// Anywhere else.
    Both,
}

impl Excluded {
    fn excludes(self, byte: u8) -> bool {
        match self {
            Excluded::Dot => byte == b'.',
            Excluded::Slash => byte == b'/',
            Excluded::Both => byte == b'.' || byte == b'/',
        }
    }
}

/// A compiled pattern piece. Literals are bytes: every character with a
/// meaning is ASCII, so a multi-byte character never looks like one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Box<[u8]>),
    /// `*`.
    Star(Excluded),
    /// `**`.
    AnyRun,
    /// `{user}`.
    UserName,
}

/// A destination pattern (see the [module documentation](self) for the
/// syntax), for access rules and for other callers that scope what a
/// credential may reach, such as tokens of the HTTP publish API.
#[derive(Clone, PartialEq, Eq)]
pub struct DestinationPattern {
    text: Box<str>,
    tokens: Box<[Token]>,
    has_user: bool,
}

impl DestinationPattern {
    /// Compiles `pattern`. `{user}` is refused here: only access rules know
    /// whose session a destination is checked for.
    ///
    /// # Errors
    ///
    /// A message quoting the pattern and saying what is wrong with it.
    pub fn parse(pattern: &str) -> Result<DestinationPattern, String> {
        DestinationPattern::compile(pattern, false)
    }

    /// Whether `destination`, taken literally, matches.
    pub fn matches(&self, destination: &str) -> bool {
        self.matches_for(destination, None)
    }

    fn compile(pattern: &str, allow_user: bool) -> Result<DestinationPattern, String> {
        let tokens = tokenize(pattern, allow_user)
            .map_err(|reason| format!("pattern {}: {reason}", quoted(pattern)))?;
        Ok(DestinationPattern {
            text: pattern.into(),
            has_user: tokens.contains(&Token::UserName),
            tokens: tokens.into(),
        })
    }

    /// Matching with `{user}` standing for `user` (`None`: the session may
    /// not use `{user}`, so such a pattern matches nothing).
    fn matches_for(&self, destination: &str, user: Option<&str>) -> bool {
        let user = match (self.has_user, user) {
            (true, None) => return false,
            (_, user) => user.unwrap_or_default().as_bytes(),
        };
        match_literal(&self.tokens, destination.as_bytes(), user)
    }

    /// Whether every destination `subscription` can match is matched (see
    /// the module documentation for what is and is not proved).
    fn covers(&self, subscription: &[SubToken], user: Option<&str>) -> bool {
        let user = match (self.has_user, user) {
            (true, None) => return false,
            (_, user) => user.unwrap_or_default().as_bytes(),
        };
        // Byte-level tokens make the dynamic program a plain grid. Only
        // wildcard subscriptions get here, which are rare next to SENDs.
        let mut pattern = Vec::with_capacity(self.text.len() + user.len());
        for token in &*self.tokens {
            match token {
                Token::Literal(bytes) => pattern.extend(bytes.iter().map(|&b| PatToken::Byte(b))),
                Token::UserName => pattern.extend(user.iter().map(|&b| PatToken::Byte(b))),
                Token::Star(excluded) => pattern.push(PatToken::Star(*excluded)),
                Token::AnyRun => pattern.push(PatToken::AnyRun),
            }
        }
        covers(subscription, &pattern)
    }
}

impl fmt::Display for DestinationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for DestinationPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DestinationPattern")
            .field(&self.text)
            .finish()
    }
}

/// A pattern quoted for an error message, cut short when it is long: the
/// too-long error would otherwise repeat a whole kilobyte.
fn quoted(pattern: &str) -> String {
    const SHOWN: usize = 64;
    match pattern.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", &pattern[..cut]),
        None => format!("{pattern:?}"),
    }
}

fn tokenize(pattern: &str, allow_user: bool) -> Result<Vec<Token>, String> {
    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("is longer than {MAX_PATTERN_LEN} bytes"));
    }
    if !pattern.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "must not contain whitespace or control characters (found {c:?})"
        ));
    }
    if let Some(word) = pattern.split(['.', '/']).find(|w| matches!(*w, "#" | ">")) {
        return Err(format!(
            "'{word}' is a broker wildcard: a rule uses '*' for one word or segment \
             and '**' for any run"
        ));
    }

    let bytes = pattern.as_bytes();
    let mut tokens = Vec::new();
    let mut literal = Vec::new();
    fn flush(literal: &mut Vec<u8>, tokens: &mut Vec<Token>) {
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(literal).into()));
        }
    }
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'*' => {
                let run = bytes[i..].iter().take_while(|&&b| b == b'*').count();
                let before = i.checked_sub(1).map(|j| bytes[j]);
                let after = bytes.get(i + run).copied();
                if run > 2 {
                    return Err(format!(
                        "'{}' is not a wildcard: use '*' or '**'",
                        "*".repeat(run)
                    ));
                }
                flush(&mut literal, &mut tokens);
                if run == 2 {
                    if !matches!(before, Some(b'/' | b'.'))
                        || !matches!(after, None | Some(b'/' | b'.'))
                    {
                        return Err("'**' must be a whole segment".into());
                    }
                    tokens.push(Token::AnyRun);
                } else {
                    tokens.push(Token::Star(match before {
                        Some(b'.') => Excluded::Dot,
                        Some(b'/') => Excluded::Slash,
                        _ => Excluded::Both,
                    }));
                }
                i += run;
            }
            b'{' => {
                let rest = &pattern[i..];
                let Some(end) = rest.find('}') else {
                    return Err("'{' without a closing '}'".into());
                };
                let placeholder = &rest[..=end];
                if placeholder != "{user}" {
                    return Err(format!(
                        "unknown placeholder {placeholder:?}: the only one is {{user}}"
                    ));
                }
                if !allow_user {
                    return Err("{user} is only known in access rules".into());
                }
                flush(&mut literal, &mut tokens);
                tokens.push(Token::UserName);
                i += placeholder.len();
            }
            b'}' => return Err("'}' without an opening '{'".into()),
            other => {
                literal.push(other);
                i += 1;
            }
        }
    }
    flush(&mut literal, &mut tokens);
    Ok(tokens)
}

/// Words of a destination, for [`DestinationPattern::matches_for`], that fit
/// in the bit sets on the stack: positions 0..=8 KiB, the header line limit.
const STACK_WORDS: usize = 8 * 1024 / 64 + 1;

/// Whether `tokens` match the literal `destination`, `{user}` being `user`.
///
/// A bit set holds the destination positions the tokens so far can end at;
/// each token maps it to the next one. Unlike backtracking, this stays
/// polynomial when `*`s with different separators follow each other.
fn match_literal(tokens: &[Token], destination: &[u8], user: &[u8]) -> bool {
    // Most patterns that do not match fail on their literal ends.
    match tokens {
        [Token::Literal(only)] => return destination == &**only,
        [first, .., last] => {
            if let Token::Literal(prefix) = first
                && !destination.starts_with(prefix)
            {
                return false;
            }
            if let Token::Literal(suffix) = last
                && !destination.ends_with(suffix)
            {
                return false;
            }
        }
        _ => {}
    }

    let words = destination.len() / 64 + 1;
    let mut stack = [0u64; 2 * STACK_WORDS];
    let mut heap = Vec::new();
    let buffer: &mut [u64] = if 2 * words <= stack.len() {
        &mut stack[..2 * words]
    } else {
        heap.resize(2 * words, 0);
        &mut heap
    };
    let (mut current, mut next) = buffer.split_at_mut(words);
    current[0] = 1;
    for token in tokens {
        next.fill(0);
        match token {
            Token::Literal(bytes) => step_literal(current, next, destination, bytes),
            Token::UserName => step_literal(current, next, destination, user),
            Token::Star(excluded) => step_star(current, next, destination, *excluded),
            Token::AnyRun => step_any_run(current, next, destination.len()),
        }
        std::mem::swap(&mut current, &mut next);
        if current.iter().all(|&w| w == 0) {
            return false;
        }
    }
    has_bit(current, destination.len())
}

fn has_bit(bits: &[u64], position: usize) -> bool {
    bits[position / 64] & (1 << (position % 64)) != 0
}

fn set_bit(bits: &mut [u64], position: usize) {
    bits[position / 64] |= 1 << (position % 64);
}

fn first_bit(bits: &[u64]) -> Option<usize> {
    let (index, word) = bits.iter().enumerate().find(|(_, w)| **w != 0)?;
    Some(index * 64 + word.trailing_zeros() as usize)
}

fn step_literal(current: &[u64], next: &mut [u64], destination: &[u8], literal: &[u8]) {
    for (index, &word) in current.iter().enumerate() {
        let mut word = word;
        while word != 0 {
            let start = index * 64 + word.trailing_zeros() as usize;
            word &= word - 1;
            if destination[start..].starts_with(literal) {
                set_bit(next, start + literal.len());
            }
        }
    }
}

fn step_star(current: &[u64], next: &mut [u64], destination: &[u8], excluded: Excluded) {
    let Some(first) = first_bit(current) else {
        return;
    };
    // `open`: some start at or before `end` reaches it without crossing an
    // excluded separator.
    let mut open = false;
    for end in first..=destination.len() {
        open |= has_bit(current, end);
        if open {
            set_bit(next, end);
        }
        if destination.get(end).is_some_and(|&b| excluded.excludes(b)) {
            open = false;
        }
    }
}

fn step_any_run(current: &[u64], next: &mut [u64], len: usize) {
    let Some(first) = first_bit(current) else {
        return;
    };
    for position in first..=len {
        set_bit(next, position);
    }
}

/// A piece of a wildcard subscription, as the coverage check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubToken {
    Byte(u8),
    /// `*`: one broker word, any run without `.`.
    Word,
    /// `#` or `>` matching one or more words: any run.
    AnyRun,
    /// The next two tokens (`.` and [`SubToken::AnyRun`], in either order)
    /// may be left out: the zero-word case of a `#` or `>` with the `.` it
    /// takes along.
    Optional,
}

/// A piece of a pattern, byte by byte, for the coverage check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatToken {
    Byte(u8),
    Star(Excluded),
    AnyRun,
}

/// Whether `destination` has a word (split on `.` and `/`) that some broker
/// reads as a wildcard.
fn has_wildcard_word(destination: &str) -> bool {
    destination
        .split(['.', '/'])
        .any(|w| matches!(w, "*" | "#" | ">"))
}

/// The tokens of a wildcard subscription.
///
/// A zero-word `#` takes the `.` before it if that one is still there, else
/// the one after it: `a.#` → `a`, `#.b` → `b`, `a.#.b` → `a.b`, `#.#` → ``.
/// Either choice gives the same string, and a `#` with no `.` beside it
/// (`/topic/#`) needs none: its any-run already includes the empty one.
fn subscription_tokens(destination: &str) -> Vec<SubToken> {
    let bytes = destination.as_bytes();
    let mut tokens = Vec::with_capacity(bytes.len() + 4);
    // The last token is a `.` separator that no `#` has taken yet.
    let mut free_dot = false;
    let mut start = 0;
    loop {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'.' || b == b'/')
            .map_or(bytes.len(), |p| start + p);
        let separator = bytes.get(end).copied();
        let mut separator_taken = false;
        match &bytes[start..end] {
            b"*" => tokens.push(SubToken::Word),
            b"#" | b">" => {
                if free_dot {
                    tokens.pop();
                    tokens.extend([SubToken::Optional, SubToken::Byte(b'.'), SubToken::AnyRun]);
                } else if separator == Some(b'.') {
                    tokens.extend([SubToken::Optional, SubToken::AnyRun, SubToken::Byte(b'.')]);
                    separator_taken = true;
                } else {
                    tokens.push(SubToken::AnyRun);
                }
            }
            word => tokens.extend(word.iter().map(|&b| SubToken::Byte(b))),
        }
        free_dot = false;
        let Some(separator) = separator else {
            break;
        };
        if !separator_taken {
            tokens.push(SubToken::Byte(separator));
            free_dot = separator == b'.';
        }
        start = end + 1;
    }
    tokens
}

/// Whether a pattern `*` that does not cross `excluded` may absorb `token`
/// whole, whatever it stands for.
fn absorbs(excluded: Excluded, token: SubToken) -> bool {
    match token {
        SubToken::Byte(b) => !excluded.excludes(b),
        // A broker word has no `.` but may have a `/`.
        SubToken::Word => excluded == Excluded::Dot,
        SubToken::AnyRun | SubToken::Optional => false,
    }
}

/// Whether `pattern` matches every string `subscription` stands for.
///
/// Cell `(i, j)` holds: every string of `subscription[i..]` is matched by
/// `pattern[j..]`. A pattern `*` or `**` absorbs whole subscription tokens,
/// a literal must meet the same literal, and a [`SubToken::Optional`] needs
/// both of its cases covered. Each step only concludes an inclusion from
/// inclusions, so `true` is a proof. `false` is not a disproof: the check
/// never splits one subscription wildcard between pattern pieces (nor, in
/// the caller, combines patterns), so it may refuse a subscription that is
/// in fact covered.
///
/// The table is filled from the last row up, keeping four rows: row `i`
/// reads rows `i + 1` and, for an optional, `i + 3`.
fn covers(subscription: &[SubToken], pattern: &[PatToken]) -> bool {
    // The common literal prefix (`/topic/chat.`) decides most patterns.
    let mut i = 0;
    while let (Some(SubToken::Byte(s)), Some(PatToken::Byte(p))) =
        (subscription.get(i), pattern.get(i))
    {
        if s != p {
            return false;
        }
        i += 1;
    }
    let (subscription, pattern) = (&subscription[i..], &pattern[i..]);

    let n = subscription.len();
    let width = pattern.len() + 1;
    let mut rows = vec![false; 4 * width];
    let at = |row: usize, column: usize| (row % 4) * width + column;

    // The empty subscription: the rest of the pattern must match "".
    rows[at(n, pattern.len())] = true;
    for j in (0..pattern.len()).rev() {
        rows[at(n, j)] = !matches!(pattern[j], PatToken::Byte(_)) && rows[at(n, j + 1)];
    }
    for i in (0..n).rev() {
        for j in (0..width).rev() {
            let ok = match (subscription[i], pattern.get(j)) {
                // An optional is always followed by its two tokens, so
                // `i + 3 <= n`.
                (SubToken::Optional, _) => rows[at(i + 3, j)] && rows[at(i + 1, j)],
                (_, None) => false,
                (token, Some(PatToken::Byte(p))) => {
                    token == SubToken::Byte(*p) && rows[at(i + 1, j + 1)]
                }
                (token, Some(PatToken::Star(excluded))) => {
                    rows[at(i, j + 1)] || (absorbs(*excluded, token) && rows[at(i + 1, j)])
                }
                (_, Some(PatToken::AnyRun)) => rows[at(i, j + 1)] || rows[at(i + 1, j)],
            };
            rows[at(i, j)] = ok;
        }
    }
    rows[at(0, 0)]
}

/// The name `{user}` stands for in `user`'s session, if it may be used.
fn placeholder_name(user: &User) -> Option<&str> {
    let name = user.name();
    let usable = user.is_authenticated()
        && !name.is_empty()
        && !name
            .chars()
            .any(|c| matches!(c, '/' | '.' | '*' | '#' | '>') || c.is_control());
    usable.then_some(name)
}

#[derive(Debug)]
struct CompiledRule {
    who: Who,
    send: Box<[DestinationPattern]>,
    subscribe: Box<[DestinationPattern]>,
}

#[derive(Debug)]
struct Inner {
    rules: Option<Box<[CompiledRule]>>,
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
    /// A message naming the rule (counted from 1) and pattern that is not
    /// valid, such as `rule 3: pattern "/topic/**x": '**' must be a whole
    /// segment`.
    pub fn new(rules: Vec<Rule>) -> Result<AccessRules, String> {
        let compile = |number: usize, patterns: &[String]| {
            patterns
                .iter()
                .map(|p| DestinationPattern::compile(p, true))
                .collect::<Result<Box<[_]>, _>>()
                .map_err(|e| format!("rule {number}: {e}"))
        };
        let compiled = rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| {
                Ok(CompiledRule {
                    send: compile(index + 1, &rule.send)?,
                    subscribe: compile(index + 1, &rule.subscribe)?,
                    who: rule.who,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(AccessRules {
            inner: Arc::new(Inner {
                rules: Some(compiled),
            }),
        })
    }

    /// True for [`AccessRules::open`].
    pub fn is_open(&self) -> bool {
        self.inner.rules.is_none()
    }

    /// Whether `user` may do `operation` on `destination`.
    pub fn allows(&self, user: &User, operation: Operation, destination: &str) -> bool {
        let Some(rules) = &self.inner.rules else {
            return true;
        };
        let name = placeholder_name(user);
        let applicable = rules.iter().filter(|rule| rule.who.matches(user));
        match operation {
            Operation::Send => applicable
                .flat_map(|rule| &rule.send)
                .any(|pattern| pattern.matches_for(destination, name)),
            Operation::Subscribe if !has_wildcard_word(destination) => applicable
                .flat_map(|rule| &rule.subscribe)
                .any(|pattern| pattern.matches_for(destination, name)),
            Operation::Subscribe => {
                let mut patterns = applicable.flat_map(|rule| &rule.subscribe).peekable();
                if patterns.peek().is_none() {
                    return false;
                }
                let subscription = subscription_tokens(destination);
                patterns.any(|pattern| pattern.covers(&subscription, name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn alice() -> User {
        User::authenticated(&Identity::new("alice").with_roles(["admin"]))
    }

    fn bob() -> User {
        User::authenticated(&Identity::new("bob").with_roles(["staff"]))
    }

    fn named(name: &str) -> User {
        User::authenticated(&Identity::new(name))
    }

    fn anonymous() -> User {
        User::anonymous(&Arc::from("sess1"))
    }

    fn rules(rules: Vec<Rule>) -> AccessRules {
        AccessRules::new(rules).expect("valid rules")
    }

    /// Rules letting anyone SUBSCRIBE to `patterns`.
    fn subscribe_rules(patterns: &[&str]) -> AccessRules {
        rules(vec![
            Rule::new(Who::Anyone).subscribe(patterns.iter().copied()),
        ])
    }

    fn subscribes(rules: &AccessRules, destination: &str) -> bool {
        rules.allows(&alice(), Operation::Subscribe, destination)
    }

    #[test]
    fn one_dot_word_star() {
        let r = subscribe_rules(&["/topic/chat.*"]);
        assert!(subscribes(&r, "/topic/chat.room1"));
        assert!(subscribes(&r, "/topic/chat."));
        assert!(subscribes(&r, "/topic/chat.*"));
        assert!(!subscribes(&r, "/topic/chat.#"));
        assert!(!subscribes(&r, "/topic/chat.>"));
        assert!(!subscribes(&r, "/topic/*"));
        assert!(!subscribes(&r, "/topic/chat.room1.x"));
        assert!(!subscribes(&r, "/topic/#"));
        assert!(!subscribes(&r, "/topic/chat"));
        // After a `.`, `*` is one dot-word: it may hold a `/`, as a broker
        // word may, and so may the subscription's `*`.
        assert!(subscribes(&r, "/topic/chat.a/b"));
        assert!(subscribes(&r, "/topic/chat.a/*"));
        assert!(subscribes(&r, "/topic/chat.*/*"));
    }

    #[test]
    fn any_run_after_a_dot() {
        let r = subscribe_rules(&["/topic/chat.**"]);
        // `chat.#` also means `chat`, which needs the `.`.
        assert!(!subscribes(&r, "/topic/chat.#"));
        assert!(subscribes(&r, "/topic/chat.a.#"));
        assert!(subscribes(&r, "/topic/chat.a.>"));
        assert!(subscribes(&r, "/topic/chat.*"));
        assert!(subscribes(&r, "/topic/chat.#.x"));
        assert!(subscribes(&r, "/topic/chat.a/b.c"));
        assert!(subscribes(&r, "/topic/chat."));
        assert!(!subscribes(&r, "/topic/chat"));
        assert!(!subscribes(&r, "/topic/*.x"));
    }

    #[test]
    fn any_run_after_a_slash() {
        let r = subscribe_rules(&["/topic/**"]);
        assert!(subscribes(&r, "/topic/#"));
        assert!(subscribes(&r, "/topic/>"));
        assert!(subscribes(&r, "/topic/*.x"));
        assert!(subscribes(&r, "/topic/#.x"));
        assert!(subscribes(&r, "/topic/a/b.c"));
        assert!(subscribes(&r, "/topic/"));
        assert!(!subscribes(&r, "/topic"));
        assert!(!subscribes(&r, "/queue/#"));
        assert!(!subscribes(&r, "/*/x"));
        assert!(!subscribes(&r, "/#"));
    }

    #[test]
    fn one_segment_star() {
        let r = rules(vec![
            Rule::new(Who::Anyone)
                .send(["/topic/chat/*"])
                .subscribe(["/topic/chat/*"]),
        ]);
        let send = |d: &str| r.allows(&alice(), Operation::Send, d);
        assert!(send("/topic/chat/1"));
        assert!(send("/topic/chat/a.b"));
        assert!(send("/topic/chat/"));
        assert!(!send("/topic/chat/a/b"));
        assert!(subscribes(&r, "/topic/chat/1"));
        // A subscription `*` is a broker word, which may hold a `/`.
        assert!(!subscribes(&r, "/topic/chat/*"));
        assert!(!subscribes(&r, "/topic/chat/#"));
    }

    #[test]
    fn star_elsewhere_crosses_no_separator() {
        let p = DestinationPattern::parse("/topic/chat-*-x").expect("valid");
        assert!(p.matches("/topic/chat--x"));
        assert!(p.matches("/topic/chat-42-x"));
        assert!(!p.matches("/topic/chat-a.b-x"));
        assert!(!p.matches("/topic/chat-a/b-x"));
        let r = subscribe_rules(&["/topic/chat-*"]);
        assert!(!subscribes(&r, "/topic/chat-1.*"));
    }

    #[test]
    fn any_run_in_the_middle_is_a_run_of_characters() {
        let p = DestinationPattern::parse("/a/**/b").expect("valid");
        assert!(p.matches("/a//b"));
        assert!(p.matches("/a/x/b"));
        assert!(p.matches("/a/x.y/z/b"));
        assert!(!p.matches("/a/b"));
        assert!(!p.matches("/a/x/c"));
        let q = DestinationPattern::parse("/t/**.x").expect("valid");
        assert!(q.matches("/t/.x"));
        assert!(q.matches("/t/a/b.x"));
        assert!(!q.matches("/t/x"));
        let r = subscribe_rules(&["/t/**.x"]);
        // The zero-word case of `#.x` is `/t/x`.
        assert!(!subscribes(&r, "/t/#.x"));
        assert!(subscribes(&r, "/t/a.#.x"));
        assert!(subscribes(&r, "/t/*.x"));
    }

    #[test]
    fn wildcards_are_whole_words_only() {
        let r = rules(vec![
            Rule::new(Who::Anyone).subscribe(["/topic/a*", "/topic/b.#x"]),
        ]);
        // `a*` and `#x` are not broker wildcards: literal subscriptions.
        assert!(subscribes(&r, "/topic/a*"));
        assert!(subscribes(&r, "/topic/abc"));
        assert!(subscribes(&r, "/topic/b.#x"));
        assert!(!subscribes(&r, "/topic/a.*"));
        assert!(has_wildcard_word("/queue/*"));
        assert!(has_wildcard_word("/t/a.>"));
        assert!(has_wildcard_word("#"));
        assert!(!has_wildcard_word("/t/a*.b#"));
    }

    #[test]
    fn only_one_pattern_must_cover_a_wildcard() {
        // Together these allow every destination of `/t/a.#`, but neither
        // does alone: the sound check refuses it.
        let r = subscribe_rules(&["/t/a", "/t/a.**"]);
        assert!(subscribes(&r, "/t/a"));
        assert!(subscribes(&r, "/t/a.b.c"));
        assert!(!subscribes(&r, "/t/a.#"));
        assert!(subscribes(&r, "/t/a.*.#"));
    }

    #[test]
    fn zero_word_hash_forms() {
        let tokens = |d: &str| subscription_tokens(d);
        use SubToken::{AnyRun, Byte, Optional, Word};
        assert_eq!(tokens("a.#"), [Byte(b'a'), Optional, Byte(b'.'), AnyRun]);
        assert_eq!(tokens("#.b"), [Optional, AnyRun, Byte(b'.'), Byte(b'b')]);
        assert_eq!(tokens("/#"), [Byte(b'/'), AnyRun]);
        assert_eq!(tokens("#.#"), [Optional, AnyRun, Byte(b'.'), AnyRun]);
        assert_eq!(
            tokens("a.*.>"),
            [Byte(b'a'), Byte(b'.'), Word, Optional, Byte(b'.'), AnyRun]
        );
        let r = subscribe_rules(&["/t/x.**", "/q/*.y", "/p/a.*.y"]);
        // Both zero: `/t/x`, which needs no `.`.
        assert!(!subscribes(&r, "/t/x.#.#"));
        assert!(subscribes(&r, "/t/x.y.#.#"));
        assert!(subscribes(&r, "/t/x.#.y.#"));
        assert!(!subscribes(&r, "/q/#.y"));
        // A broker word may hold a `/`, which a `*` after `/` does not.
        assert!(!subscribes(&r, "/q/*.y"));
        assert!(subscribes(&r, "/p/a.*.y"));
        assert!(!subscribes(&r, "/p/a.#.y"));
    }

    #[test]
    fn user_placeholder() {
        let r = rules(vec![
            Rule::new(Who::Anyone)
                .send(["/user/{user}/**"])
                .subscribe(["/user/{user}/**"]),
        ]);
        let send = |u: &User, d: &str| r.allows(u, Operation::Send, d);
        let subscribe = |u: &User, d: &str| r.allows(u, Operation::Subscribe, d);
        assert!(send(&alice(), "/user/alice/queue/x"));
        assert!(!send(&alice(), "/user/bob/queue/x"));
        assert!(!send(&alice(), "/user/alice"));
        assert!(send(&bob(), "/user/bob/queue/x"));
        assert!(subscribe(&alice(), "/user/alice/queue/#"));
        assert!(subscribe(&alice(), "/user/alice/*"));
        assert!(!subscribe(&alice(), "/user/*/queue/x"));
        assert!(!subscribe(&bob(), "/user/alice/queue/#"));
        // An anonymous session's name is its id: never a user's.
        let sneaky = User::anonymous(&Arc::from("alice"));
        assert!(!send(&sneaky, "/user/alice/queue/x"));
        assert!(!send(&anonymous(), "/user/sess1/queue/x"));
    }

    #[test]
    fn user_placeholder_refuses_hostile_names() {
        let r = rules(vec![
            Rule::new(Who::Anyone)
                .send(["/user/{user}/**", "/u/{user}.*", "/v/{user}*"])
                .subscribe(["/user/{user}/**"]),
        ]);
        let cases = [
            ("bob/queue", "/user/bob/queue/x"),
            ("a.b", "/user/a.b/x"),
            ("a.b", "/u/a.b.c"),
            ("*", "/user/*/x"),
            ("#", "/user/#/x"),
            (">", "/user/>/x"),
            ("bob\n", "/user/bob\n/x"),
            ("bob\u{7f}", "/user/bob\u{7f}/x"),
            ("", "/user//x"),
        ];
        for (name, destination) in cases {
            let user = named(name);
            for pattern in ["/user/x/y", destination] {
                assert!(
                    !r.allows(&user, Operation::Send, pattern),
                    "{name:?} sent to {pattern:?}"
                );
                assert!(!r.allows(&user, Operation::Subscribe, pattern));
            }
            assert!(!r.allows(&user, Operation::Subscribe, "/user/bob/#"));
        }
        // The name is literal and `{user}*` excludes both separators.
        let user = named("bo");
        assert!(r.allows(&user, Operation::Send, "/v/bob"));
        assert!(!r.allows(&user, Operation::Send, "/v/bo.b"));
        assert!(r.allows(&user, Operation::Send, "/u/bo.x/y"));
    }

    #[test]
    fn who_decides_which_rules_apply() {
        let r = rules(vec![
            Rule::new(Who::Anyone).send(["/app/public"]),
            Rule::new(Who::Authenticated).send(["/app/members"]),
            Rule::new(Who::Anonymous).send(["/app/guests"]),
            Rule::new(Who::Role("admin".into())).send(["/app/admin/**"]),
            Rule::new(Who::User("bob".into())).send(["/app/bob"]),
        ]);
        let send = |u: &User, d: &str| r.allows(u, Operation::Send, d);
        let guest = anonymous();
        let admin_named_bob = User::anonymous(&Arc::from("bob"));
        for user in [alice(), bob(), guest.clone()] {
            assert!(send(&user, "/app/public"));
        }
        assert!(send(&alice(), "/app/members"));
        assert!(send(&bob(), "/app/members"));
        assert!(!send(&guest, "/app/members"));
        assert!(send(&guest, "/app/guests"));
        assert!(!send(&alice(), "/app/guests"));
        assert!(send(&alice(), "/app/admin/x"));
        assert!(!send(&bob(), "/app/admin/x"));
        assert!(!send(&guest, "/app/admin/x"));
        assert!(send(&bob(), "/app/bob"));
        assert!(!send(&alice(), "/app/bob"));
        assert!(!send(&admin_named_bob, "/app/bob"));
        assert!(!send(&alice(), "/app/other"));
    }

    #[test]
    fn send_and_subscribe_are_separate() {
        let r = rules(vec![
            Rule::new(Who::Anyone).send(["/app/**"]),
            Rule::new(Who::Anyone).subscribe(["/topic/**"]),
        ]);
        assert!(r.allows(&alice(), Operation::Send, "/app/x"));
        assert!(!r.allows(&alice(), Operation::Subscribe, "/app/x"));
        assert!(!r.allows(&alice(), Operation::Subscribe, "/app/#"));
        assert!(r.allows(&alice(), Operation::Subscribe, "/topic/x"));
        assert!(!r.allows(&alice(), Operation::Send, "/topic/x"));
    }

    #[test]
    fn no_rules_allow_nothing_and_open_allows_everything() {
        let none = rules(Vec::new());
        assert!(!none.is_open());
        let open = AccessRules::open();
        assert!(open.is_open());
        for user in [alice(), anonymous()] {
            for operation in [Operation::Send, Operation::Subscribe] {
                for destination in ["/topic/a", "/topic/#", "/user/bob/x", ""] {
                    assert!(!none.allows(&user, operation, destination));
                    assert!(open.allows(&user, operation, destination));
                }
            }
        }
    }

    #[test]
    fn syntax_errors_name_the_rule_and_pattern() {
        let error = |pattern: &str| {
            AccessRules::new(vec![
                Rule::new(Who::Anyone).send(["/ok"]),
                Rule::new(Who::Anyone).subscribe(["/fine/**"]),
                Rule::new(Who::Anyone).send(["/ok"]).subscribe([pattern]),
            ])
            .expect_err(pattern)
        };
        assert_eq!(
            error("/topic/**x"),
            "rule 3: pattern \"/topic/**x\": '**' must be a whole segment"
        );
        let cases = [
            ("", "must not be empty"),
            ("topic/a", "must start with '/'"),
            ("/a b", "whitespace"),
            ("/a\u{0}", "control"),
            ("/a\tb", "whitespace"),
            ("/a\u{85}", "control"),
            ("/***", "'***' is not a wildcard"),
            ("/a/****", "'****' is not a wildcard"),
            ("/a**", "whole segment"),
            ("/a/**b", "whole segment"),
            ("/a/b**/c", "whole segment"),
            ("/a/**{user}", "whole segment"),
            ("/a/{name}", "unknown placeholder \"{name}\""),
            ("/a/{user", "without a closing"),
            ("/a/user}", "without an opening"),
            ("/a/{}", "unknown placeholder"),
            ("/topic/a.#", "'#' is a broker wildcard"),
            ("/topic/>", "'>' is a broker wildcard"),
        ];
        for (pattern, message) in cases {
            let e = error(pattern);
            assert!(e.starts_with("rule 3: pattern \""), "{e}");
            assert!(e.contains(message), "{pattern:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATTERN_LEN));
        let e = error(&long);
        assert!(e.contains("longer than 1024 bytes"), "{e}");
        assert!(e.len() < 200, "{e}");
        assert!(
            AccessRules::new(vec![Rule::new(Who::Anyone).send([long[..1024].to_owned()])]).is_ok()
        );
        let e =
            AccessRules::new(vec![Rule::new(Who::Anyone).send(["/ok", "x"])]).expect_err("invalid");
        assert_eq!(e, "rule 1: pattern \"x\": must start with '/'");
    }

    #[test]
    fn valid_patterns_compile() {
        for pattern in [
            "/",
            "/**",
            "/topic/**",
            "/a/**/b",
            "/t/x.**",
            "/t/x.**.y",
            "/*",
            "/a*b",
            "/a.*/*",
            "/user/{user}/**",
            "/u/{user}*",
            "/exchange/amq.topic/a.*",
            "/topic/a#b",
            "/topic/ünïcode.*",
        ] {
            assert!(
                AccessRules::new(vec![Rule::new(Who::Anyone).send([pattern])]).is_ok(),
                "{pattern:?}"
            );
        }
    }

    #[test]
    fn destination_pattern_api() {
        let p = DestinationPattern::parse("/topic/news.*").expect("valid");
        assert_eq!(p.to_string(), "/topic/news.*");
        assert!(p.matches("/topic/news.sport"));
        assert!(!p.matches("/topic/news"));
        assert!(!p.matches("/topic/news.a.b"));
        assert!(
            DestinationPattern::parse("/topic/x")
                .expect("valid")
                .matches("/topic/x")
        );
        let e = DestinationPattern::parse("/user/{user}/**").expect_err("no {user}");
        assert!(e.starts_with("pattern \"/user/{user}/**\": "), "{e}");
        assert!(e.contains("{user}"), "{e}");
        assert!(DestinationPattern::parse("/a/**x").is_err());
        assert_eq!(format!("{p:?}"), "DestinationPattern(\"/topic/news.*\")");
    }

    #[test]
    fn long_inputs_stay_polynomial() {
        // Stars of different separators in a row, against an 8 KiB
        // destination that almost matches: backtracking would explode.
        let pattern = format!("/{}z", "a.*/*".repeat(60));
        let p = DestinationPattern::parse(&pattern).expect("valid");
        let destination = format!("/{}", "a.a/a/".repeat(8 * 1024 / 6));
        assert!(!p.matches(&destination));
        let r = rules(vec![
            Rule::new(Who::Anyone)
                .send([pattern.as_str(), "/**.x"])
                .subscribe(["/**", "/a.**.*.**", pattern.as_str()]),
        ]);
        assert!(!r.allows(&alice(), Operation::Send, &destination));
        assert!(r.allows(&alice(), Operation::Send, &format!("{destination}.x")));
        let hashes = format!("/a{}", ".#".repeat(4 * 1024));
        assert!(r.allows(&alice(), Operation::Subscribe, &hashes));
        let hostile = format!("/b{}", ".#.*".repeat(2 * 1024));
        assert!(r.allows(&alice(), Operation::Subscribe, &hostile));
        // Longer than the stack bit sets: still right.
        let huge = format!("/{}.x", "y".repeat(20_000));
        assert!(r.allows(&alice(), Operation::Send, &huge));
    }

    /// A small deterministic generator (xorshift64*), for the randomized
    /// checks below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
            choices[self.below(choices.len())]
        }

        fn string(&mut self, alphabet: &[&str], max_len: usize) -> String {
            (0..self.below(max_len + 1))
                .map(|_| self.pick(alphabet))
                .collect()
        }
    }

    /// A valid rule pattern over `a`, `b`, `.`, `/`, `*` and `**`.
    fn random_pattern(rng: &mut Rng) -> String {
        loop {
            let text = format!(
                "/{}",
                rng.string(&["a", "b", ".", "/", "*", "**", "a", "."], 6)
            );
            if DestinationPattern::parse(&text).is_ok() {
                return text;
            }
        }
    }

    /// The pattern semantics by plain backtracking over the pattern text,
    /// each `*` taking its separators from the character before it.
    fn reference(pattern: &str, destination: &str) -> bool {
        fn go(pattern: &[u8], at: usize, destination: &[u8]) -> bool {
            let Some(&c) = pattern.get(at) else {
                return destination.is_empty();
            };
            if c == b'*' && pattern.get(at + 1) != Some(&b'*') {
                let excluded: &[u8] = match at.checked_sub(1).map(|i| pattern[i]) {
                    Some(b'.') => b".",
                    Some(b'/') => b"/",
                    _ => b"./",
                };
                let mut k = 0;
                loop {
                    if go(pattern, at + 1, &destination[k..]) {
                        return true;
                    }
                    if k == destination.len() || excluded.contains(&destination[k]) {
                        return false;
                    }
                    k += 1;
                }
            }
            if c == b'*' {
                return (0..=destination.len()).any(|k| go(pattern, at + 2, &destination[k..]));
            }
            destination.first() == Some(&c) && go(pattern, at + 1, &destination[1..])
        }
        go(pattern.as_bytes(), 0, destination.as_bytes())
    }

    #[test]
    fn literal_matching_agrees_with_backtracking() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for _ in 0..20_000 {
            let pattern = random_pattern(&mut rng);
            let destination = format!("/{}", rng.string(&["a", "b", ".", "/", "*"], 7));
            let compiled = DestinationPattern::parse(&pattern).expect("valid");
            assert_eq!(
                compiled.matches(&destination),
                reference(&pattern, &destination),
                "{pattern:?} on {destination:?}"
            );
        }
    }

    /// One destination `subscription` can receive from: each `*` word
    /// becomes a run without `.`; each `#` or `>` word a run of anything,
    /// or nothing, taking along one `.` next to it if there is one.
    fn instantiate(subscription: &str, rng: &mut Rng) -> String {
        // Words at even places, separators at odd ones.
        let mut pieces: Vec<Option<String>> = Vec::new();
        let mut word = String::new();
        for c in subscription.chars() {
            if c == '.' || c == '/' {
                pieces.push(Some(std::mem::take(&mut word)));
                pieces.push(Some(c.to_string()));
            } else {
                word.push(c);
            }
        }
        pieces.push(Some(word));
        for at in (0..pieces.len()).step_by(2) {
            match pieces[at].as_deref() {
                Some("*") => pieces[at] = Some(rng.string(&["a", "b", "/", "*"], 3)),
                Some("#" | ">") if rng.below(2) == 0 => {
                    pieces[at] = None;
                    let left = (0..at).rev().find(|&i| pieces[i].is_some());
                    let right = (at + 1..pieces.len()).find(|&i| pieces[i].is_some());
                    let dots: Vec<usize> = [left, right]
                        .into_iter()
                        .flatten()
                        .filter(|&i| pieces[i].as_deref() == Some("."))
                        .collect();
                    if !dots.is_empty() {
                        pieces[dots[rng.below(dots.len())]] = None;
                    }
                }
                Some("#" | ">") => {
                    pieces[at] = Some(rng.string(&["a", "b", ".", "/", "#"], 4));
                }
                _ => {}
            }
        }
        pieces.into_iter().flatten().collect()
    }

    #[test]
    fn allowed_wildcard_subscriptions_only_reach_allowed_destinations() {
        let mut rng = Rng(0x0dd_ba11_cafe_f00d);
        let mut proved = 0;
        for _ in 0..20_000 {
            let patterns: Vec<String> = (0..=rng.below(3))
                .map(|_| random_pattern(&mut rng))
                .collect();
            let r = rules(vec![
                Rule::new(Who::Anyone)
                    .send(patterns.clone())
                    .subscribe(patterns.clone()),
            ]);
            let subscription = format!(
                "/{}",
                rng.string(&["a", "b", ".", "/", "*", "#", ".*", ".#", "/#", ">"], 6)
            );
            let allowed = r.allows(&alice(), Operation::Subscribe, &subscription);
            if !has_wildcard_word(&subscription) {
                assert_eq!(
                    allowed,
                    r.allows(&alice(), Operation::Send, &subscription),
                    "{patterns:?} {subscription:?}"
                );
                continue;
            }
            if !allowed {
                continue;
            }
            proved += 1;
            for _ in 0..40 {
                let concrete = instantiate(&subscription, &mut rng);
                assert!(
                    r.allows(&alice(), Operation::Send, &concrete),
                    "{patterns:?} allow SUBSCRIBE {subscription:?} but not {concrete:?}"
                );
            }
        }
        // The property is only worth something if it was exercised.
        assert!(proved > 500, "only {proved} wildcard subscriptions allowed");
    }
}
