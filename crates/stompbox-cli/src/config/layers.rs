//! Merging the sources: the file, STOMPBOX_* variables and flags become one
//! [`Table`], each key remembering where it was set last.

use super::file::{FileConfig, known_keys};
use super::validate::validate;
use super::{ENV_PREFIX, NOT_SETTINGS, Settings};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Where a key's value came from, for error messages.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "set in {}", path.display()),
            Origin::Env(name) => write!(f, "set by environment variable {name}"),
            Origin::Flag(flag) => write!(f, "set by {flag}"),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Layers {
    pub(super) table: Table,
    pub(super) origins: HashMap<String, Origin>,
    /// STOMPBOX_* variables that name no setting: logged, not fatal (see
    /// [`Layers::add_env`]).
    pub(super) warnings: Vec<String>,
}

/// Variables of the test harness (`STOMPBOX_TEST_BROKER`, …), which share
/// the prefix and are often exported in the shell that also runs `serve`.
const TEST_HARNESS_PREFIX: &str = "STOMPBOX_TEST_";

impl Layers {
    /// Sets `section.key`, creating the section; a non-table section (say
    /// `limits = 5` in the file) is reported rather than silently replaced.
    fn set(
        &mut self,
        section: &str,
        key: &str,
        value: Value,
        origin: Origin,
    ) -> Result<(), String> {
        let entry = self
            .table
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(table) = entry else {
            let from = self
                .origins
                .get(section)
                .map(|o| format!("; {o}"))
                .unwrap_or_default();
            return Err(format!(
                "invalid configuration: {section}: must be a table ([{section}]), got a value of type {}{from}",
                entry.type_str()
            ));
        };
        table.insert(key.to_owned(), value);
        self.origins.insert(format!("{section}.{key}"), origin);
        Ok(())
    }

    fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read configuration file {}: {e}", path.display()))?;
        let file: Table = toml::from_str(&text).map_err(|e| {
            format!(
                "invalid configuration file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        let origin = Origin::File(path.to_owned());
        for (section, value) in file {
            if let Value::Table(keys) = &value {
                for key in keys.keys() {
                    self.origins
                        .insert(format!("{section}.{key}"), origin.clone());
                }
            }
            self.origins.insert(section.clone(), origin.clone());
            self.table.insert(section, value);
        }
        Ok(())
    }

    /// Applies every STOMPBOX_* variable of `vars`. Taken as an argument so
    /// tests need not touch the process environment.
    ///
    /// A variable that names no setting is a warning with the closest key,
    /// not an error: the environment is shared with other tools (the test
    /// harness's STOMPBOX_TEST_* are skipped silently), and one stray
    /// export should not stop a server. A bad value of a known setting is
    /// still an error.
    pub(super) fn add_env(
        &mut self,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        known: &Table,
    ) -> Result<(), String> {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(name, _)| name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes()))
            .filter(|(name, _)| {
                !NOT_SETTINGS
                    .iter()
                    .any(|n| name.as_encoded_bytes() == n.as_bytes())
                    && !name
                        .as_encoded_bytes()
                        .starts_with(TEST_HARNESS_PREFIX.as_bytes())
            })
            .collect();
        // Deterministic: the first bad variable reported is the same every run.
        vars.sort();
        for (name, value) in vars {
            let name = name.to_string_lossy().into_owned();
            let Some(value) = value.to_str() else {
                return Err(format!("environment variable {name} is not valid UTF-8"));
            };
            let Some((section, key, default)) = env_key(&name, known) else {
                let hint = match closest_key(&name, known, env_name) {
                    Some(key) => format!("did you mean {}?", env_name(&key)),
                    None => format!(
                        "use {ENV_PREFIX}<SECTION>_<KEY> with a key of stompbox.toml, e.g. \
                         {ENV_PREFIX}LIMITS_FRAME_BYTES"
                    ),
                };
                self.warnings.push(format!(
                    "environment variable {name} names no setting and is ignored; {hint}"
                ));
                continue;
            };
            let value = parse_value(value, default);
            self.set(&section, &key, value, Origin::Env(name.clone()))?;
        }
        Ok(())
    }

    fn add_flag(
        &mut self,
        path: &str,
        value: &str,
        flag: &str,
        known: &Table,
    ) -> Result<(), String> {
        let default = path
            .split_once('.')
            .and_then(|(s, k)| known.get(s)?.as_table()?.get(k).map(|d| (s, k, d)));
        let Some((section, key, default)) = default else {
            let hint = match closest_key(path, known, |key| key.to_owned()) {
                Some(key) => format!("did you mean {key}?"),
                None => "use SECTION.KEY with a key of stompbox.toml, e.g. limits.frame_bytes"
                    .to_owned(),
            };
            return Err(format!("{flag}: '{path}' is not a setting; {hint}"));
        };
        self.set(
            section,
            key,
            parse_value(value, default),
            Origin::Flag(flag.to_owned()),
        )
    }
}

