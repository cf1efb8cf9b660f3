//! The ACL file, in Mosquitto's `acl_file` syntax, and the access decision.
//!
//! ```text
//! # anonymous clients: the topic rules before the first `user` line
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # every client; %c is its client id, %u its username
//! pattern write devices/%c/status
//! ```
//!
//! As in Mosquitto, deny rules are checked first and win; otherwise access needs a rule
//! that grants it; what no rule grants is denied. A subscription needs read access to
//! every topic its filter can match, so a filter wider than the rules (`#` against
//! `sensors/#`) is refused rather than checked per message; a filter that overlaps a
//! deny rule is refused too.

use std::collections::HashMap;
use std::path::Path;

/// Why an ACL file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    #[error("{path}: cannot read the ACL file: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Line { line: usize, message: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants(self, want: Want) -> bool {
        matches!(
            (self, want),
            (Access::ReadWrite, _)
                | (Access::Read, Want::Subscribe)
                | (Access::Write, Want::Publish)
        )
    }
}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Publish to a topic name.
    Publish,
    /// Subscribe to a topic filter.
    Subscribe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    topic: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AclFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Acl::parse(&text)
    }

    /// Parses the text of an ACL file. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Acl, AclFileError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |message| AclFileError::Line {
                line: index + 1,
                message,
            };
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(fail("user without a name"));
                    }
                    user = Some(rest.to_string());
                    acl.users.entry(rest.to_string()).or_default();
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(fail)?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(name) = &user {
                        acl.users.entry(name.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                _ => return Err(fail("expected 'user', 'topic' or 'pattern'")),
            }
        }
        Ok(acl)
    }

    /// Whether the client may publish to the topic name or subscribe to the filter
    /// `topic`. `username` is `None` for anonymous clients.
    pub fn allows(&self, username: Option<&str>, client_id: &str, want: Want, topic: &str) -> bool {
        // A shared subscription reads what its inner filter matches.
        let topic = match crate::topic::parse_shared(topic) {
            Ok(Some((_, filter))) => filter,
            _ => topic,
        };
        let wanted: Vec<&str> = topic.split('/').collect();
        let own = match username {
            Some(name) => self.users.get(name).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let substituted: Vec<Rule> = self
            .patterns
            .iter()
            .filter_map(|rule| substitute(rule, username, client_id))
            .collect();
        let rules = || own.iter().chain(substituted.iter());
        let denied = rules()
            .any(|rule| rule.access == Access::Deny && intersects(&levels(&rule.topic), &wanted));
        !denied
            && rules().any(|rule| rule.access.grants(want) && covers(&levels(&rule.topic), &wanted))
    }
}

fn parse_rule(rest: &str) -> Result<Rule, &'static str> {
    let (first, after) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let access = match first {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        "deny" => Some(Access::Deny),
        _ => None,
    };
    // Without an access word the whole rest is the topic, with readwrite access.
    let (access, topic) = match access {
        Some(access) => (access, after.trim()),
        None => (Access::ReadWrite, rest),
    };
    if topic.is_empty() {
        return Err("rule without a topic");
    }
    Ok(Rule {
        access,
        topic: topic.to_string(),
    })
}

/// The pattern with `%c` and `%u` replaced, or `None` when it cannot apply: `%u` for an
/// anonymous client, or a value that would add levels or wildcards to the rule.
fn substitute(rule: &Rule, username: Option<&str>, client_id: &str) -> Option<Rule> {
    let unsafe_value = |value: &str| value.contains(['/', '+', '#']);
    let mut topic = rule.topic.clone();
    if topic.contains("%c") {
        if unsafe_value(client_id) {
            return None;
        }
        topic = topic.replace("%c", client_id);
    }
    if topic.contains("%u") {
        let name = username.filter(|name| !unsafe_value(name))?;
        topic = topic.replace("%u", name);
    }
    Some(Rule {
        access: rule.access,
        topic,
    })
}

fn levels(topic: &str) -> Vec<&str> {
    topic.split('/').collect()
}

fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

/// A first-level wildcard never matches a `$` topic (MQTT 4.7.2).
fn dollar_mismatch(a: &[&str], b: &[&str]) -> bool {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) => {
            (is_wildcard(x) && y.starts_with('$')) || (is_wildcard(y) && x.starts_with('$'))
        }
        _ => false,
    }
}

/// Whether every topic `filter` matches is also matched by `rule`.
fn covers(rule: &[&str], filter: &[&str]) -> bool {
    if dollar_mismatch(rule, filter) {
        return false;
    }
    fn walk(rule: &[&str], filter: &[&str]) -> bool {
        match (rule.first(), filter.first()) {
            (Some(&"#"), _) => true,
            (Some(&"+"), Some(level)) if *level != "#" => walk(&rule[1..], &filter[1..]),
            (Some(r), Some(f)) if r == f && !is_wildcard(r) => walk(&rule[1..], &filter[1..]),
            (None, None) => true,
            _ => false,
        }
    }
    walk(rule, filter)
}

