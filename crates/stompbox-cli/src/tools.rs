//! `stompbox send` and `stompbox subscribe`: small clients for trying a
//! server out and for scripts.
//!
//! Both always ask for RECEIPTs, so success means the server accepted the
//! frame rather than merely that the bytes left this machine. Diagnostics go
//! to stderr; stdout carries only what a script would want to capture.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;
use stompbox::client::{Client, ClientError};
use stompbox::codec::{Command, Frame, header};

/// How long to wait for the goodbye RECEIPT after DISCONNECT: the work is
/// done by then, so a slow or gone server must not hold the tool up.
const DISCONNECT_WAIT: Duration = Duration::from_secs(2);

/// Where a stompbox server sends the errors of application handlers
/// (`Err` from a handler of an `/app/…` destination): to the sending
/// session's subscription of this destination, not as an ERROR frame.
const ERRORS_DESTINATION: &str = "/user/queue/errors";
/// The subscription id `send` watches that destination with.
const ERRORS_SUBSCRIPTION: &str = "stompbox-send-errors";
/// After the RECEIPT of a SEND to an application destination, how long an
/// error may still be on its way: with the embedded broker it arrives
/// before the RECEIPT, but through a relay it takes the broker's path.
const HANDLER_ERROR_GRACE: Duration = Duration::from_millis(250);
/// Destinations that reach the broker directly, never a handler: no
/// handler error can follow a SEND to them, so no grace is waited.
const BROKER_PREFIXES: [&str; 5] = ["/topic/", "/queue/", "/exchange/", "/amq/", "/temp-queue/"];

/// Flags both tools share.
#[derive(Debug, clap::Args)]
struct Connection {
    /// Server URL: ws://host:port/path, wss://host:port/path (TLS),
    /// tcp://host:port or tls://host:port (STOMP over TLS).
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Login sent with CONNECT.
    #[arg(long)]
    login: Option<String>,
    /// Passcode (or token) sent with CONNECT; prefer the environment
    /// variable, which other users of the machine cannot read from the
    /// process list.
    #[arg(long, env = "STOMP_PASSCODE", hide_env_values = true)]
    passcode: Option<String>,
    /// PEM file of CA certificates to trust for wss:// and tls:// (default:
    /// the Mozilla root store).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// The CONNECT `host` header (RabbitMQ's virtual host, e.g. "/").
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Seconds to wait for the connection and for each RECEIPT.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = parse_seconds)]
    timeout: f64,
}

/// Flags of `stompbox send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    connection: Connection,
    /// Destination, e.g. /topic/news or /queue/jobs.
    #[arg(long, short = 'd')]
    destination: String,
    /// Extra header, NAME:VALUE; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Content type of the body, e.g. text/plain or application/json.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// Print the server's receipt id on stdout once the message is accepted
    /// (a receipt is always requested; this only shows it).
    #[arg(long)]
    receipt: bool,
    /// Do not subscribe to /user/queue/errors, where a stompbox server
    /// reports a handler's refusal (for servers whose access rules do not
    /// allow that subscription). By default `send` watches it when the
    /// server is stompbox and exits non-zero with the handler's error.
    #[arg(long)]
    no_handler_errors: bool,
    /// The message body; read from stdin when absent.
    body: Option<String>,
}

/// Acknowledgement mode of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AckArg {
    /// The server considers a message delivered once sent.
    Auto,
    /// Cumulative ACKs; this tool ACKs each message after printing it.
    Client,
    /// One ACK per message, sent after printing it.
    ClientIndividual,
}

impl AckArg {
    fn header_value(self) -> &'static str {
        match self {
            AckArg::Auto => "auto",
            AckArg::Client => "client",
            AckArg::ClientIndividual => "client-individual",
        }
    }
}

/// Flags of `stompbox subscribe`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    connection: Connection,
    /// Destination, e.g. /topic/news, /topic/news.# or /queue/jobs.
    #[arg(long, short = 'd')]
    destination: String,
    /// Acknowledgement mode; in client modes each message is ACKed after it
    /// is printed.
    #[arg(long, value_enum, default_value = "auto")]
    ack: AckArg,
    /// Exit after this many messages.
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Extra SUBSCRIBE header, NAME:VALUE; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Print only each message's body, one per line.
    #[arg(long)]
    body_only: bool,
    /// Subscription id.
    #[arg(long, default_value = "sub-0")]
    id: String,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected NAME:VALUE, e.g. priority:9 (got '{text}')"
        )),
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "expected seconds between 0 and 86400, e.g. 2.5 (got '{text}')"
        )),
    }
}

