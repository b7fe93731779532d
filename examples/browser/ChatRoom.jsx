// A chat room as a React component, talking to stompbox with @stomp/stompjs
// (npm install @stomp/stompjs react). It uses the chat demo's destinations,
// so `stompbox serve` (or `cargo run --example chat`) answers it.
//
//   <ChatRoom url="ws://127.0.0.1:8080/ws" room="lobby" name="alice" />
//
// Served from another origin than the server's own (a dev server on
// http://localhost:5173, say), add that origin to server.allowed_origins,
// or the WebSocket handshake is refused with 403.
import { useEffect, useRef, useState } from "react";
import { Client } from "@stomp/stompjs";

export default function ChatRoom({ url, room, name }) {
  const [lines, setLines] = useState([]);
  const [connected, setConnected] = useState(false);
  const [text, setText] = useState("");
  const client = useRef(null);

  useEffect(() => {
    const stomp = new Client({
      brokerURL: url,
      // Without [auth] on the server a login is only a display name.
      connectHeaders: { login: name },
      // stompbox honours these down to its heartbeat.min_ms (1 s by
      // default), so a dead connection is noticed within ~1.5 intervals.
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      // After a close (a restart, a drained node: code 1001) try again.
      reconnectDelay: 2000,
    });
    const show = (line) => setLines((old) => [...old.slice(-99), line]);
    // Runs on every (re)connect: subscriptions end with their connection.
    stomp.onConnect = () => {
      setConnected(true);
      stomp.subscribe(`/topic/chat/${room}`, (message) => {
        const event = JSON.parse(message.body);
        if (event.type === "message") show(`${event.user}: ${event.text}`);
        if (event.type === "join") show(`${event.user} joined`);
      });
      // A handler's refusal (say, an empty message) comes here, not as an ERROR.
      stomp.subscribe("/user/queue/errors", (message) => {
        show(`error: ${JSON.parse(message.body).error}`);
      });
    };
    stomp.onWebSocketClose = () => setConnected(false);
    stomp.onStompError = (frame) => show(`server error: ${frame.headers.message}`);
    stomp.activate();
    client.current = stomp;
    return () => {
      client.current = null;
      stomp.deactivate();
    };
  }, [url, room, name]);

  const send = (event) => {
    event.preventDefault();
    if (!client.current?.connected || !text.trim()) return;
    client.current.publish({
      destination: `/app/chat/${room}`,
      body: JSON.stringify({ text }),
      headers: { "content-type": "application/json" },
    });
    setText("");
  };

  return (
    <section>
      <h2>
        #{room} {connected ? "" : "(connecting…)"}
      </h2>
      <ul>
        {lines.map((line, i) => (
          <li key={i}>{line}</li>
        ))}
      </ul>
      <form onSubmit={send}>
        <input value={text} onChange={(e) => setText(e.target.value)} placeholder="Say something" />
        <button disabled={!connected}>Send</button>
      </form>
    </section>
  );
}
