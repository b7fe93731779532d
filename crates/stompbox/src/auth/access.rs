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

use super::User;
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
mod tests;
