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
    assert!(AccessRules::new(vec![Rule::new(Who::Anyone).send([long[..1024].to_owned()])]).is_ok());
    let e = AccessRules::new(vec![Rule::new(Who::Anyone).send(["/ok", "x"])]).expect_err("invalid");
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
