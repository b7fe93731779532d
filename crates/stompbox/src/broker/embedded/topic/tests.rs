use super::*;

/// The reference: RabbitMQ topic matching by dynamic programming over
/// (pattern word, key word), against which the trie is checked.
fn matches(pattern: &str, key: &str) -> bool {
    let key: Vec<&str> = key.split('.').collect();
    let mut reachable = vec![false; key.len() + 1];
    reachable[0] = true;
    for word in pattern.split('.') {
        if word == "#" {
            for j in 1..=key.len() {
                reachable[j] = reachable[j] || reachable[j - 1];
            }
        } else {
            for j in (1..=key.len()).rev() {
                reachable[j] = reachable[j - 1] && (word == "*" || word == key[j - 1]);
            }
            reachable[0] = false;
        }
    }
    reachable[key.len()]
}

impl Node {
    /// Nodes in this subtree, itself included.
    fn count(&self) -> usize {
        1 + self.literal.values().map(|n| n.count()).sum::<usize>()
            + self.star.as_ref().map_or(0, |n| n.count())
            + self.hash.as_ref().map_or(0, |n| n.count())
    }
}

fn subscription(key: u64) -> Arc<Subscription> {
    Arc::new(Subscription::new(
        bytes::Bytes::from(format!("s{key}")),
        None,
        key,
        crate::broker::AckMode::Auto,
        stompbox_codec::Version::V1_2,
        Arc::new(crate::outbox::Outbox::new(1024)),
        super::super::subscription::Source::Topic {
            routing_key: "x".into(),
        },
        10,
        None,
        Default::default(),
    ))
}

fn matched(registry: &TopicRegistry, key: &str) -> Vec<u64> {
    let mut keys = Vec::new();
    registry.for_each_match(key, |s| keys.push(s.key));
    keys.sort_unstable();
    keys
}

/// Trie nodes a publish of `key` visits.
fn work(registry: &TopicRegistry, key: &str) -> usize {
    let words: Vec<&str> = key.split('.').collect();
    registry.read().collect_patterns(&words, &mut Vec::new())
}

fn one_pattern(pattern: &str, key: &str) -> bool {
    let registry = TopicRegistry::default();
    registry.add(pattern, subscription(1));
    !matched(&registry, key).is_empty()
}

#[test]
fn rabbitmq_topic_rules() {
    for (pattern, key, expected) in [
        ("a.*", "a.b", true),
        ("a.*", "a", false),
        ("a.*", "a.b.c", false),
        ("a.#", "a", true),
        ("a.#", "a.b.c", true),
        ("#", "x.y", true),
        ("#", "", true),
        ("#.c", "a.b.c", true),
        ("#.c", "c", true),
        ("#.c", "c.d", false),
        ("*.b.#", "a.b", true),
        ("*.b.#", "a.c", false),
        ("a.#.z", "a.z", true),
        ("a.#.z", "a.b.c.z", true),
        ("a.#.z", "a.b.c", false),
        // A key is at least one (maybe empty) word.
        ("#.*", "", true),
        ("#.*", "a", true),
        ("*.#.*", "a", false),
        ("*.#.*", "a.b", true),
        ("#.a.#", "x.a.a.y", true),
        ("#.#", "a.b", true),
    ] {
        assert_eq!(matches(pattern, key), expected, "reference {pattern} {key}");
        assert_eq!(one_pattern(pattern, key), expected, "trie {pattern} {key}");
    }
    let long: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert!(one_pattern("#", &long.join(".")));
    assert!(one_pattern("0.#.39", &long.join(".")));
}

/// Every pattern over a small alphabet against every key over it: the trie
/// agrees with the reference, and each matching subscription is delivered
/// exactly once however many paths reach it (`#.#`, `#.a.#`, …).
#[test]
fn the_trie_agrees_with_the_reference_and_delivers_once() {
    let alphabet = ["a", "b", "*", "#"];
    let mut patterns = Vec::new();
    for len in 1..=4 {
        for n in 0..alphabet.len().pow(len) {
            let words: Vec<&str> = (0..len)
                .map(|i| alphabet[n / alphabet.len().pow(i) % alphabet.len()])
                .collect();
            if words.iter().any(|w| *w == "*" || *w == "#") {
                patterns.push(words.join("."));
            }
        }
    }
    let registry = TopicRegistry::default();
    let subs: Vec<_> = (0..patterns.len() as u64).map(subscription).collect();
    for (pattern, sub) in patterns.iter().zip(&subs) {
        registry.add(pattern, Arc::clone(sub));
    }
    let mut keys = vec![String::new()];
    for len in 1..=5 {
        for n in 0..2usize.pow(len) {
            let words: Vec<&str> = (0..len).map(|i| ["a", "b"][n >> i & 1]).collect();
            keys.push(words.join("."));
        }
    }
    for key in &keys {
        let expected: Vec<u64> = patterns
            .iter()
            .enumerate()
            .filter(|(_, p)| matches(p, key))
            .map(|(i, _)| i as u64)
            .collect();
        assert_eq!(matched(&registry, key), expected, "key '{key}'");
    }
    // Removing every subscription leaves an empty trie: no node is kept.
    for (pattern, sub) in patterns.iter().zip(&subs) {
        registry.remove(pattern, sub);
    }
    assert!(registry.read().patterns.is_empty());
}

