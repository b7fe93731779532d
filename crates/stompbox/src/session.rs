//! One client's STOMP session: what each frame means, in which state, and
//! what the client is told. The connection driver feeds it decoded frames and
//! writes whatever it queues to the outbox.

use crate::broker::{
    AckMode, AckTarget, Broker, BrokerError, BrokerSession, Publish, SessionContext,
    SubscribeRequest,
};
use crate::config::ServerConfig;
use crate::outbox::{OutFrame, Outbox};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Frame, Version, encode_frame, header};

/// The `server` header of CONNECTED.
pub const SERVER_NAME: &str = concat!("stompbox/", env!("CARGO_PKG_VERSION"));

/// A protocol error: the client is sent an ERROR frame with this message,
/// then disconnected.
#[derive(Debug, Clone)]
pub(crate) struct StompError {
    pub(crate) message: String,
    pub(crate) receipt_id: Option<Bytes>,
    pub(crate) version_header: Option<String>,
}

impl StompError {
    pub(crate) fn new(message: impl Into<String>) -> StompError {
        StompError {
            message: message.into(),
            receipt_id: None,
            version_header: None,
        }
    }

    /// The ERROR frame, encoded for the connection's version.
    pub(crate) fn to_frame(&self, version: Version) -> OutFrame {
        let mut frame = Frame::new(Command::Error).header(header::MESSAGE, &self.message);
        if let Some(receipt) = &self.receipt_id {
            frame.headers.push(
                Bytes::from_static(header::RECEIPT_ID.as_bytes()),
                receipt.clone(),
            );
        }
        if let Some(versions) = &self.version_header {
            frame.headers.push_str(header::VERSION, versions);
        }
        let body = format!("{}\n", self.message);
        frame.headers.push_str(header::CONTENT_TYPE, "text/plain");
        frame
            .headers
            .push_str(header::CONTENT_LENGTH, &body.len().to_string());
        frame.body = Bytes::from(body);
        encode(&frame, version)
    }
}

impl From<BrokerError> for StompError {
    fn from(e: BrokerError) -> StompError {
        StompError::new(e.to_string())
    }
}

fn encode(frame: &Frame, version: Version) -> OutFrame {
    let mut out = BytesMut::new();
    encode_frame(frame, version, &mut out);
    OutFrame::new(out.freeze())
}

/// A RECEIPT frame (no header of it needs escaping but the id).
pub(crate) fn receipt_frame(receipt_id: &[u8]) -> OutFrame {
    let mut frame = Frame::new(Command::Receipt);
    frame.headers.push(
        Bytes::from_static(header::RECEIPT_ID.as_bytes()),
        Bytes::copy_from_slice(receipt_id),
    );
    encode(&frame, Version::V1_2)
}

/// What the driver should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The session ended normally (DISCONNECT): flush and close.
    Close,
}

/// Heart-beat intervals agreed at CONNECT; `None` means off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) send_every: Option<Duration>,
    pub(crate) expect_every: Option<Duration>,
}

struct Connected {
    version: Version,
    broker: Box<dyn BrokerSession>,
    subscriptions: HashSet<Bytes>,
    transactions: HashMap<Bytes, Vec<Frame>>,
}

/// The session state machine.
pub(crate) struct Session {
    config: Arc<ServerConfig>,
    broker: Arc<dyn Broker>,
    outbox: Arc<Outbox>,
    session_id: Arc<str>,
    pinned_version: Option<Version>,
    connected: Option<Connected>,
    heartbeat: Heartbeat,
}

fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, StompError> {
    frame.headers.get(name).ok_or_else(|| {
        StompError::new(format!(
            "{} frame is missing the required '{name}' header",
            frame.command
        ))
    })
}

fn required_bytes(frame: &Frame, name: &str) -> Result<Bytes, StompError> {
    frame.headers.get_bytes(name).cloned().ok_or_else(|| {
        StompError::new(format!(
            "{} frame is missing the required '{name}' header",
            frame.command
        ))
    })
}

