use crate::support::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_stops_accepting() {
    let server = default_server().await;
    let mut ws = server.connect(Via::Ws).await;
    let mut tcp = server.connect(Via::Tcp).await;
    let topic = unique("/topic/bye");
    subscribe(&mut ws, "s", &topic, "auto").await;
    let ws_url = server.ws.clone();
    let tcp_url = server.tcp.clone();
    let started = Instant::now();
    server.handle.shutdown().await.expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(matches!(
        ws.next_frame_within(WAIT).await,
        Ok(None) | Err(_)
    ));
    assert_eq!(ws.close_reason().map(|(code, _)| code), Some(1001));
    assert!(matches!(
        tcp.next_frame_within(WAIT).await,
        Ok(None) | Err(_)
    ));
    assert!(stompbox::client::Client::open(&ws_url, &[]).await.is_err());
    assert!(
        stompbox::client::Client::connect(&tcp_url, &[])
            .await
            .is_err()
    );
}