/// Headers the tools set themselves; a user copy would be ignored by the
/// server (the first occurrence wins) or break the receipt bookkeeping.
fn check_headers(headers: &[(String, String)], reserved: &[(&str, &str)]) -> Result<(), String> {
    for (name, _) in headers {
        if let Some((_, instead)) = reserved.iter().find(|(r, _)| name.eq_ignore_ascii_case(r)) {
            return Err(format!("header '{name}' is set by the tool; {instead}"));
        }
    }
    Ok(())
}

/// Turns an ERROR frame into the message the user sees: the server's
/// `message` header and, when present, the body with the details.
fn server_error(frame: &Frame) -> String {
    let message = frame.headers.get(header::MESSAGE).unwrap_or("(no message)");
    let body = String::from_utf8_lossy(&frame.body);
    let body = body.trim_end_matches(['\n', '\0']);
    // Servers often repeat the message as the body; once is enough.
    if body.is_empty() || body == message {
        format!("server error: {message}")
    } else {
        format!("server error: {message}\n{body}")
    }
}

fn client_error(url: &str, e: ClientError) -> String {
    match e {
        ClientError::Closed => format!("{url}: connection closed by server"),
        e => format!("{url}: {e}"),
    }
}

impl Connection {
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }

    async fn connect(&self) -> Result<Client, String> {
        self.connect_with_reply().await.map(|(client, _)| client)
    }

    /// Connects and returns the CONNECTED frame too (its `server` header).
    async fn connect_with_reply(&self) -> Result<(Client, Frame), String> {
        let mut extra = vec![(header::HOST, self.host.as_str())];
        if let Some(login) = &self.login {
            extra.push((header::LOGIN, login.as_str()));
        }
        if let Some(passcode) = &self.passcode {
            extra.push((header::PASSCODE, passcode.as_str()));
        }
        let mut options = stompbox::client::ClientOptions::stomp();
        if let Some(ca_file) = &self.ca_file {
            options = options.ca_file(ca_file);
        }
        match tokio::time::timeout(
            self.wait(),
            Client::connect_with(&self.url, &options, &extra),
        )
        .await
        {
            Ok(Ok((client, connected))) => Ok((client, connected)),
            Ok(Err(e)) => Err(client_error(&self.url, e)),
            Err(_) => Err(format!(
                "{}: no CONNECTED within {} s",
                self.url, self.timeout
            )),
        }
    }
}

/// Sends `frame` with a receipt request and waits for that RECEIPT, handing
/// any MESSAGE that arrives first to `on_message` (a queue may deliver its
/// backlog before the RECEIPT for the SUBSCRIBE).
async fn send_and_confirm(
    client: &mut Client,
    connection: &Connection,
    frame: Frame,
    receipt: &str,
    mut on_message: impl FnMut(Frame) -> Result<(), String>,
) -> Result<Frame, String> {
    client
        .send(&frame.header(header::RECEIPT, receipt))
        .await
        .map_err(|e| client_error(&connection.url, e))?;
    let deadline = tokio::time::Instant::now() + connection.wait();
    loop {
        let next = tokio::time::timeout_at(deadline, client.next_frame())
            .await
            .map_err(|_| format!("no RECEIPT from the server within {} s", connection.timeout))?
            .map_err(|e| client_error(&connection.url, e))?;
        let Some(reply) = next else {
            return Err(client_error(&connection.url, ClientError::Closed));
        };
        match reply.command {
            Command::Receipt if reply.headers.get(header::RECEIPT_ID) == Some(receipt) => {
                return Ok(reply);
            }
            Command::Error => return Err(server_error(&reply)),
            Command::Message => on_message(reply)?,
            // Anything else (a stray RECEIPT) does not concern this request.
            _ => {}
        }
    }
}

/// Ends the session politely; failures are only worth a debug line since
/// the tool's own work is already done.
async fn disconnect(client: &mut Client) {
    let frame = Frame::new(Command::Disconnect).header(header::RECEIPT, "bye");
    if client.send(&frame).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(DISCONNECT_WAIT, async {
        while let Ok(Some(frame)) = client.next_frame().await {
            if frame.command == Command::Receipt || frame.command == Command::Error {
                break;
            }
        }
    })
    .await;
}