/// Whether some topic is matched by both `a` and `b`.
fn intersects(a: &[&str], b: &[&str]) -> bool {
    if dollar_mismatch(a, b) {
        return false;
    }
    fn walk(a: &[&str], b: &[&str]) -> bool {
        match (a.first(), b.first()) {
            (Some(&"#"), _) | (_, Some(&"#")) => true,
            (Some(x), Some(y)) if *x == "+" || *y == "+" || x == y => walk(&a[1..], &b[1..]),
            (None, None) => true,
            _ => false,
        }
    }
    walk(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#
topic deny public/secret

user alice
topic readwrite alice/#
topic sensors/+/temp
topic deny alice/private/#

user bob
topic write bob/out

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    fn acl() -> Acl {
        Acl::parse(FILE).unwrap()
    }

    #[test]
    fn anonymous_rules_come_before_the_first_user() {
        let acl = acl();
        assert!(acl.allows(None, "c", Want::Subscribe, "public/news"));
        assert!(acl.allows(None, "c", Want::Subscribe, "public/news/+"));
        assert!(!acl.allows(None, "c", Want::Publish, "public/news"));
        assert!(!acl.allows(None, "c", Want::Subscribe, "alice/x"));
        // Overlap the deny rule.
        assert!(!acl.allows(None, "c", Want::Subscribe, "public/#"));
        assert!(!acl.allows(None, "c", Want::Subscribe, "public/+"));
        assert!(!acl.allows(None, "c", Want::Subscribe, "public/secret"));
    }

    #[test]
    fn user_rules_access_words_and_deny() {
        let acl = acl();
        assert!(acl.allows(Some("alice"), "c", Want::Publish, "alice/a/b"));
        assert!(acl.allows(Some("alice"), "c", Want::Subscribe, "alice/inbox/#"));
        assert!(!acl.allows(Some("alice"), "c", Want::Subscribe, "alice/#"));
        assert!(acl.allows(Some("alice"), "c", Want::Publish, "sensors/1/temp"));
        assert!(!acl.allows(Some("alice"), "c", Want::Publish, "sensors/1/hum"));
        assert!(!acl.allows(Some("alice"), "c", Want::Publish, "alice/private/x"));
        assert!(!acl.allows(Some("alice"), "c", Want::Subscribe, "#"));
        assert!(acl.allows(Some("bob"), "c", Want::Publish, "bob/out"));
        assert!(!acl.allows(Some("bob"), "c", Want::Subscribe, "bob/out"));
        // A user without a section has only the patterns; no anonymous rules.
        assert!(!acl.allows(Some("carol"), "c", Want::Subscribe, "public/news"));
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let acl = acl();
        assert!(acl.allows(None, "dev1", Want::Publish, "devices/dev1/status"));
        assert!(!acl.allows(None, "dev1", Want::Publish, "devices/dev2/status"));
        assert!(acl.allows(Some("bob"), "x", Want::Subscribe, "users/bob/inbox"));
        assert!(!acl.allows(Some("bob"), "x", Want::Subscribe, "users/alice/inbox"));
        // No %u for anonymous clients; ids with wildcards or slashes match nothing.
        assert!(!acl.allows(None, "x", Want::Subscribe, "users//inbox"));
        assert!(!acl.allows(None, "+", Want::Publish, "devices/a/status"));
        assert!(!acl.allows(None, "a/b", Want::Publish, "devices/a/b/status"));
    }

    #[test]
    fn first_level_wildcards_do_not_reach_dollar_topics() {
        let acl = Acl::parse("topic read #\ntopic deny $SYS/#\n").unwrap();
        assert!(acl.allows(None, "c", Want::Subscribe, "#"));
        assert!(!acl.allows(None, "c", Want::Subscribe, "$SYS/broker/uptime"));
        let open = Acl::parse("topic read #\n").unwrap();
        assert!(!open.allows(None, "c", Want::Subscribe, "$SYS/#"));
    }

    #[test]
    fn shared_subscriptions_are_checked_by_their_filter() {
        let acl = acl();
        assert!(acl.allows(Some("alice"), "c", Want::Subscribe, "$share/g/alice/x"));
        assert!(!acl.allows(Some("alice"), "c", Want::Subscribe, "$share/g/bob/x"));
    }

    #[test]
    fn malformed_lines_are_reported() {
        for text in ["bogus x", "user", "topic read", "topic"] {
            let err = Acl::parse(text).unwrap_err();
            assert!(err.to_string().starts_with("line 1:"), "{text}: {err}");
        }
    }
}