/// Parses `heart-beat: cx,cy` into milliseconds.
fn parse_heartbeat(value: &str) -> Option<(u64, u64)> {
    let (cx, cy) = value.split_once(',')?;
    Some((cx.trim().parse().ok()?, cy.trim().parse().ok()?))
}

fn negotiate(ours: Duration, theirs_ms: u64) -> Option<Duration> {
    if ours.is_zero() || theirs_ms == 0 {
        None
    } else {
        Some(ours.max(Duration::from_millis(theirs_ms)))
    }
}

impl Session {
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        broker: Arc<dyn Broker>,
        outbox: Arc<Outbox>,
        session_id: Arc<str>,
        pinned_version: Option<Version>,
    ) -> Session {
        Session {
            config,
            broker,
            outbox,
            session_id,
            pinned_version,
            connected: None,
            heartbeat: Heartbeat::default(),
        }
    }

    /// The version frames are encoded in; before CONNECT, the pinned one or 1.2.
    pub(crate) fn version(&self) -> Version {
        self.connected
            .as_ref()
            .map(|c| c.version)
            .or(self.pinned_version)
            .unwrap_or(Version::V1_2)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.is_some()
    }

    pub(crate) fn heartbeat(&self) -> Heartbeat {
        self.heartbeat
    }

    fn push(&self, frame: OutFrame) {
        // A failed push means the connection is already closing (slow
        // consumer or shutdown); the driver notices through the outbox.
        let _ = self.outbox.push(frame);
    }

    /// Handles one frame. An `Err` is to be sent as ERROR, then the
    /// connection closed.
    pub(crate) async fn handle(&mut self, frame: Frame) -> Result<Flow, StompError> {
        let receipt = frame.headers.get_bytes(header::RECEIPT).cloned();
        let result = self.dispatch(frame).await;
        result.map_err(|mut e| {
            e.receipt_id = receipt;
            e
        })
    }

    async fn dispatch(&mut self, frame: Frame) -> Result<Flow, StompError> {
        match frame.command {
            Command::Connect | Command::Stomp => self.connect(frame).await,
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(StompError::new(format!(
                    "{} is a server frame; a client cannot send it",
                    frame.command
                )))
            }
            command => {
                let Some(connected) = self.connected.as_mut() else {
                    return Err(StompError::new(format!(
                        "the first frame must be CONNECT or STOMP, not {command}"
                    )));
                };
                let receipt = frame.headers.get_bytes(header::RECEIPT).cloned();
                let flow = connected.handle(frame, &self.config, &*self.broker)?;
                if flow == Flow::Close {
                    // Unsubscribe everything first, so the RECEIPT means the
                    // session's unacknowledged messages are back in their queues.
                    drop(self.connected.take());
                    if let Some(id) = receipt {
                        self.push(receipt_frame(&id));
                    }
                    return Ok(Flow::Close);
                }
                if let (Some(id), Some(connected)) = (receipt, self.connected.as_mut()) {
                    connected.broker.receipt(id);
                }
                Ok(flow)
            }
        }
    }

    async fn connect(&mut self, frame: Frame) -> Result<Flow, StompError> {
        if self.connected.is_some() {
            return Err(StompError::new(
                "already connected: CONNECT may only be sent once per connection",
            ));
        }
        let accepted: Vec<Version> = match frame.headers.get(header::ACCEPT_VERSION) {
            None => vec![Version::V1_0],
            Some(list) => list.split(',').filter_map(Version::parse).collect(),
        };
        let version = match self.pinned_version {
            Some(pinned) if accepted.contains(&pinned) => pinned,
            Some(pinned) => {
                return Err(StompError {
                    message: format!(
                        "the WebSocket subprotocol chose STOMP {pinned}, which the CONNECT frame's accept-version does not include"
                    ),
                    receipt_id: None,
                    version_header: Some(pinned.to_string()),
                });
            }
            None => accepted.iter().copied().max().ok_or_else(|| StompError {
                message: "no supported STOMP version in accept-version (supported: 1.0,1.1,1.2)"
                    .into(),
                receipt_id: None,
                version_header: Some("1.0,1.1,1.2".into()),
            })?,
        };
        let (client_send, client_want) = match frame.headers.get(header::HEART_BEAT) {
            None => (0, 0),
            Some(_) if version == Version::V1_0 => (0, 0),
            Some(value) => parse_heartbeat(value).ok_or_else(|| {
                StompError::new(format!(
                    "invalid heart-beat header '{value}': expected two integers such as 10000,10000"
                ))
            })?,
        };
        self.heartbeat = Heartbeat {
            send_every: negotiate(self.config.heartbeat_send, client_want),
            expect_every: negotiate(self.config.heartbeat_receive, client_send),
        };
        let context = SessionContext {
            session_id: Arc::clone(&self.session_id),
            version,
            outbox: Arc::clone(&self.outbox),
            login: frame.headers.get(header::LOGIN).map(str::to_owned),
            passcode: frame.headers.get(header::PASSCODE).map(str::to_owned),
            host: frame.headers.get(header::HOST).map(str::to_owned),
        };
        let broker = self.broker.open_session(context).await?;
        self.connected = Some(Connected {
            version,
            broker,
            subscriptions: HashSet::new(),
            transactions: HashMap::new(),
        });
        let heart_beat = format!(
            "{},{}",
            self.config.heartbeat_send.as_millis(),
            self.config.heartbeat_receive.as_millis()
        );
        let connected = Frame::new(Command::Connected)
            .header(header::VERSION, version.as_str())
            .header(header::SERVER, SERVER_NAME)
            .header(header::SESSION, &self.session_id)
            .header(header::HEART_BEAT, &heart_beat);
        self.push(encode(&connected, version));
        Ok(Flow::Continue)
    }
}