pub(crate) async fn send(args: SendArgs) -> Result<(), String> {
    check_headers(
        &args.headers,
        &[
            (header::DESTINATION, "use --destination"),
            (
                header::RECEIPT,
                "a receipt is always requested; use --receipt to print it",
            ),
            (header::CONTENT_LENGTH, "it is computed from the body"),
        ],
    )?;
    if args.content_type.is_some()
        && args
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(header::CONTENT_TYPE))
    {
        return Err("give the content type once: --content-type or --header content-type:…".into());
    }
    let body = match args.body {
        Some(body) => body.into_bytes(),
        None => read_stdin().await?,
    };

    let (mut client, connected) = args.connection.connect_with_reply().await?;
    // Only stompbox has the errors destination; another broker could
    // refuse the SUBSCRIBE and end the session.
    let watch_errors = !args.no_handler_errors
        && connected
            .headers
            .get(header::SERVER)
            .is_some_and(|s| s.starts_with("stompbox/"));
    if watch_errors {
        // No receipt needed: the server handles a session's frames in
        // order, so the subscription exists before the SEND is handled.
        let subscribe = Frame::new(Command::Subscribe)
            .header(header::ID, ERRORS_SUBSCRIPTION)
            .header(header::DESTINATION, ERRORS_DESTINATION)
            .header(header::ACK, "auto");
        client
            .send(&subscribe)
            .await
            .map_err(|e| client_error(&args.connection.url, e))?;
    }
    let mut frame = Frame::new(Command::Send).header(header::DESTINATION, &args.destination);
    if let Some(content_type) = &args.content_type {
        frame = frame.header(header::CONTENT_TYPE, content_type);
    }
    for (name, value) in &args.headers {
        frame = frame.header(name, value);
    }
    // Always framed by length: the body may hold NUL bytes, which would
    // otherwise end the frame early.
    let frame = frame
        .header(header::CONTENT_LENGTH, &body.len().to_string())
        .body(body);
    let receipt = send_and_confirm(
        &mut client,
        &args.connection,
        frame,
        "send-1",
        handler_error,
    )
    .await
    .map_err(|e| with_errors_hint(e, watch_errors))?;
    let to_broker = BROKER_PREFIXES
        .iter()
        .any(|p| args.destination.starts_with(p));
    if watch_errors && !to_broker {
        let late = tokio::time::timeout(HANDLER_ERROR_GRACE, async {
            loop {
                match client.next_frame().await {
                    Ok(Some(frame)) if frame.command == Command::Message => {
                        handler_error(frame)?;
                    }
                    Ok(Some(frame)) if frame.command == Command::Error => {
                        return Err(server_error(&frame));
                    }
                    Ok(Some(_)) => {}
                    // The session's end is not this message's failure: its
                    // RECEIPT came.
                    Ok(None) | Err(_) => return Ok(()),
                }
            }
        })
        .await;
        if let Ok(Err(e)) = late {
            return Err(e);
        }
    }
    if args.receipt {
        let id = receipt.headers.get(header::RECEIPT_ID).unwrap_or_default();
        let mut out = std::io::stdout().lock();
        writeln!(out, "receipt-id:{id}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    disconnect(&mut client).await;
    Ok(())
}

/// A MESSAGE on the errors subscription is a handler's refusal of the
/// SEND (the only frame this session sent there); its body is
/// `{"error": …, "destination": …}`.
fn handler_error(message: Frame) -> Result<(), String> {
    if message.headers.get(header::SUBSCRIPTION) != Some(ERRORS_SUBSCRIPTION) {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&message.body);
    let error = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim_end_matches(['\n', '\0']).to_owned());
    Err(format!("the server's handler refused the message: {error}"))
}

/// A server whose access rules do not allow subscribing to the errors
/// destination ends the session; say how to send without it.
fn with_errors_hint(error: String, watched: bool) -> String {
    if watched && error.contains(ERRORS_DESTINATION) {
        format!(
            "{error}\n(send subscribes to {ERRORS_DESTINATION} to report handler errors; --no-handler-errors turns that off)"
        )
    } else {
        error
    }
}

async fn read_stdin() -> Result<Vec<u8>, String> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading the message body from stdin; end it with Ctrl-D");
    }
    // std's stdin on a blocking thread: tokio's would need another feature
    // for a one-shot read.
    tokio::task::spawn_blocking(|| {
        let mut body = Vec::new();
        std::io::stdin().lock().read_to_end(&mut body).map(|_| body)
    })
    .await
    .map_err(|e| format!("cannot read stdin: {e}"))?
    .map_err(|e| format!("cannot read stdin: {e}"))
}

/// What printing a message led to.
enum Printed {
    Ok,
    /// The reader of stdout went away (`… | head -1`): stop quietly.
    ReaderGone,
}

