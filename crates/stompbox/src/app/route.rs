//! Route templates for application destinations, matched like Spring's
//! `@MessageMapping` patterns: `/chat/{room}` captures one segment, `*`
//! matches one segment, `**` matches the rest (zero or more segments).

/// One parsed segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Variable(Box<str>),
    Wildcard,
    Rest,
}

/// A compiled route template.
#[derive(Debug, Clone)]
pub(crate) struct RouteTemplate {
    source: Box<str>,
    segments: Vec<Segment>,
}

/// Why a template is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route template '{template}': {reason}")]
pub struct InvalidRoute {
    template: String,
    reason: &'static str,
}

impl RouteTemplate {
    pub(crate) fn parse(template: &str) -> Result<RouteTemplate, InvalidRoute> {
        let invalid = |reason| InvalidRoute {
            template: template.to_owned(),
            reason,
        };
        let Some(rest) = template.strip_prefix('/') else {
            return Err(invalid("must start with '/'"));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "" => return Err(invalid("empty segment")),
                "**" if i + 1 != parts.len() => {
                    return Err(invalid("'**' must be the last segment"));
                }
                "**" => Segment::Rest,
                "*" => Segment::Wildcard,
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if segments
                        .iter()
                        .any(|s| matches!(s, Segment::Variable(n) if n.as_ref() == name))
                    {
                        return Err(invalid("variable names must be unique"));
                    }
                    Segment::Variable(name.into())
                }
                p if p.contains(['{', '}', '*']) => {
                    return Err(invalid("'{', '}' and '*' must fill a whole segment"));
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(segment);
        }
        Ok(RouteTemplate {
            source: template.into(),
            segments,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches `path` (the destination without the application prefix,
    /// starting with `/`) and returns the captured variables.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(Box<str>, String)>> {
        let rest = path.strip_prefix('/')?;
        // Walked segment by segment, without collecting the parts first: a
        // route is matched on every message to it.
        let mut parts = Parts((!rest.is_empty()).then_some(rest));
        let mut vars = Vec::new();
        for segment in &self.segments {
            let part = parts.next();
            match segment {
                Segment::Rest => return Some(vars),
                Segment::Literal(l) => {
                    if part != Some(l.as_ref()) {
                        return None;
                    }
                }
                Segment::Wildcard => {
                    if part.is_none_or(str::is_empty) {
                        return None;
                    }
                }
                Segment::Variable(name) => {
                    let value = part.filter(|p| !p.is_empty())?;
                    vars.push((name.clone(), value.to_owned()));
                }
            }
        }
        parts.next().is_none().then_some(vars)
    }

    /// Literal segments first, so `/chat/lobby` wins over `/chat/{room}`
    /// whatever the registration order (Spring picks the most specific).
    pub(crate) fn specificity(&self) -> (usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let not_rest = usize::from(!self.segments.contains(&Segment::Rest));
        (not_rest, literals)
    }
}

/// The `/`-separated parts of a path (after its leading `/`), as
/// `str::split` gives them, with a plain byte search: paths are short.
struct Parts<'a>(Option<&'a str>);

impl<'a> Iterator for Parts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'/') {
            Some(slash) => {
                self.0 = Some(&rest[slash + 1..]);
                Some(&rest[..slash])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        RouteTemplate::parse(template)
            .unwrap()
            .matches(path)
            .map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn templates_match_like_message_mapping() {
        assert_eq!(
            vars("/chat/{room}", "/chat/1"),
            Some(vec![("room".into(), "1".into())])
        );
        assert_eq!(vars("/chat/{room}", "/chat/1/x"), None);
        assert_eq!(vars("/chat/{room}", "/chat/"), None);
        assert_eq!(vars("/chat/{room}", "/chat"), None);
        assert_eq!(vars("/a/*/c", "/a/b/c"), Some(vec![]));
        assert_eq!(vars("/a/**", "/a"), Some(vec![]));
        assert_eq!(vars("/a/**", "/a/b/c"), Some(vec![]));
        assert_eq!(vars("/{x}/{y}", "/1/2").map(|v| v.len()), Some(2));
        assert_eq!(vars("/", "/"), Some(vec![]));
        assert_eq!(vars("/", "/a"), None);
        assert_eq!(vars("/a", "/"), None);
        assert_eq!(vars("/a", "/a/"), None);
        assert_eq!(vars("/a/*", "/a/"), None);
        assert_eq!(vars("/a/**", "/a/"), Some(vec![]));
        assert_eq!(vars("/a/b", "a/b"), None);
        assert_eq!(vars("/bench/echo", "/bench/echo"), Some(vec![]));
    }

    #[test]
    fn parts_split_like_str_split() {
        for path in ["a", "a/b", "a//b", "a/", "/a", "/", "ab/cd/ef/"] {
            assert_eq!(
                Parts(Some(path)).collect::<Vec<_>>(),
                path.split('/').collect::<Vec<_>>(),
                "{path}"
            );
        }
        assert_eq!(Parts(None).next(), None);
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["chat", "/a//b", "/a/**/b", "/a{b}", "/{x}/{x}"] {
            assert!(RouteTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
