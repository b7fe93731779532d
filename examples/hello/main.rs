//! A minimal stompbox server with one application handler. Run it with
//! `cargo run --example hello` (or `… -- 127.0.0.1:9000` for another
//! address); Ctrl-C stops it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use stompbox::app::{App, Json, Path, SessionId, State, User};
use stompbox::{Server, ServerConfig};

#[derive(serde::Deserialize, serde::Serialize)]
struct Chat {
    text: String,
}

/// Display names by session: the CONNECT `login` of each anonymous session.
/// Without an authenticator a login proves nothing, so it is only shown,
/// never used as the user; entries end with their session.
#[derive(Clone, Default)]
struct Names(Arc<Mutex<HashMap<Arc<str>, String>>>);

impl Names {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn of(&self, session: &str, user: &User) -> String {
        if user.is_authenticated() {
            return user.name().to_owned();
        }
        let login = self.map().get(session).cloned();
        login.unwrap_or_else(|| "anonymous".to_owned())
    }
}

// SEND /app/chat/{room} with {"text": "…"}: the reply goes to every
// subscriber of /topic/chat/{room}.
async fn chat(
    Path(room): Path<String>,
    user: User,
    SessionId(session): SessionId,
    State(names): State<Names>,
    Json(m): Json<Chat>,
) -> Json<Chat> {
    let user = names.of(&session, &user);
    Json(Chat {
        text: format!("[{room}] {user}: {}", m.text),
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let names = Names::default();
    let (connected, disconnected) = (names.clone(), names.clone());
    let app = App::with_state(names)
        .message("/chat/{room}", chat)
        .on_connect(move |info| {
            let names = connected.clone();
            async move {
                if let Some(login) = info.login.filter(|l| !l.is_empty()) {
                    names.map().insert(info.session_id, login);
                }
                Ok(())
            }
        })
        .on_disconnect(move |info| {
            let names = disconnected.clone();
            async move {
                names.map().remove(&info.session_id);
            }
        });

    let mut config = ServerConfig::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.http_addr = addr.parse().map_err(std::io::Error::other)?;
    }
    let server = Server::builder(config).app(app).bind().await?;
    println!("STOMP over WebSocket at ws://{}/ws", server.http_addr()?);
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