impl Connected {
    fn handle(
        &mut self,
        frame: Frame,
        config: &ServerConfig,
        broker: &dyn Broker,
    ) -> Result<Flow, StompError> {
        match frame.command {
            Command::Subscribe => self.subscribe(frame, config, broker),
            Command::Unsubscribe => {
                let id = match (self.version, frame.headers.get_bytes(header::ID)) {
                    (_, Some(id)) => id.clone(),
                    // STOMP 1.0 may unsubscribe by destination.
                    (Version::V1_0, None) => required_bytes(&frame, header::DESTINATION)?,
                    _ => required_bytes(&frame, header::ID)?,
                };
                if !self.subscriptions.remove(&id) {
                    return Err(StompError::new(format!(
                        "no subscription with id '{}'",
                        String::from_utf8_lossy(&id)
                    )));
                }
                self.broker.unsubscribe(&id)?;
                Ok(Flow::Continue)
            }
            Command::Send | Command::Ack | Command::Nack => {
                if frame.command == Command::Nack && self.version == Version::V1_0 {
                    return Err(StompError::new("NACK does not exist in STOMP 1.0"));
                }
                if frame.command == Command::Send {
                    let destination = required(&frame, header::DESTINATION)?;
                    if !broker.handles(destination) {
                        return Err(unknown_destination(destination, config));
                    }
                }
                // Validate now so that a bad frame is refused when sent,
                // not at COMMIT.
                if frame.command != Command::Send {
                    ack_target(&frame, self.version)?;
                }
                match frame.headers.get_bytes(header::TRANSACTION).cloned() {
                    Some(tx) => {
                        let buffered = self
                            .transactions
                            .get_mut(&tx)
                            .ok_or_else(|| unknown_transaction(&tx))?;
                        if buffered.len() >= config.max_transaction_frames {
                            return Err(StompError::new(format!(
                                "transaction '{}' holds too many frames (limit {})",
                                String::from_utf8_lossy(&tx),
                                config.max_transaction_frames
                            )));
                        }
                        buffered.push(frame);
                    }
                    None => self.apply(frame)?,
                }
                Ok(Flow::Continue)
            }
            Command::Begin => {
                let tx = required_bytes(&frame, header::TRANSACTION)?;
                if self.transactions.contains_key(&tx) {
                    return Err(StompError::new(format!(
                        "transaction '{}' is already open",
                        String::from_utf8_lossy(&tx)
                    )));
                }
                if self.transactions.len() >= config.max_transactions {
                    return Err(StompError::new(format!(
                        "too many open transactions (limit {})",
                        config.max_transactions
                    )));
                }
                self.transactions.insert(tx, Vec::new());
                Ok(Flow::Continue)
            }
            Command::Commit | Command::Abort => {
                let tx = required_bytes(&frame, header::TRANSACTION)?;
                let buffered = self
                    .transactions
                    .remove(&tx)
                    .ok_or_else(|| unknown_transaction(&tx))?;
                if frame.command == Command::Commit {
                    for frame in buffered {
                        self.apply(frame)?;
                    }
                }
                Ok(Flow::Continue)
            }
            Command::Disconnect => Ok(Flow::Close),
            other => Err(StompError::new(format!("unexpected {other} frame"))),
        }
    }

