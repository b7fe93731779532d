//! The memory caps hold against frames shaped to cost more than they say:
//! held messages and transaction frames count as they sit in memory, and
//! unacknowledged messages fall under a per-session and a server-wide cap.
//! Each test checks the bound from the server's own accounting, and that a
//! client on another destination keeps receiving everything meanwhile.

use crate::support::*;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

/// One entry of a frame's header list as it sits in memory.
const HEADER_ENTRY: usize = 2 * std::mem::size_of::<bytes::Bytes>();

/// A SEND with `n` empty headers: about 200 bytes on the wire for 62, over
/// 4 KB in memory.
fn many_headers(destination: &str, n: usize) -> Frame {
    let mut frame = Frame::new(Command::Send).header("destination", destination);
    for _ in 0..n {
        frame = frame.header("a", "");
    }
    frame
}

/// A client publishing to a topic another one reads: it must get every
/// message, in order, whatever an attacker does elsewhere.
struct Canary {
    publisher: Client,
    subscriber: Client,
    topic: String,
    sent: usize,
}

impl Canary {
    async fn start(server: &TestServer) -> Canary {
        let topic = unique("/topic/canary-");
        let mut subscriber = server.connect(Via::Tcp).await;
        subscribe(&mut subscriber, "c", &topic, "auto").await;
        Canary {
            publisher: server.connect(Via::Ws).await,
            subscriber,
            topic,
            sent: 0,
        }
    }

    async fn ping(&mut self) {
        let body = format!("canary-{}", self.sent);
        self.sent += 1;
        send_receipted(&mut self.publisher, &self.topic, &body).await;
    }

    async fn check(mut self) {
        for i in 0..self.sent {
            assert_eq!(
                body(&next_message(&mut self.subscriber).await),
                format!("canary-{i}")
            );
        }
    }
}

/// Sends `frame` with a receipt until the server refuses one; returns how
/// many it accepted and the refusal's message.
async fn until_refused(
    client: &mut Client,
    frame: &Frame,
    most: usize,
    canary: &mut Canary,
) -> (usize, String) {
    for accepted in 0..most {
        if accepted % 100 == 0 {
            canary.ping().await;
        }
        client
            .send(&frame.clone().header("receipt", &accepted.to_string()))
            .await
            .expect("send");
        let reply = next(client).await;
        if reply.command == Command::Error {
            let message = reply.headers.get("message").unwrap_or_default().to_owned();
            return (accepted, message);
        }
        assert_eq!(reply.command, Command::Receipt, "{reply:?}");
    }
    panic!("{most} frames accepted, none refused");
}

#[tokio::test]
async fn queued_messages_count_every_header_entry_against_the_server_wide_cap() {
    if embedded_only("max_total_queue_bytes") {
        return;
    }
    let cap = 1024 * 1024;
    let server = spawn_server(|c| {
        c.embedded.max_total_queue_bytes = cap;
        c.embedded.max_queue_messages = 100_000;
    })
    .await;
    let mut canary = Canary::start(&server).await;
    let mut attacker = server.connect(Via::Tcp).await;
    let frame = many_headers(&unique("/queue/headers-"), 62);
    let (accepted, refusal) = until_refused(&mut attacker, &frame, 20_000, &mut canary).await;
    // Counted by wire size, 1 MiB took about 5,000 of these.
    assert!(
        accepted * 62 * HEADER_ENTRY <= cap,
        "{accepted} messages of 62 header entries held under a {cap}-byte cap"
    );
    assert!(accepted > 100, "only {accepted} accepted");
    assert!(
        refusal.contains("max_total_queue_bytes") && refusal.contains(&cap.to_string()),
        "{refusal}"
    );
    let held = server.handle.stats().queue_bytes;
    assert!(
        held <= cap && held >= accepted * 62 * HEADER_ENTRY,
        "{held}"
    );
    canary.check().await;
}

#[tokio::test]
async fn each_refusal_names_the_queue_limit_it_hit_and_its_value() {
    if embedded_only("queue limits") {
        return;
    }
    let server = spawn_server(|c| {
        c.embedded.max_queue_messages = 3;
        c.embedded.max_queue_bytes = 64 * 1024;
    })
    .await;
    let mut canary = Canary::start(&server).await;
    let mut client = server.connect(Via::Tcp).await;
    let by_count = Frame::new(Command::Send).header("destination", &unique("/queue/count-"));
    let (accepted, refusal) = until_refused(&mut client, &by_count, 10, &mut canary).await;
    assert_eq!(accepted, 3);
    assert!(
        refusal.contains("max_queue_messages = 3") && refusal.contains("per-queue"),
        "{refusal}"
    );
    let mut client = server.connect(Via::Tcp).await;
    let by_bytes = Frame::new(Command::Send)
        .header("destination", &unique("/queue/bytes-"))
        .body(vec![b'x'; 30 * 1024]);
    let (accepted, refusal) = until_refused(&mut client, &by_bytes, 10, &mut canary).await;
    assert_eq!(accepted, 2);
    assert!(
        refusal.contains("max_queue_bytes = 65536") && refusal.contains("per-queue"),
        "{refusal}"
    );
    canary.check().await;
}