#[test]
fn exact_keys_and_patterns_together() {
    let registry = TopicRegistry::default();
    let subs: Vec<_> = (0..5).map(subscription).collect();
    registry.add("stocks.*.price", Arc::clone(&subs[0]));
    registry.add("#", Arc::clone(&subs[1]));
    registry.add("*.eu.price", Arc::clone(&subs[2]));
    registry.add("news.#", Arc::clone(&subs[3]));
    registry.add("stocks.eu.price", Arc::clone(&subs[4]));
    assert_eq!(matched(&registry, "stocks.eu.price"), [0, 1, 2, 4]);
    assert_eq!(matched(&registry, "news"), [1, 3]);
    assert_eq!(matched(&registry, "weather.eu.price"), [1, 2]);
    registry.remove("#", &subs[1]);
    registry.remove("stocks.*.price", &subs[0]);
    assert_eq!(matched(&registry, "stocks.eu.price"), [2, 4]);
    registry.remove("news.#", &subs[3]);
    assert!(matched(&registry, "news.today").is_empty());
    registry.remove("*.eu.price", &subs[2]);
    registry.remove("stocks.eu.price", &subs[4]);
    let registry = registry.read();
    assert!(registry.patterns.is_empty() && registry.exact.is_empty());
}

#[test]
fn subscriptions_share_nodes_and_removal_frees_them() {
    let registry = TopicRegistry::default();
    let a = subscription(1);
    let b = subscription(2);
    registry.add("news.*.eu.#", Arc::clone(&a));
    let one = registry.read().patterns.count();
    // The same pattern, and an equivalent spelling of it, add no node.
    registry.add("news.*.eu.#", Arc::clone(&b));
    let d = subscription(3);
    registry.add("news.*.eu.#.#", Arc::clone(&d));
    assert_eq!(registry.read().patterns.count(), one);
    // A long run of wildcards is one node per `*` and one for all the `#`s.
    let c = subscription(4);
    let hostile = vec!["#"; 1000].join(".");
    registry.add(&hostile, Arc::clone(&c));
    assert_eq!(registry.read().patterns.count(), one + 1);
    assert_eq!(matched(&registry, "news.x.eu"), [1, 2, 3, 4]);
    registry.remove(&hostile, &c);
    registry.remove("news.*.eu.#", &a);
    assert_eq!(registry.read().patterns.count(), one);
    // Removing one subscription of a node keeps the others.
    assert_eq!(matched(&registry, "news.x.eu.y"), [2, 3]);
    registry.remove("news.*.eu.#", &b);
    registry.remove("news.*.eu.#.#", &d);
    assert!(registry.read().patterns.is_empty());
}

/// An unshared word of a pattern costs one boxed node plus the word's
/// bytes: no hash table per node, no copy of the word per pattern.
#[test]
fn a_node_is_small() {
    assert!(std::mem::size_of::<Node>() <= 72);
    let registry = TopicRegistry::default();
    let long: Vec<String> = (0..32).map(|i| format!("w{i}")).collect();
    registry.add(&format!("{}.#", long.join(".")), subscription(1));
    let registry = registry.read();
    // One node per word (and the `#`), each holding its single child inline.
    assert_eq!(registry.patterns.count(), 1 + 33);
    let mut node = &registry.patterns;
    for word in &long {
        assert!(matches!(node.literal, few::Few::One(..)));
        node = node.literal.get(word.as_str()).expect("child");
    }
}