/// `limits.frame_bytes` as its variable, `STOMPBOX_LIMITS_FRAME_BYTES`.
fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The known `section.key` whose spelling (as `spell` writes it) is closest
/// to `typed`, when it is close enough to be a typo rather than another
/// word: at most a third of the characters differ, and at least one less
/// than all of a short key.
pub(super) fn closest_key(
    typed: &str,
    known: &Table,
    spell: impl Fn(&str) -> String,
) -> Option<String> {
    let typed = typed.to_ascii_lowercase();
    known
        .iter()
        .filter_map(|(section, keys)| Some((section, keys.as_table()?)))
        .flat_map(|(section, keys)| keys.keys().map(move |key| format!("{section}.{key}")))
        .map(|key| {
            let distance = edit_distance(&typed, &spell(&key).to_ascii_lowercase());
            (distance, key)
        })
        .filter(|(distance, _)| *distance <= (typed.chars().count() / 3).max(1))
        .min()
        .map(|(_, key)| key)
}

/// Levenshtein distance: insertions, deletions and substitutions, by
/// character.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// serde's words for a mistyped value (`expected usize`) in the words of
/// someone editing a configuration file.
fn plain_type_words(message: &str) -> String {
    let mut message = message.to_owned();
    for (rust, plain) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number (0 or more)"),
        ("expected u8", "expected a whole number (0 or more)"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ] {
        // Whole words only: "expected u8" must not rewrite "expected u8x".
        if let Some(at) = message.find(rust)
            && !message[at + rust.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            message.replace_range(at..at + rust.len(), plain);
        }
    }
    message
}

/// Maps `STOMPBOX_LIMITS_FRAME_BYTES` to `("limits", "frame_bytes")` and the
/// key's default. Sections have no underscore, so the first one splits.
pub(super) fn env_key<'k>(name: &str, known: &'k Table) -> Option<(String, String, &'k Value)> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let (section, key) = rest.split_once('_')?;
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let default = known.get(&section)?.as_table()?.get(&key)?;
    Some((section, key, default))
}

/// A value from the environment or a flag: TOML when it is one TOML value
/// (numbers, booleans, arrays, quoted strings), otherwise the raw text, so
/// `127.0.0.1:9000` needs no quotes. A list key also takes `a,b,c`. A text
/// key takes the raw text unless it is a quoted string, so a token of digits
/// stays text instead of becoming a number.
pub(super) fn parse_value(raw: &str, default: &Value) -> Value {
    let parsed = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        // Exactly one key: "1\nother = 2" must not smuggle in a second one.
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(value) if default.is_str() && !value.is_str() => Value::String(raw.to_owned()),
        Some(value) => value,
        None if default.is_array() => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        None => Value::String(raw.to_owned()),
    }
}

/// Builds the server configuration from the file (if any), the environment
/// and flags (`(section.key, value, flag name)`), in rising precedence.
pub(super) fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    flags: &[(String, String, String)],
) -> Result<Settings, String> {
    let known = known_keys()?;
    let mut layers = Layers::default();
    if let Some(path) = file {
        layers.add_file(path)?;
    }
    layers.add_env(env, &known)?;
    for (path, value, flag) in flags {
        layers.add_flag(path, value, flag, &known)?;
    }
    let Layers {
        table,
        origins,
        warnings,
    } = layers;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let parsed: FileConfig = serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let from = origin_of(&origins, &path)
            .map(|o| format!("; {o}"))
            .unwrap_or_default();
        let message = plain_type_words(e.inner().message().trim_end());
        // serde lists every key of the section; the likely one first.
        let hint = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .and_then(|(field, _)| {
                let section = path.rsplit_once('.').map_or("", |(s, _)| s);
                let typed = format!("{section}.{field}");
                closest_key(&typed, &known, |key| key.to_owned())
            })
            .map(|key| format!(" (did you mean {key}?)"))
            .unwrap_or_default();
        format!("invalid configuration: {path}: {message}{hint}{from}")
    })?;
    validate(parsed).map_err(|problems| {
        let describe = |(key, message): &(&str, String)| match origin_of(&origins, key) {
            Some(origin) => format!("{key}: {message}; {origin}"),
            None => format!("{key}: {message}"),
        };
        match problems.as_slice() {
            [one] => format!("invalid configuration: {}", describe(one)),
            many => {
                let lines: Vec<String> =
                    many.iter().map(|p| format!("  {}", describe(p))).collect();
                format!(
                    "invalid configuration ({} problems):\n{}",
                    many.len(),
                    lines.join("\n")
                )
            }
        }
    })
}

/// The source of `path`; for a path inside a key's value
/// (`server.api_tokens[1].token`), of the key; for an unknown key inside a
/// section, of the section (`limits.fram_bytes` came from wherever `limits`
/// was written).
pub(super) fn origin_of<'o>(
    origins: &'o HashMap<String, Origin>,
    path: &str,
) -> Option<&'o Origin> {
    let section = path.split_once('.').map_or(path, |(s, _)| s);
    let key = path
        .split_once('.')
        .map(|(s, rest)| {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            format!("{s}.{}", &rest[..end])
        })
        .unwrap_or_default();
    origins
        .get(path)
        .or_else(|| origins.get(&key))
        .or_else(|| origins.get(section))
}