/// Reads frames until the RECEIPT `id`; returns the MESSAGEs before it.
async fn messages_until_receipt(client: &mut Client, id: &str) -> Vec<Frame> {
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "marker")
                .header("destination", "/topic/marker")
                .header("receipt", id),
        )
        .await
        .expect("send");
    let mut messages = Vec::new();
    loop {
        let frame = next(client).await;
        match frame.command {
            Command::Message => messages.push(frame),
            Command::Receipt if frame.headers.get("receipt-id") == Some(id) => return messages,
            other => panic!("unexpected {other}: {frame:?}"),
        }
    }
}

#[tokio::test]
async fn one_connection_that_never_acks_its_queues_holds_no_more_than_its_session_cap() {
    if embedded_only("max_session_unacked_bytes") {
        return;
    }
    let session_cap = 256 * 1024;
    let server = spawn_server(|c| {
        c.embedded.max_session_unacked_bytes = session_cap;
        c.outbox_bytes = 8 * 1024 * 1024;
        c.backlog_bytes = 64 * 1024 * 1024;
    })
    .await;
    let mut canary = Canary::start(&server).await;
    let queues: Vec<String> = (0..30).map(|_| unique("/queue/hog-")).collect();
    let mut hog = server.connect(Via::Tcp).await;
    for (i, queue) in queues.iter().enumerate() {
        subscribe(&mut hog, &i.to_string(), queue, "client-individual").await;
    }
    let mut publisher = server.connect(Via::Ws).await;
    let body = vec![b'x'; 8 * 1024];
    for round in 0..10 {
        for queue in &queues {
            let frame = Frame::new(Command::Send)
                .header("destination", queue)
                .body(body.clone());
            publisher.send(&frame).await.expect("send");
        }
        send_receipted(&mut publisher, &queues[0], &format!("round-{round}")).await;
        canary.ping().await;
    }
    let received = messages_until_receipt(&mut hog, "after").await;
    let held: usize = received.iter().map(|m| m.body.len()).sum();
    // Without the cap the hog is given all 300 messages (2.4 MB).
    assert!(
        held <= session_cap && received.len() >= 10,
        "{} messages, {held} body bytes held unacknowledged by one session",
        received.len()
    );
    // The rest waits in the queues, under the server-wide cap, and all of
    // it (waiting or unacknowledged) is counted there.
    let stats = server.handle.stats();
    assert!(stats.queue_bytes >= 300 * body.len(), "{stats:?}");
    canary.check().await;
    // Acknowledging frees room: the next message comes.
    let ack = received[0]
        .headers
        .get("ack")
        .expect("ack header")
        .to_owned();
    hog.send(&Frame::new(Command::Ack).header("id", &ack))
        .await
        .expect("ack");
    let more = next_message(&mut hog).await;
    assert_eq!(more.body.len(), body.len());
}

