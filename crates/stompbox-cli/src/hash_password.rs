//! `stompbox hash-password`: the argon2id hash of a password, for the
//! `password_hash` of a user in stompbox.toml.
//!
//! The password never goes on the command line, where `ps` and the shell's
//! history would see it: it is typed at a hidden prompt, or piped in.

use std::io::{BufRead, IsTerminal};

/// Flags of `stompbox hash-password` (none: the password comes from the
/// terminal or stdin).
#[derive(Debug, clap::Args)]
// Lines broken by hand: clap's `wrap_help` feature is not on.
#[command(after_help = "\
At a terminal the password is asked twice, without echo. Otherwise the
first line of stdin is the password (its line ending removed), so that a
script can pipe it in:

    printf '%s\\n' \"$PASSWORD\" | stompbox hash-password

Put the printed hash in an [[auth.users]] entry of stompbox.toml:

    [[auth.users]]
    name = \"alice\"
    password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$…\"")]
pub(crate) struct HashPasswordArgs {}

/// Reads the password, then prints its PHC string on stdout.
pub(crate) fn run(_args: HashPasswordArgs) -> Result<(), String> {
    let password = if std::io::stdin().is_terminal() {
        prompt()?
    } else {
        first_line(&mut std::io::stdin().lock())?
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let hash = stompbox::auth::hash_password(&password)?;
    println!("{hash}");
    Ok(())
}

/// Asks twice at the terminal, without echo: a typo nobody saw would
/// otherwise lock the user out.
fn prompt() -> Result<String, String> {
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
    };
    let password = ask("Password: ")?;
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if ask("Again: ")? != password {
        return Err("the passwords do not match".into());
    }
    Ok(password)
}

/// The first line of `input` without its `\n` or `\r\n`.
fn first_line(input: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let read = input.read_line(&mut line).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => "the password on stdin is not UTF-8".to_owned(),
        _ => format!("cannot read the password from stdin: {e}"),
    })?;
    if read == 0 {
        return Err("no password on stdin".into());
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn reads_the_first_line_without_its_ending() {
        let read = |input: &str| first_line(&mut input.as_bytes());
        assert_eq!(read("secret\n").as_deref(), Ok("secret"));
        assert_eq!(read("secret\r\nnext\n").as_deref(), Ok("secret"));
        assert_eq!(read("no newline").as_deref(), Ok("no newline"));
        assert_eq!(read(" spaces kept \n").as_deref(), Ok(" spaces kept "));
        assert_eq!(read("\n").as_deref(), Ok(""));
        assert!(read("").is_err());
        assert!(first_line(&mut &b"\xff\xfe\n"[..]).is_err());
    }
}