/// The work of a publish is the trie nodes its key reaches, the same with
/// 10,000 patterns that cannot match it as with none: patterns on other
/// first words, with other words after leading wildcards, and wildcard-only
/// prefixes of every shape up to the first literal.
#[test]
fn unrelated_patterns_add_no_work_to_a_publish() {
    let registry = TopicRegistry::default();
    let canary = subscription(0);
    registry.add("news.*.today", Arc::clone(&canary));
    let key = "news.sport.today";
    let alone = work(&registry, key);
    assert_eq!(matched(&registry, key), [0]);
    let shapes = [
        "other{i}.#",
        "#.other{i}",
        "*.other{i}.#",
        "*.*.#.other{i}.*",
        "#.*.#.*.#.other{i}",
        "news.*.other{i}",
        "news.#.other{i}",
    ];
    let mut subs = Vec::new();
    let mut add_round = |i: usize| {
        for shape in shapes {
            let sub = subscription(i as u64 + 1);
            registry.add(&shape.replace("{i}", &i.to_string()), Arc::clone(&sub));
            subs.push(sub);
        }
    };
    add_round(0);
    let one_round = work(&registry, key);
    for i in 1..10_000 / shapes.len() + 1 {
        add_round(i);
    }
    assert!(subs.len() >= 10_000);
    let crowded = work(&registry, key);
    assert_eq!(matched(&registry, key), [0]);
    // The shapes add a few wildcard-only and shared-prefix nodes (each
    // visited at most once per key word); their number adds nothing.
    assert_eq!(
        crowded,
        one_round,
        "{alone} nodes visited alone, {one_round} among {} patterns, {crowded} among {}",
        shapes.len(),
        subs.len()
    );
    assert!(crowded <= alone + 4 * shapes.len(), "{alone} → {crowded}");
    assert!(work(&registry, "weather.eu") <= 3 * shapes.len());
}

/// A subscription to `routing_key`, as the broker makes one.
fn subscription_to(key: u64, routing_key: &str) -> Arc<Subscription> {
    let mut made = subscription(key);
    if let Some(s) = Arc::get_mut(&mut made) {
        s.source = super::super::subscription::Source::Topic {
            routing_key: routing_key.into(),
        };
    }
    made
}

fn destinations(registry: &TopicRegistry) -> Vec<(String, bool, usize)> {
    let mut seen = Vec::new();
    registry
        .for_each_destination(|d| seen.push((d.routing_key.to_owned(), d.pattern, d.subscribers)));
    seen.sort();
    seen
}

#[test]
fn destinations_are_counted_as_keys_and_patterns_come_and_go() {
    let registry = TopicRegistry::default();
    let subs = [
        subscription_to(1, "a.b"),
        subscription_to(2, "a.b"),
        subscription_to(3, "a.#.#"),
        subscription_to(4, "a.#"),
        subscription_to(5, "*.b"),
    ];
    for s in &subs {
        let Source::Topic { routing_key } = &s.source else {
            unreachable!("made as topic subscriptions")
        };
        registry.add(routing_key, Arc::clone(s));
    }
    // `a.#.#` and `a.#` are one pattern, named as the least spelling.
    assert_eq!(registry.destination_count(), 3);
    assert_eq!(
        destinations(&registry),
        [
            ("*.b".to_owned(), true, 1),
            ("a.#".to_owned(), true, 2),
            ("a.b".to_owned(), false, 2)
        ]
    );
    registry.remove("a.b", &subs[0]);
    registry.remove("a.#.#", &subs[2]);
    assert_eq!(registry.destination_count(), 3);
    registry.remove("a.b", &subs[1]);
    registry.remove("a.#", &subs[3]);
    // Removing what is not there changes nothing.
    registry.remove("a.#", &subs[3]);
    registry.remove("a.b", &subs[1]);
    assert_eq!(registry.destination_count(), 1);
    registry.remove("*.b", &subs[4]);
    assert_eq!(registry.destination_count(), 0);
    assert!(destinations(&registry).is_empty());
}

/// 10,000 subscribers of one topic once cost 50 million copies: each add
/// copied the whole list. It now grows in place unless a publish is walking
/// it, and a walk in progress keeps the list it started with.
#[test]
fn subscribers_of_one_key_are_added_in_place_unless_a_publish_holds_the_list() {
    let registry = TopicRegistry::default();
    for key in 0..3 {
        registry.add("news", subscription(key));
    }
    let list_now = || {
        Arc::clone(
            registry
                .read()
                .exact
                .get("news")
                .expect("the key has subscribers"),
        )
    };
    let before = Arc::as_ptr(&list_now());
    registry.add("news", subscription(3));
    assert_eq!(Arc::as_ptr(&list_now()), before, "the list was copied");
    // A publish holding the list sees it unchanged by later adds/removes.
    let walking = list_now();
    let first = Arc::clone(&walking[0]);
    registry.add("news", subscription(4));
    registry.remove("news", &first);
    assert_eq!(
        walking.iter().map(|s| s.key).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(matched(&registry, "news"), [1, 2, 3, 4]);
    // Removal keeps the order subscribers came in.
    assert_eq!(
        list_now().iter().map(|s| s.key).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
}
