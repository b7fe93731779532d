#!/usr/bin/env python3
"""Drive a stompbox server's STOMP-over-TLS listener with the real stomp.py.

    python secure.py <host> <port> <ca-file> <untrusted-ca-file>

<ca-file> holds the CA that signed the server's certificate (issued for
<host>); <untrusted-ca-file> holds another CA, which does not vouch for it.
Credentials come from the environment, not argv:

    STOMP_LOGIN, STOMP_PASSCODE   a user the server accepts
    STOMP_JWT, STOMP_JWT_SUBJECT  a valid token and its `sub`
    STOMP_DEBUG=1                 turns on stomp.py's frame logging

The server's access rules must let authenticated users SEND to
/topic/secure.* and /user/{user}/queue/**, SUBSCRIBE to /topic/secure.* and
/user/queue/**, and nothing under /topic/forbidden.

Prints `ok <name>` or `FAIL <name>: <reason>` per scenario and exits 0 only if
every scenario passed.
"""

import logging
import os
import secrets
import select
import socket
import ssl
import sys
import threading
import time

import stomp
import stomp.exception

from harness import ScenarioError, check, run

WAIT_S = 5.0  # upper bound for any single expected event
SCRIPT_S = 55.0  # hard ceiling so a wedged server can never hang CI

# Unique per run; no `.` in it, as `/topic/secure.*` allows one dot-word.
RUN = f"{int(time.time()):x}-{secrets.token_hex(4)}"


def env(name):
    value = os.environ.get(name)
    if not value:
        raise ScenarioError(f"environment variable {name} is not set")
    return value


class OneCallAtATime:
    """The TLS socket of a stomp.py connection, entered by one thread at a time.

    stomp.py reads its socket on a receiver thread while the scenario thread
    writes to it. CPython does not stop two threads from using one OpenSSL
    connection at once, and OpenSSL does not allow it: with TLS 1.3 the
    receiver's first read handles the server's session tickets, and a
    CONNECT written at that moment now and then never arrives (a few
    connections in a hundred, against any server that sends tickets;
    python/cpython#151508 is this race). Here reads do not block under the
    lock: they wait for bytes outside it, so a write never waits for one.
    """

    POLL_S = 0.2  # how often a waiting read checks that the socket is open

    def __init__(self, sock):
        self.tls = sock
        self._lock = threading.Lock()

    def recv(self, bufsize):
        while True:
            with self._lock:
                if self.tls.fileno() < 0:
                    return b""  # closed by the other thread: end of stream
                timeout = self.tls.gettimeout()
                self.tls.settimeout(0)
                try:
                    return self.tls.recv(bufsize)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass  # nothing decrypted yet, and OpenSSL holds nothing back
                finally:
                    self.tls.settimeout(timeout)
            try:
                select.select([self.tls], [], [], self.POLL_S)
            except (OSError, ValueError):
                pass  # closed meanwhile; the next round says so

    def sendall(self, data):
        with self._lock:
            return self.tls.sendall(data)

    def unwrap(self):
        with self._lock:
            return self.tls.unwrap()

    def close(self):
        with self._lock:
            return self.tls.close()

    def __getattr__(self, name):
        return getattr(self.tls, name)