#[tokio::test]
async fn topic_messages_held_unacknowledged_are_capped_per_session_and_server_wide() {
    if embedded_only("max_total_topic_unacked_bytes") {
        return;
    }
    let session_cap = 512 * 1024;
    let server_cap = 1024 * 1024;
    let server = spawn_server(|c| {
        c.embedded.max_session_unacked_bytes = session_cap;
        c.embedded.max_total_topic_unacked_bytes = server_cap;
        c.outbox_bytes = 8 * 1024 * 1024;
        c.backlog_bytes = 64 * 1024 * 1024;
    })
    .await;
    let mut canary = Canary::start(&server).await;
    let topics: Vec<String> = (0..4).map(|_| unique("/topic/hog-")).collect();
    // One hog with 30 subscriptions of the first topic passes its own cap;
    // four with one subscription each, each on its own topic, pass the
    // server's together (each alone stays under its own).
    let mut hogs = Vec::new();
    let mut many = server.connect(Via::Tcp).await;
    for i in 0..30 {
        subscribe(&mut many, &i.to_string(), &topics[0], "client-individual").await;
    }
    hogs.push(many);
    for topic in &topics {
        let mut hog = server.connect(Via::Tcp).await;
        subscribe(&mut hog, "0", topic, "client-individual").await;
        hogs.push(hog);
    }
    let mut publisher = server.connect(Via::Ws).await;
    let body = vec![b'x'; 16 * 1024];
    let mut peak = 0;
    for i in 0..120 {
        let frame = Frame::new(Command::Send)
            .header("destination", &topics[i % 4])
            .body(body.clone());
        publisher.send(&frame).await.expect("send");
        if i % 10 == 9 {
            send_receipted(&mut publisher, &topics[i % 4], &i.to_string()).await;
            canary.ping().await;
            peak = peak.max(server.handle.stats().topic_unacked_bytes);
        }
    }
    // The cap may be passed by what is delivered while the largest holder
    // is being cut off, at most that holder's own share.
    assert!(peak <= server_cap + session_cap, "peak {peak}");
    // 120 × 16 KiB = 1.9 MB. The hog with 30 subscriptions passes its own
    // cap at its second message; the four others together pass the
    // server's (without the caps none is cut: 30 is far below max_unacked).
    // Which of those four go depends on when the first cut-off ones give
    // their memory back, so only "at least one" is certain.
    let mut cut = Vec::new();
    for (i, mut hog) in hogs.into_iter().enumerate() {
        let drained = drain(&mut hog).await;
        if let Some(error) = &drained.error {
            // The ERROR names the cap, not a reading problem.
            let message = error.headers.get("message").unwrap_or_default();
            assert!(
                message.contains("unacknowledged than max_"),
                "hog {i}: {message}"
            );
        }
        if i == 0 {
            assert!(
                !drained.open,
                "the 30-subscription hog still open: {drained:?}"
            );
        }
        cut.push(!drained.open);
    }
    assert!(
        cut[1..].iter().any(|c| *c),
        "no single-subscription hog was cut off at the server-wide cap"
    );
    let cut_count = cut.iter().filter(|c| **c).count() as u64;
    assert!(server.handle.stats().slow_consumers >= cut_count);
    // What they held went with them.
    let mut released = server.handle.stats().topic_unacked_bytes;
    for _ in 0..100 {
        if released == 0 {
            break;
        }
        canary.ping().await;
        released = server.handle.stats().topic_unacked_bytes;
    }
    assert_eq!(released, 0);
    canary.check().await;
}

#[tokio::test]
async fn transactions_count_what_their_frames_occupy_under_a_server_wide_cap() {
    let session_cap = 128 * 1024;
    let server_cap = 320 * 1024;
    let server = spawn_server(|c| {
        c.max_transaction_bytes = session_cap;
        c.max_total_transaction_bytes = server_cap;
        c.max_transaction_frames = 100_000;
    })
    .await;
    let mut canary = Canary::start(&server).await;
    // 64 headers with `transaction` and `receipt`: the most a frame may have.
    let frame = many_headers(&unique("/topic/tx-"), 61).header("transaction", "t");
    let begin = || Frame::new(Command::Begin).header("transaction", "t");
    // One session alone stops at its own cap.
    let mut alone = server.connect(Via::Tcp).await;
    alone.send_with_receipt(begin(), "b").await.expect("BEGIN");
    let (accepted, refusal) = until_refused(&mut alone, &frame, 20_000, &mut canary).await;
    // Counted by wire size, 128 KiB took about 600 of these.
    assert!(
        accepted * 61 * HEADER_ENTRY <= session_cap && accepted > 10,
        "{accepted} frames of 61 header entries held under a {session_cap}-byte cap"
    );
    assert!(
        refusal.contains(&format!("max_transaction_bytes = {session_cap}")),
        "{refusal}"
    );
    // Three sessions filling their transactions in turn reach the server's
    // cap before any reaches its own.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut client = server.connect(Via::Tcp).await;
        client.send_with_receipt(begin(), "b").await.expect("BEGIN");
        sessions.push(client);
    }
    let mut held = [0; 3];
    for round in 0..1_000 {
        for (i, client) in sessions.iter_mut().enumerate() {
            client
                .send(&frame.clone().header("receipt", &round.to_string()))
                .await
                .expect("send");
            let reply = next(client).await;
            if reply.command == Command::Error {
                let refusal = reply.headers.get("message").unwrap_or_default();
                assert!(
                    refusal.contains(&format!("max_total_transaction_bytes = {server_cap}")),
                    "{refusal}"
                );
                // The refused session is closing, and what it held may be
                // released already; the others' frames are still held.
                let others: usize = held.iter().sum::<usize>() - held[i];
                let stats = server.handle.stats();
                assert!(
                    stats.transaction_bytes <= server_cap
                        && stats.transaction_bytes >= others * 61 * HEADER_ENTRY,
                    "{held:?} frames: {stats:?}"
                );
                canary.check().await;
                return;
            }
            assert_eq!(reply.command, Command::Receipt, "{reply:?}");
            held[i] += 1;
            if held.iter().sum::<usize>() % 100 == 0 {
                canary.ping().await;
            }
        }
    }
    panic!("{held:?} frames held in transactions, none refused");
}

