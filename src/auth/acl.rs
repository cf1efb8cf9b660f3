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
//! The decision for one topic name is Mosquitto 2's: the client's own rules (its `user`
//! section, or the anonymous rules) are tried first, deny rules before the others; a
//! matching deny refuses, a matching rule with the wanted access allows; then the
//! patterns, in the same way; what no rule allows is denied. A client id or username
//! with `+` or `#` gets nothing from the patterns.
//!
//! Reading is checked per delivered message (`SessionRules`, compiled once per session
//! and ACL version, then matched without allocating). A SUBSCRIBE is refused only when
//! its filter could never deliver anything: a deny rule covers all of it, or no rule
//! granting read access overlaps it. `#` under `topic readwrite #` + `topic deny
//! secret/#` is granted, and `secret/...` messages are not delivered.

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
                | (Access::Read, Want::Read | Want::Subscribe)
                | (Access::Write, Want::Publish)
        )
    }
}

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Publish to a topic name.
    Publish,
    /// Receive a message published to a topic name.
    Read,
    /// Subscribe to a topic filter: allowed when some topic it matches may be read.
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

    /// Whether the client may publish to or read the topic name, or subscribe to the
    /// filter, `topic`. `username` is `None` for anonymous clients.
    pub fn allows(&self, username: Option<&str>, client_id: &str, want: Want, topic: &str) -> bool {
        if want == Want::Subscribe {
            return self.session_rules(username, client_id).allows(want, topic);
        }
        // A single decision (a PUBLISH): nothing is compiled, patterns are substituted
        // only when the client's own rules do not decide.
        if let Some(decided) = decide_in(self.own_rules(username), want, topic) {
            return decided;
        }
        if self.patterns.is_empty() || self.patterns_blocked(username, client_id) {
            return false;
        }
        let patterns: Vec<Rule> = self
            .patterns
            .iter()
            .filter_map(|rule| substitute(rule, username, client_id))
            .collect();
        decide_in(&patterns, want, topic).unwrap_or(false)
    }

    /// The rules of the client's `user` section, or the anonymous rules.
    fn own_rules(&self, username: Option<&str>) -> &[Rule] {
        match username {
            Some(name) => self.users.get(name).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        }
    }

    /// Mosquitto refuses patterns to a client id or username holding `+` or `#`, which
    /// would turn a pattern into a wider filter.
    fn patterns_blocked(&self, username: Option<&str>, client_id: &str) -> bool {
        let dangerous = |value: &str| value.contains(['+', '#']);
        !self.patterns.is_empty() && (dangerous(client_id) || username.is_some_and(dangerous))
    }

    /// The rules that apply to one client, its patterns substituted.
    pub fn session_rules(&self, username: Option<&str>, client_id: &str) -> SessionRules {
        let patterns_blocked = self.patterns_blocked(username, client_id);
        let patterns: Vec<Rule> = if patterns_blocked {
            Vec::new()
        } else {
            self.patterns
                .iter()
                .filter_map(|rule| substitute(rule, username, client_id))
                .collect()
        };
        SessionRules {
            own: self.own_rules(username).to_vec(),
            patterns,
            patterns_blocked,
        }
    }
}

/// One client's rules, ready to be matched without allocating: its own rules, then the
/// substituted patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRules {
    own: Vec<Rule>,
    patterns: Vec<Rule>,
    /// The client id or username holds `+` or `#`: patterns deny everything.
    patterns_blocked: bool,
}

impl SessionRules {
    /// See [`Acl::allows`].
    pub fn allows(&self, want: Want, topic: &str) -> bool {
        match want {
            Want::Subscribe => self.may_ever_read(topic),
            Want::Publish | Want::Read => self.decide(want, topic),
        }
    }

    /// Mosquitto's decision for a topic name.
    fn decide(&self, want: Want, topic: &str) -> bool {
        if let Some(decided) = decide_in(&self.own, want, topic) {
            return decided;
        }
        if self.patterns_blocked {
            return false;
        }
        decide_in(&self.patterns, want, topic).unwrap_or(false)
    }

    /// Whether some topic `filter` matches could be read: no deny rule covers all of it
    /// and a rule granting read overlaps it, in the order `decide` looks at them.
    fn may_ever_read(&self, filter: &str) -> bool {
        // A shared subscription reads what its inner filter matches.
        let filter = match crate::topic::parse_shared(filter) {
            Ok(Some((_, inner))) => inner,
            _ => filter,
        };
        if let Some(decided) = may_ever_read_in(&self.own, filter) {
            return decided;
        }
        !self.patterns_blocked && may_ever_read_in(&self.patterns, filter).unwrap_or(false)
    }
}

/// What `rules` say about `topic`: a matching deny rule refuses whatever its place in
/// the file (Mosquitto puts them first), otherwise a matching rule with the wanted
/// access allows; `None` when no rule decides. One pass; rules that could not change
/// the outcome are not matched.
fn decide_in(rules: &[Rule], want: Want, topic: &str) -> Option<bool> {
    let mut granted = false;
    for rule in rules {
        let deny = rule.access == Access::Deny;
        let relevant = deny || (!granted && rule.access.grants(want));
        if relevant && filter_matches(&rule.topic, topic) {
            if deny {
                return Some(false);
            }
            granted = true;
        }
    }
    granted.then_some(true)
}