class Peer(stomp.ConnectionListener):
    """One STOMP connection over TLS; stomp.py's callbacks become bounded waits.

    stomp.py delivers frames on its receiver thread, so everything the
    scenarios wait for goes through one Condition.
    """

    def __init__(self, name, host, port, ca_file):
        self.name = name
        self.cond = threading.Condition()
        self.connected = False
        self.messages = []
        self._taken = 0
        self.receipts = set()
        self.errors = []  # every ERROR frame
        self.dropped = False
        # Set by an ERROR or a dropped socket the scenario did not expect:
        # fails the pending wait at once with the server's reason.
        self.broken = None
        self.expect_error = False
        self._seq = 0
        self.conn = stomp.Connection12(
            [(host, port)],
            heartbeats=(0, 0),
            # No socket timeout: stomp.py applies it to every recv() too. A
            # TLS handshake on loopback is fast, and the watchdog bounds it.
            timeout=None,
            # One attempt only: a retry would hide a refusal.
            reconnect_attempts_max=1,
        )
        # Without ca_certs stomp.py would not verify the server at all.
        self.conn.set_ssl(for_hosts=[(host, port)], ca_certs=ca_file)
        self.conn.set_listener(name, self)
        transport = self.conn.transport
        open_socket = transport.attempt_connection

        def attempt_connection():
            open_socket()
            if transport.socket is not None:
                transport.socket = OneCallAtATime(transport.socket)

        transport.attempt_connection = attempt_connection

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
        with self.cond:
            self.errors.append(frame)
            if not self.expect_error and self.broken is None:
                reason = " ".join(x for x in (frame.headers.get("message"), frame.body) if x)
                self.broken = f"{self.name} got ERROR: {reason}"
            self.cond.notify_all()

    def on_disconnected(self):
        with self.cond:
            self.dropped = True
            if not self.expect_error and self.broken is None:
                self.broken = f"{self.name} connection dropped unexpectedly"
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

    def start(self, login, passcode):
        # wait=False: stomp.py's own wait has no timeout; we wait ourselves.
        self.conn.connect(login, passcode, wait=False)

    def connect(self, login, passcode):
        try:
            self.start(login, passcode)
        except stomp.exception.ConnectFailedException as e:
            raise ScenarioError(f"{self.name} could not open a TLS connection") from e
        self.wait_for(lambda: self.connected, f"CONNECTED for {self.name}")
        return self

    def refused_connect(self, login, passcode):
        """The CONNECT must get an ERROR and a closed socket, never CONNECTED."""
        self.expect_error = True
        self.start(login, passcode)
        (frame,) = self.wait_for(lambda: self.errors[:1], f"ERROR refusing {self.name}'s CONNECT")
        self.wait_for(lambda: self.dropped, f"the socket closing after {self.name}'s ERROR")
        check(not self.connected, f"{self.name} got CONNECTED although its CONNECT was refused")
        return frame

    def receipt_id(self, label):
        self._seq += 1
        return f"{self.name}-{label}-{self._seq}"

    def subscribe(self, destination, sub_id):
        # Receipted, so the subscription is live before anything is published.
        rid = self.receipt_id("sub")
        self.conn.subscribe(destination, id=sub_id, ack="auto", receipt=rid)
        self.wait_for(lambda: rid in self.receipts, f"RECEIPT {rid}")

    def send(self, destination, body):
        rid = self.receipt_id("send")
        self.conn.send(destination, body, receipt=rid)
        self.wait_for(lambda: rid in self.receipts, f"RECEIPT {rid}")

    def take(self, n, what):
        taken = self._taken
        self.wait_for(lambda: len(self.messages) >= taken + n, what)
        with self.cond:
            self._taken = taken + n
            return self.messages[taken:taken + n]

    def dispose(self):
        """Cleanup path: never raises, never blocks for long."""
        self.expect_error = True
        try:
            if self.conn.is_connected() and not self.broken and not self.errors:
                rid = self.receipt_id("disconnect")
                # Registered as conn.disconnect() would, so stomp.py closes the
                # socket on the RECEIPT; conn.disconnect(receipt=...) itself
                # would block forever on a server that never answers.
                self.conn.set_receipt(rid, "DISCONNECT")
                self.conn.send_frame("DISCONNECT", {"receipt": rid})
                self.wait_for(lambda: rid in self.receipts, "DISCONNECT receipt", timeout=1.0)
        except Exception:
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass


class Scenarios:
    def __init__(self, host, port, ca_file, untrusted_ca_file):
        self.host, self.port = host, port
        self.ca_file, self.untrusted_ca_file = ca_file, untrusted_ca_file
        self.peers = []

    def peer(self, name, ca_file=None):
        p = Peer(name, self.host, self.port, ca_file or self.ca_file)
        self.peers.append(p)
        return p

    def cleanup(self):
        for p in self.peers:
            p.dispose()
        self.peers = []

    @staticmethod
    def round_trip(peer, user, label):
        """What `peer` sends to a topic and to its own user queue comes back
        to it marked with `stompbox-sender: user`."""
        topic = f"/topic/secure.{label}-{RUN}"
        queue = f"/queue/secure-{label}-{RUN}"
        peer.subscribe(topic, "t")
        peer.subscribe(f"/user{queue}", "q")
        expected = [f"{label} to the topic", f"{label} to myself"]
        peer.send(topic, expected[0])
        peer.send(f"/user/{user}{queue}", expected[1])
        got = peer.take(2, "both messages back")
        check(sorted(m.body for m in got) == sorted(expected), f"got {[m.body for m in got]}, expected {expected}")
        for m in got:
            sender = m.headers.get("stompbox-sender")
            check(sender == user, f"{m.body!r} has stompbox-sender {sender!r}, expected {user!r}")

    # ------------------------------------------------------------ scenarios

    def login_over_tls(self):
        login = env("STOMP_LOGIN")
        p = self.peer("login").connect(login, env("STOMP_PASSCODE"))
        check(isinstance(p.conn.transport.socket.tls, ssl.SSLSocket), "the connection is not TLS")
        self.round_trip(p, login, "pylogin")

    def wrong_passcode_refused(self):
        login = env("STOMP_LOGIN")
        frame = self.peer("wrong").refused_connect(login, env("STOMP_PASSCODE") + "-wrong")
        message = frame.headers.get("message", "")
        check(message.startswith("access refused: wrong login or passcode"), f"ERROR message {message!r}")

    def jwt_as_passcode(self):
        subject = env("STOMP_JWT_SUBJECT")
        # The login names someone else: the token alone says who this is.
        p = self.peer("jwt").connect(f"not-{subject}", env("STOMP_JWT"))
        self.round_trip(p, subject, "pyjwt")

    def send_outside_rules_refused(self):
        login = env("STOMP_LOGIN")
        p = self.peer("outside").connect(login, env("STOMP_PASSCODE"))
        destination = f"/topic/forbidden.{RUN}"
        p.expect_error = True
        p.conn.send(destination, "not allowed", receipt="denied")
        (frame,) = p.wait_for(lambda: p.errors[:1], f"ERROR refusing the SEND to {destination}")
        expected = f"access refused: SEND to '{destination}' is not allowed for user '{login}'"
        check(frame.headers.get("message") == expected, f"ERROR message {frame.headers.get('message')!r}")
        check(frame.headers.get("receipt-id") == "denied", f"ERROR receipt-id {frame.headers.get('receipt-id')!r}")
        p.wait_for(lambda: p.dropped, "the socket closing after the ERROR")

    def untrusted_ca_refused(self):
        p = self.peer("untrusted", ca_file=self.untrusted_ca_file)
        try:
            p.start(env("STOMP_LOGIN"), env("STOMP_PASSCODE"))
        except stomp.exception.ConnectFailedException:
            pass
        else:
            raise ScenarioError("stomp.py connected although it does not trust the server's CA")
        check(not p.connected, "stomp.py got CONNECTED without trusting the CA")
        # stomp.py does not say why it gave up; the same TLS settings by hand
        # show that it is the certificate, not the port.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(self.untrusted_ca_file)
        with socket.create_connection((self.host, self.port), timeout=WAIT_S) as raw:
            try:
                with context.wrap_socket(raw, server_hostname=self.host):
                    raise ScenarioError("a TLS handshake without the server's CA succeeded")
            except ssl.SSLCertVerificationError:
                pass

    SCENARIOS = [
        ("login-over-tls", login_over_tls),
        ("wrong-passcode-refused", wrong_passcode_refused),
        ("jwt-as-passcode", jwt_as_passcode),
        ("send-outside-rules-refused", send_outside_rules_refused),
        ("untrusted-ca-refused", untrusted_ca_refused),
    ]


def main(argv):
    if len(argv) != 5:
        print("usage: secure.py <host> <port> <ca-file> <untrusted-ca-file>", file=sys.stderr)
        return 64
    host, port, ca_file, untrusted_ca_file = argv[1], int(argv[2]), argv[3], argv[4]
    # stomp.py logs connect failures and ERROR frames itself; the scenario
    # lines report those, so stay quiet unless debugging.
    logging.basicConfig(level=logging.DEBUG if os.environ.get("STOMP_DEBUG") else logging.CRITICAL,
                        stream=sys.stderr)

    runner = Scenarios(host, port, ca_file, untrusted_ca_file)
    run(runner, Scenarios.SCENARIOS, SCRIPT_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