/// Room freed in the session's unacknowledged budget by an UNSUBSCRIBE (not
/// an ACK) restarts the session's queues that were waiting for it.
#[tokio::test]
async fn an_unsubscribe_freeing_the_session_budget_restarts_its_queues() {
    if embedded_only("max_session_unacked_bytes") {
        return;
    }
    let server = spawn_server(|c| {
        c.embedded.max_session_unacked_bytes = 64 * 1024;
    })
    .await;
    let topic = unique("/topic/rv-hold");
    let queue = unique("/queue/rv-wait");
    let mut consumer = server.connect(Via::Tcp).await;
    subscribe(&mut consumer, "t", &topic, "client-individual").await;
    subscribe(&mut consumer, "q", &queue, "client-individual").await;
    let mut publisher = server.connect(Via::Tcp).await;
    let big = "x".repeat(20 * 1024);
    for i in 0..3 {
        let f = Frame::new(Command::Send)
            .header("destination", &topic)
            .body(format!("{i}{big}"));
        publisher
            .send_with_receipt(f, &format!("t{i}"))
            .await
            .expect("SEND");
        let m = next_message(&mut consumer).await;
        assert_eq!(m.command, stompbox::codec::Command::Message);
    }
    // The session holds ~62 KiB unacknowledged: the queue message waits.
    let f = Frame::new(Command::Send)
        .header("destination", &queue)
        .body(format!("q{big}"));
    publisher.send_with_receipt(f, "q").await.expect("SEND");
    let early = consumer
        .next_frame_within(std::time::Duration::from_millis(500))
        .await;
    assert!(
        matches!(early, Err(_) | Ok(None)),
        "queue message came early: {early:?}"
    );
    // Dropping the topic subscription frees the budget: the queue message
    // comes (before or after the UNSUBSCRIBE's RECEIPT).
    let unsub = Frame::new(Command::Unsubscribe)
        .header("id", "t")
        .header("receipt", "unsub-t");
    consumer.send(&unsub).await.expect("UNSUBSCRIBE");
    let (mut queued, mut receipt) = (false, false);
    while !(queued && receipt) {
        match consumer.next_frame_within(WAIT).await {
            Ok(Some(f)) if f.command == Command::Receipt => receipt = true,
            Ok(Some(f)) if f.command == Command::Message => {
                assert!(f.body.starts_with(b"q"), "{f:?}");
                queued = true;
            }
            other => panic!("the queue message never came after the budget was freed: {other:?}"),
        }
    }
}

/// Once sessions that never acknowledge fill the server-wide topic budget, a
/// subscriber holding nothing still gets its message: the largest holder is
/// cut off to make room.
#[tokio::test]
async fn at_the_server_topic_cap_the_largest_holder_is_cut_off_not_a_subscriber_that_acks() {
    if embedded_only("max_total_topic_unacked_bytes") {
        return;
    }
    let server = spawn_server(|c| {
        c.embedded.max_session_unacked_bytes = 512 * 1024;
        c.embedded.max_total_topic_unacked_bytes = 1024 * 1024;
    })
    .await;
    let mut hogs = Vec::new();
    let mut publisher = server.connect(Via::Tcp).await;
    let body = vec![b'x'; 16 * 1024];
    for h in 0..3 {
        let topic = unique("/topic/rv-hog");
        let mut hog = server.connect(Via::Tcp).await;
        subscribe(&mut hog, "0", &topic, "client-individual").await;
        for i in 0..(if h == 2 { 11 } else { 25 }) {
            let f = Frame::new(Command::Send)
                .header("destination", &topic)
                .body(body.clone());
            publisher
                .send_with_receipt(f, &format!("h{h}-{i}"))
                .await
                .expect("SEND");
        }
        hogs.push(hog);
    }
    let topic = unique("/topic/rv-good");
    let mut good = server.connect(Via::Tcp).await;
    subscribe(&mut good, "g", &topic, "client-individual").await;
    let f = Frame::new(Command::Send)
        .header("destination", &topic)
        .body(body.clone());
    publisher.send_with_receipt(f, "g").await.expect("SEND");
    let got = good.next_frame_within(WAIT).await;
    assert!(
        matches!(&got, Ok(Some(f)) if f.command == Command::Message),
        "a subscriber holding nothing unacknowledged got {got:?}"
    );
    // One of the two largest holders (400 KiB each) made room.
    assert_eq!(server.handle.stats().slow_consumers, 1);
    drop(hogs);
}