fn may_ever_read_in(rules: &[Rule], filter: &str) -> Option<bool> {
    let dollar = filter.starts_with('$');
    let relevant = rules
        .iter()
        .filter(|rule| !dollar || rule.topic.starts_with('$'));
    for rule in relevant.clone() {
        if rule.access == Access::Deny && covers(&rule.topic, filter) {
            return Some(false);
        }
    }
    relevant
        .filter(|rule| rule.access.grants(Want::Read))
        .any(|rule| intersects(&rule.topic, filter))
        .then_some(true)
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

fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

/// A first-level wildcard never matches a `$` topic (MQTT 4.7.2).
fn dollar_mismatch(a: &str, b: &str) -> bool {
    fn first(text: &str) -> &str {
        text.split('/').next().unwrap_or("")
    }
    let (x, y) = (first(a), first(b));
    (is_wildcard(x) && y.starts_with('$')) || (is_wildcard(y) && x.starts_with('$'))
}

/// Whether the topic name `topic` matches `filter`. Walks the levels without recursion
/// or allocation, so a deep topic costs time in proportion, never stack.
fn filter_matches(filter: &str, topic: &str) -> bool {
    // Only a filter naming it reaches a `$` topic (a first-level wildcard never does).
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let (mut filter, mut topic) = (filter.split('/'), topic.split('/'));
    loop {
        match (filter.next(), topic.next()) {
            // `a/#` matches `a` too.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic `filter` matches is also matched by `rule`.
fn covers(rule: &str, filter: &str) -> bool {
    if dollar_mismatch(rule, filter) {
        return false;
    }
    let (mut rule, mut filter) = (rule.split('/'), filter.split('/'));
    loop {
        match (rule.next(), filter.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(r), Some(f)) if r == f && !is_wildcard(r) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both `a` and `b`.
fn intersects(a: &str, b: &str) -> bool {
    if dollar_mismatch(a, b) {
        return false;
    }
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
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
        // Filters that overlap the deny rule are granted; its topics are not read.
        assert!(acl.allows(None, "c", Want::Subscribe, "public/#"));
        assert!(acl.allows(None, "c", Want::Subscribe, "public/+"));
        assert!(acl.allows(None, "c", Want::Read, "public/news"));
        assert!(!acl.allows(None, "c", Want::Read, "public/secret"));
        // A filter the deny rule covers could never deliver anything.
        assert!(!acl.allows(None, "c", Want::Subscribe, "public/secret"));
    }

    #[test]
    fn one_deny_rule_under_readwrite_everything_behaves_as_in_mosquitto() {
        let acl = Acl::parse("topic readwrite #\ntopic deny secret/#\n").unwrap();
        for filter in ["#", "+/+", "a/#", "+/x/#", "+"] {
            assert!(acl.allows(None, "c", Want::Subscribe, filter), "{filter}");
        }
        for filter in ["secret/#", "secret/+", "secret", "secret/+/x/#"] {
            assert!(!acl.allows(None, "c", Want::Subscribe, filter), "{filter}");
        }
        assert!(acl.allows(None, "c", Want::Read, "a/b"));
        assert!(!acl.allows(None, "c", Want::Read, "secret/b"));
        assert!(!acl.allows(None, "c", Want::Read, "secret"));
        assert!(!acl.allows(None, "c", Want::Publish, "secret/b"));
        assert!(!acl.allows(None, "c", Want::Read, "$SYS/broker/uptime"));
    }

    #[test]
    fn own_rules_decide_before_patterns() {
        // Mosquitto tries the client's own rules first, the patterns only after them.
        let acl = Acl::parse("topic read a/#\npattern deny a/%c\npattern read b/%c\n").unwrap();
        assert!(acl.allows(None, "c1", Want::Read, "a/c1"));
        assert!(acl.allows(None, "c1", Want::Read, "b/c1"));
        assert!(!acl.allows(None, "c1", Want::Read, "b/c2"));
        let rules = acl.session_rules(None, "c1");
        assert!(rules.allows(Want::Read, "a/c1"));
        assert!(rules.allows(Want::Read, "b/c1"));
        assert!(!rules.allows(Want::Read, "b/c2"));
        assert!(rules.allows(Want::Subscribe, "+/c1"));
    }

    #[test]
    fn deep_topics_are_matched_without_recursion() {
        let acl = Acl::parse("topic read a/#\ntopic deny a/+/x\n").unwrap();
        let deep = vec!["a"; 40_000].join("/");
        assert!(acl.allows(None, "c", Want::Read, &deep));
        assert!(acl.allows(None, "c", Want::Subscribe, &deep));
    }

    #[test]
    fn user_rules_access_words_and_deny() {
        let acl = acl();
        assert!(acl.allows(Some("alice"), "c", Want::Publish, "alice/a/b"));
        assert!(acl.allows(Some("alice"), "c", Want::Subscribe, "alice/inbox/#"));
        assert!(acl.allows(Some("alice"), "c", Want::Subscribe, "alice/#"));
        assert!(!acl.allows(Some("alice"), "c", Want::Subscribe, "alice/private/#"));
        assert!(!acl.allows(Some("alice"), "c", Want::Read, "alice/private/x"));
        assert!(acl.allows(Some("alice"), "c", Want::Publish, "sensors/1/temp"));
        assert!(!acl.allows(Some("alice"), "c", Want::Publish, "sensors/1/hum"));
        assert!(!acl.allows(Some("alice"), "c", Want::Publish, "alice/private/x"));
        assert!(acl.allows(Some("alice"), "c", Want::Subscribe, "#"));
        assert!(!acl.allows(Some("alice"), "c", Want::Subscribe, "bob/#"));
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