    fn subscribe(
        &mut self,
        frame: Frame,
        config: &ServerConfig,
        broker: &dyn Broker,
    ) -> Result<Flow, StompError> {
        let destination = required(&frame, header::DESTINATION)?.to_owned();
        let id = match (self.version, frame.headers.get_bytes(header::ID)) {
            (_, Some(id)) => id.clone(),
            (Version::V1_0, None) => Bytes::copy_from_slice(destination.as_bytes()),
            _ => required_bytes(&frame, header::ID)?,
        };
        let ack = match frame.headers.get(header::ACK) {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value).ok_or_else(|| {
                StompError::new(format!(
                    "invalid ack mode '{value}': use auto, client or client-individual"
                ))
            })?,
        };
        if self.subscriptions.contains(&id) {
            return Err(StompError::new(format!(
                "subscription id '{}' is already in use on this connection",
                String::from_utf8_lossy(&id)
            )));
        }
        if self.subscriptions.len() >= config.max_subscriptions {
            return Err(StompError::new(format!(
                "too many subscriptions on this connection (limit {})",
                config.max_subscriptions
            )));
        }
        if !broker.handles(&destination) {
            return Err(unknown_destination(&destination, config));
        }
        self.broker.subscribe(SubscribeRequest {
            id: id.clone(),
            destination,
            ack,
            frame,
        })?;
        self.subscriptions.insert(id);
        Ok(Flow::Continue)
    }

    /// Carries out a SEND, ACK or NACK (directly or at COMMIT).
    fn apply(&mut self, frame: Frame) -> Result<(), StompError> {
        match frame.command {
            Command::Send => {
                let destination = required(&frame, header::DESTINATION)?.to_owned();
                self.broker.send(Publish { destination, frame })?;
            }
            command => {
                let target = ack_target(&frame, self.version)?;
                self.broker.ack(&target, command == Command::Nack)?;
            }
        }
        Ok(())
    }
}

fn ack_target(frame: &Frame, version: Version) -> Result<AckTarget, StompError> {
    Ok(match version {
        Version::V1_2 => AckTarget::AckId(required_bytes(frame, header::ID)?),
        Version::V1_1 => AckTarget::MessageOnSubscription {
            message_id: required_bytes(frame, header::MESSAGE_ID)?,
            subscription: required_bytes(frame, header::SUBSCRIPTION)?,
        },
        Version::V1_0 => AckTarget::MessageId(required_bytes(frame, header::MESSAGE_ID)?),
    })
}

fn unknown_transaction(tx: &[u8]) -> StompError {
    StompError::new(format!(
        "unknown transaction '{}': send BEGIN first",
        String::from_utf8_lossy(tx)
    ))
}

fn unknown_destination(destination: &str, config: &ServerConfig) -> StompError {
    let prefixes: Vec<&str> = config
        .embedded
        .topic_prefixes
        .iter()
        .chain(&config.embedded.queue_prefixes)
        .map(String::as_str)
        .collect();
    StompError::new(format!(
        "destination '{destination}' is under no known prefix (known: {})",
        prefixes.join(", ")
    ))
}
