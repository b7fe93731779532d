#!/usr/bin/env python3
"""Drive a STOMP 1.2 server over plain TCP with the real stomp.py client.

    python scenarios.py <host> <port> [login] [passcode]

login/passcode may also come from STOMP_LOGIN / STOMP_PASSCODE (RabbitMQ needs
guest/guest; stompbox ignores them). STOMP_VHOST overrides the CONNECT `host`
header, STOMP_DEBUG=1 turns on stomp.py's frame logging.

Prints `ok <name>` or `FAIL <name>: <reason>` per scenario and exits 0 only if
every scenario passed. The same script runs against RabbitMQ (the semantics
reference) and stompbox, so it only asserts what both agree on.
"""

import logging
import os
import secrets
import sys
import threading
import time

import stomp

from harness import ScenarioError, check, run

WAIT_S = 5.0  # upper bound for any single expected event
SCRIPT_S = 55.0  # hard ceiling so a wedged server can never hang CI

# Unique per run: RabbitMQ keeps /queue/* queues (durable) between runs, so a
# fixed name could hand us leftovers from an earlier, failed run.
RUN = f"{int(time.time()):x}-{secrets.token_hex(4)}"


def dest(kind, name):
    return f"/{kind}/stompbox-{name}-{RUN}"


class Peer(stomp.ConnectionListener):
    """One STOMP connection; turns stomp.py's callbacks into blocking waits.

    stomp.py delivers frames on its receiver thread, so everything the
    scenarios wait for goes through one Condition.
    """

    def __init__(self, name, host, port, login, passcode, vhost):
        self.name = name
        self.cond = threading.Condition()
        self.connected = False
        self.messages = []  # every MESSAGE, in arrival order
        self._taken = 0  # how many of them the scenario has consumed
        self.receipts = set()
        # An ERROR frame or dropped socket fails the pending wait at once with
        # the server's reason instead of an uninformative timeout.
        self.broken = None
        self.closing = False
        self._seq = 0
        self._login, self._passcode = login, passcode
        self.conn = stomp.Connection12(
            [(host, port)],
            # Heart-beats are not what these scenarios test.
            heartbeats=(0, 0),
            # No socket timeout: stomp.py applies it to every recv() too, so an
            # idle-but-healthy peer would be dropped. Loopback connects fail
            # fast anyway, and the script watchdog bounds the rest.
            timeout=None,
            # One connect attempt only: retries would just stretch a failure.
            reconnect_attempts_max=1,
            vhost=vhost,
        )
        self.conn.set_listener(name, self)

    # --- stomp.py callbacks (receiver thread) ---

    def on_connected(self, frame):
        with self.cond:
            self.connected = True
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_error(self, frame):
        reason = " ".join(x for x in (frame.headers.get("message"), frame.body) if x)
        self._break(f"{self.name} got ERROR: {reason}")

    def on_disconnected(self):
        if not self.closing:
            self._break(f"{self.name} connection dropped unexpectedly")

    def _break(self, reason):
        with self.cond:
            if self.broken is None:
                self.broken = reason
            self.cond.notify_all()

    # --- helpers (scenario thread) ---

    def wait_for(self, predicate, what, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                result = predicate()
                if result:
                    return result
                if self.broken:
                    raise ScenarioError(self.broken)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ScenarioError(f"timed out after {timeout:g} s waiting for {what}")
                self.cond.wait(left)

    def receipt_id(self, label):
        self._seq += 1
        return f"{self.name}-{label}-{self._seq}"

    def wait_receipt(self, rid, timeout=WAIT_S):
        self.wait_for(lambda: rid in self.receipts, f"RECEIPT {rid}", timeout)

    def connect(self):
        try:
            # wait=False: stomp.py's own wait has no timeout; we wait ourselves.
            self.conn.connect(self._login, self._passcode, wait=False)
        except stomp.exception.ConnectFailedException as e:
            raise ScenarioError(f"{self.name} could not open a TCP connection (refused or unreachable)") from e
        self.wait_for(lambda: self.connected, f"CONNECTED for {self.name}")
        return self

    def subscribe(self, destination, sub_id, ack="auto"):
        # Receipt on SUBSCRIBE: a topic drops messages sent before the
        # subscription is live, so we must know it is active before publishing.
        rid = self.receipt_id("sub")
        self.conn.subscribe(destination, id=sub_id, ack=ack, receipt=rid)
        self.wait_receipt(rid)

    def send(self, destination, body, receipt=False, **headers):
        if receipt:
            rid = self.receipt_id("send")
            self.conn.send(destination, body, receipt=rid, **headers)
            self.wait_receipt(rid)
        else:
            self.conn.send(destination, body, **headers)

    def take(self, n, what):
        """Wait until n messages are buffered past those already taken; return them."""
        taken = self._taken
        self.wait_for(lambda: len(self.messages) >= taken + n, what)
        with self.cond:
            self._taken = taken + n
            return self.messages[taken:taken + n]

    def disconnect(self, timeout=WAIT_S):
        """Orderly DISCONNECT; returns once the server's RECEIPT for it arrived."""
        rid = self.receipt_id("disconnect")
        self.closing = True
        # Register the receipt the way conn.disconnect() would, so stomp.py
        # closes the socket when it arrives; but don't call conn.disconnect(receipt=...)
        # itself: it then blocks forever if the server never answers.
        self.conn.set_receipt(rid, "DISCONNECT")
        self.conn.send_frame("DISCONNECT", {"receipt": rid})
        self.wait_receipt(rid, timeout)

    def dispose(self):
        """Cleanup path: never raises, never blocks for long."""
        self.closing = True
        try:
            # Be polite to a healthy server, but a short bound: cleanup after
            # a failure must not eat the script's time budget.
            if self.conn.is_connected() and not self.broken:
                self.disconnect(timeout=1.0)
        except Exception:
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass


class Scenarios:
    def __init__(self, host, port, login, passcode, vhost):
        self.opts = (host, port, login, passcode, vhost)
        self.peers = []

    def peer(self, name):
        p = Peer(name, *self.opts)
        self.peers.append(p)
        return p.connect()

    def cleanup(self):
        for p in self.peers:
            p.dispose()
        self.peers = []

    # ------------------------------------------------------------ scenarios

    def pubsub(self):
        sub, pub = self.peer("pubsub-sub"), self.peer("pubsub-pub")
        topic = dest("topic", "pubsub")
        sub.subscribe(topic, "sub-pubsub")
        # Newlines, a colon and non-ASCII in the body check that the server
        # frames by content-length (bytes), not by guessing.
        bodies = [f"message {i}\nsecond line: caf\u00e9 \u2713" for i in (1, 2, 3)]
        for body in bodies:
            pub.send(topic, body, content_type="text/plain", **{"x-test": "1"})
        got = sub.take(3, "3 pubsub messages")
        for i, (m, expected) in enumerate(zip(got, bodies), 1):
            check(m.body == expected, f"message {i}: body {m.body!r} != {expected!r}")
            check(m.headers.get("x-test") == "1", f"message {i}: x-test header is {m.headers.get('x-test')!r}")
            ctype = m.headers.get("content-type", "")
            check(ctype.startswith("text/plain"), f"message {i}: content-type is {ctype!r}")

    def queue_ack_redelivery(self):
        queue = dest("queue", "ackq")
        names = ["m1", "m2", "m3", "m4"]
        a, producer = self.peer("ack-A"), self.peer("ack-producer")
        a.subscribe(queue, "sub-a", ack="client-individual")
        for body in names:
            producer.send(queue, body, receipt=True)
        got = a.take(4, "A receiving m1..m4")
        check([m.body for m in got] == names, f"A got {[m.body for m in got]}, expected {names}")

        # client-individual: acking m3 must NOT implicitly ack m2 (unlike
        # `client`). Receipts on the ACKs prove the server processed them
        # before we leave.
        for m in (got[0], got[2]):
            rid = a.receipt_id(f"ack-{m.body}")
            a.conn.ack(m.headers["ack"], receipt=rid)
            a.wait_receipt(rid)
        a.disconnect()

        b = self.peer("ack-B")
        b.subscribe(queue, "sub-b")  # ack: auto
        redelivered = b.take(2, "B receiving the 2 unacked messages")
        bodies = sorted(m.body for m in redelivered)
        check(bodies == ["m2", "m4"], f"B got {bodies}, expected ['m2', 'm4']")
        for m in redelivered:
            check(m.headers.get("redelivered") == "true",
                  f"{m.body} lacks redelivered:true (got {m.headers.get('redelivered')!r})")
        # Prove nothing else (e.g. a wrongly re-queued m1/m3) is pending: the
        # next thing B sees must be a marker sent only now.
        producer.send(queue, "marker", receipt=True)
        (m,) = b.take(1, "marker after redeliveries")
        check(m.body == "marker", f"B got unexpected extra message {m.body!r} before the marker")

    def tx_commit(self):
        queue = dest("queue", "txcommit")
        sub, producer = self.peer("txc-sub"), self.peer("txc-producer")
        sub.subscribe(queue, "sub-txc")
        tx = producer.conn.begin()
        producer.send(queue, "tx-1", transaction=tx)
        producer.send(queue, "tx-2", transaction=tx)
        # The marker is outside the tx and sent after it: if the server leaked
        # the transactional SENDs early they would reach the subscriber first.
        producer.send(queue, "marker", receipt=True)
        (first,) = sub.take(1, "marker before COMMIT")
        check(first.body == "marker", f"got {first.body!r} before COMMIT (expected the marker)")

        rid = producer.receipt_id("commit")
        producer.conn.commit(tx, receipt=rid)
        producer.wait_receipt(rid)
        got = sub.take(2, "tx-1 and tx-2 after COMMIT")
        check([m.body for m in got] == ["tx-1", "tx-2"], f"after COMMIT got {[m.body for m in got]}")

    def tx_abort(self):
        queue = dest("queue", "txabort")
        sub, producer = self.peer("txa-sub"), self.peer("txa-producer")
        sub.subscribe(queue, "sub-txa")
        tx = producer.conn.begin()
        producer.send(queue, "aborted", transaction=tx)
        rid = producer.receipt_id("abort")
        producer.conn.abort(tx, receipt=rid)
        producer.wait_receipt(rid)
        # Frames on one connection are processed in order, so by the time the
        # marker arrives the aborted message would already have been
        # delivered if the ABORT had been ignored.
        producer.send(queue, "marker", receipt=True)
        (m,) = sub.take(1, "marker after ABORT")
        check(m.body == "marker", f"got {m.body!r} (expected only the marker)")

    def disconnect_receipt(self):
        p = self.peer("disc")
        p.disconnect()  # raises unless the RECEIPT for DISCONNECT comes back

    SCENARIOS = [
        ("pubsub", pubsub),
        ("queue-ack-redelivery", queue_ack_redelivery),
        ("tx-commit", tx_commit),
        ("tx-abort", tx_abort),
        ("disconnect-receipt", disconnect_receipt),
    ]


def main(argv):
    if len(argv) not in (3, 4, 5):
        print("usage: scenarios.py <host> <port> [login] [passcode]", file=sys.stderr)
        return 64
    host, port = argv[1], int(argv[2])
    login = argv[3] if len(argv) > 3 else os.environ.get("STOMP_LOGIN")
    passcode = argv[4] if len(argv) > 4 else os.environ.get("STOMP_PASSCODE")
    vhost = os.environ.get("STOMP_VHOST")
    # stomp.py logs reconnect attempts and ERROR frames itself; we already
    # report those on the scenario line, so stay quiet unless debugging.
    logging.basicConfig(level=logging.DEBUG if os.environ.get("STOMP_DEBUG") else logging.CRITICAL,
                        stream=sys.stderr)

    runner = Scenarios(host, port, login, passcode, vhost)
    run(runner, Scenarios.SCENARIOS, SCRIPT_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