fn print_message(frame: &Frame, body_only: bool) -> Result<Printed, String> {
    let mut out = std::io::stdout().lock();
    let result = (|| {
        if !body_only {
            writeln!(out, "{}", frame.command)?;
            for (name, value) in frame.headers.iter() {
                writeln!(out, "{name}:{value}")?;
            }
            writeln!(out)?;
        }
        out.write_all(&frame.body)?;
        if !frame.body.ends_with(b"\n") {
            writeln!(out)?;
        }
        if !body_only {
            // A blank line between messages, so headers of the next one are
            // not read as part of this body.
            writeln!(out)?;
        }
        out.flush()
    })();
    match result {
        Ok(()) => Ok(Printed::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Printed::ReaderGone),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

/// The ACK for `message`: by `ack` id on STOMP 1.2, else by message id and
/// subscription (1.1; 1.0 servers ignore the extra header).
fn ack_for(message: &Frame) -> Result<Frame, String> {
    if let Some(id) = message.headers.get(header::ACK) {
        return Ok(Frame::new(Command::Ack).header(header::ID, id));
    }
    let id = message
        .headers
        .get(header::MESSAGE_ID)
        .ok_or("cannot ACK: the MESSAGE has neither an ack nor a message-id header")?;
    let mut ack = Frame::new(Command::Ack).header(header::MESSAGE_ID, id);
    if let Some(subscription) = message.headers.get(header::SUBSCRIPTION) {
        ack = ack.header(header::SUBSCRIPTION, subscription);
    }
    Ok(ack)
}

struct Receiver {
    ack: AckArg,
    body_only: bool,
    count: Option<u64>,
    received: u64,
    /// ACKs owed for messages printed while waiting for the SUBSCRIBE's
    /// RECEIPT, when the client could not be borrowed to send them.
    pending_acks: Vec<Frame>,
}

impl Receiver {
    /// Prints one message and queues its ACK; true when the subscriber
    /// should stop (--count reached, or nobody reads stdout any more).
    fn take(&mut self, frame: &Frame) -> Result<bool, String> {
        if let Printed::ReaderGone = print_message(frame, self.body_only)? {
            // Not ACKed: a queue redelivers it to someone who can use it.
            return Ok(true);
        }
        self.received += 1;
        if self.ack != AckArg::Auto {
            self.pending_acks.push(ack_for(frame)?);
        }
        Ok(self.count.is_some_and(|c| self.received >= c))
    }

    async fn flush_acks(&mut self, client: &mut Client, url: &str) -> Result<(), String> {
        for ack in self.pending_acks.drain(..) {
            client.send(&ack).await.map_err(|e| client_error(url, e))?;
        }
        Ok(())
    }
}

pub(crate) async fn subscribe(args: SubscribeArgs) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    check_headers(
        &args.headers,
        &[
            (header::DESTINATION, "use --destination"),
            (header::ID, "use --id"),
            (header::ACK, "use --ack"),
            (
                header::RECEIPT,
                "the subscription is always confirmed by a receipt",
            ),
        ],
    )?;
    // Installed first so that Ctrl-C at any point ends the session politely.
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    let url = args.connection.url.clone();
    let mut client = tokio::select! {
        client = args.connection.connect() => client?,
        _ = int.recv() => return Ok(()),
        _ = term.recv() => return Ok(()),
    };

    let mut frame = Frame::new(Command::Subscribe)
        .header(header::ID, &args.id)
        .header(header::DESTINATION, &args.destination)
        .header(header::ACK, args.ack.header_value());
    for (name, value) in &args.headers {
        frame = frame.header(name, value);
    }
    let mut receiver = Receiver {
        ack: args.ack,
        body_only: args.body_only,
        count: args.count,
        received: 0,
        pending_acks: Vec::new(),
    };
    // Past --count (a queue's backlog can exceed it) messages are left
    // unprinted and unacknowledged, so a queue redelivers them elsewhere.
    let mut done = false;
    let confirmed = send_and_confirm(
        &mut client,
        &args.connection,
        frame,
        "subscribe-1",
        |message| {
            if !done {
                done = receiver.take(&message)?;
            }
            Ok(())
        },
    );
    tokio::select! {
        confirmed = confirmed => { confirmed?; }
        _ = int.recv() => { disconnect(&mut client).await; return Ok(()); }
        _ = term.recv() => { disconnect(&mut client).await; return Ok(()); }
    }
    receiver.flush_acks(&mut client, &url).await?;
    // Scripts and tests wait for this line before publishing, instead of
    // guessing how long subscribing takes.
    eprintln!("subscribed to {}", args.destination);

    while !done {
        let next = tokio::select! {
            next = client.next_frame() => next,
            _ = int.recv() => break,
            _ = term.recv() => break,
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let reason = client
                    .close_reason()
                    .filter(|(_, reason)| !reason.is_empty())
                    .map(|(code, reason)| format!(" (close code {code}: {reason})"))
                    .unwrap_or_default();
                return Err(format!("{url}: connection closed by server{reason}"));
            }
            Err(e) => return Err(client_error(&url, e)),
        };
        match frame.command {
            Command::Message => {
                done = receiver.take(&frame)?;
                receiver.flush_acks(&mut client, &url).await?;
            }
            Command::Error => return Err(server_error(&frame)),
            _ => {}
        }
    }
    // DISCONNECT with a receipt also makes sure the last ACK was processed,
    // so a queue does not redeliver a message this tool already printed.
    disconnect(&mut client).await;
    Ok(())
}
