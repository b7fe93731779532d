//! `stompbox hash-password` as a script runs it: the password on a pipe,
//! the hash on stdout, and that hash accepted by the server's
//! `PasswordAuthenticator`.
//!
//! Every run has a deadline and a late child is killed, so a binary that
//! waits for more input fails the test instead of hanging it.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use stompbox::auth::{
    AuthError, Authenticator, ConnectRequest, Handshake, Identity, PasswordAuthenticator,
    PasswordConfig, PasswordUser,
};
use stompbox::codec::Headers;

/// Generous for a loaded CI machine and a debug build's argon2 run.
const WAIT: Duration = Duration::from_secs(60);

/// What one run printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `stompbox` with `args`, `stdin` piped in (and then closed).
fn run(args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stompbox"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the stompbox binary");
    // Dropping the pipe closes it: the end of the input.
    let mut pipe = child.stdin.take().expect("stdin is piped");
    // The binary may exit before reading it all (it reads one line).
    let _ = pipe.write_all(stdin);
    drop(pipe);
    // Read on threads, so a full pipe cannot stall the child.
    let collect = |mut out: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            out.read_to_string(&mut text).expect("read output");
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = collect(Box::new(child.stderr.take().expect("stderr is piped")));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for stompbox") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stompbox {args:?} still runs after {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The hash printed for `stdin`, after checking the run went well.
fn hash_of(stdin: &[u8]) -> String {
    let out = run(&["hash-password"], stdin);
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        out.stderr
    );
    let mut lines = out.stdout.lines();
    let hash = lines.next().expect("a line on stdout").to_owned();
    assert_eq!(lines.next(), None, "one line only: {:?}", out.stdout);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

async fn login(
    auth: &PasswordAuthenticator,
    name: &str,
    passcode: &str,
) -> Result<Option<Identity>, AuthError> {
    let mut headers = Headers::new();
    headers.push_str("login", name);
    headers.push_str("passcode", passcode);
    let addr = "127.0.0.1:61613".parse().expect("addr");
    let request = ConnectRequest::new("s", headers, Handshake::tcp(addr, false));
    auth.authenticate(&request).await
}

fn authenticator(name: &str, hash: &str) -> PasswordAuthenticator {
    PasswordAuthenticator::new(PasswordConfig::new(vec![PasswordUser::new(name, hash)]))
        .expect("the printed hash is accepted")
}

#[tokio::test]
async fn the_printed_hash_verifies_the_piped_password() {
    let hash = hash_of(b"correct horse battery staple\n");
    let auth = authenticator("alice", &hash);
    assert_eq!(
        login(&auth, "alice", "correct horse battery staple").await,
        Ok(Some(Identity::new("alice")))
    );
    assert_eq!(
        login(&auth, "alice", "correct horse battery staple\n").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(
        login(&auth, "alice", "Correct horse battery staple").await,
        Err(AuthError::BadCredentials)
    );
}

#[tokio::test]
async fn only_the_first_line_counts_without_its_crlf() {
    let hash = hash_of(b"s3cret pass\r\nnot this line\n");
    let auth = authenticator("bob", &hash);
    assert_eq!(
        login(&auth, "bob", "s3cret pass").await,
        Ok(Some(Identity::new("bob")))
    );
    assert_eq!(
        login(&auth, "bob", "s3cret pass\r").await,
        Err(AuthError::BadCredentials)
    );
}

#[test]
fn an_empty_password_is_refused() {
    for (input, message) in [
        (&b"\n"[..], "the password is empty"),
        (b"\r\n", "the password is empty"),
        (b"", "no password on stdin"),
    ] {
        let out = run(&["hash-password"], input);
        assert!(!out.status.success(), "{input:?}: {}", out.stdout);
        assert_eq!(out.stdout, "", "{input:?}");
        assert!(
            out.stderr.contains(&format!("stompbox: {message}")),
            "{input:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn the_help_says_where_the_hash_goes() {
    let out = run(&["hash-password", "--help"], b"");
    assert!(out.status.success(), "{}", out.stderr);
    for needle in [
        "[[auth.users]]",
        "password_hash = ",
        "stompbox.toml",
        "stdin",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} in:\n{}",
            out.stdout
        );
    }
}
