//! Reading a configuration file and reporting what is wrong with it.
//!
//! Every error names the file, and where it can the line and the dotted key
//! (`limits.max_packet_size`, `listeners[1].bind`): an operator with a broken config
//! should not have to guess which of forty settings is meant. serde stops at the first
//! schema error; the range and cross-field checks in `validate` report all problems.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::Config;

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing, unreadable or not UTF-8.
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not TOML, or does not fit the schema (unknown key, wrong type,
    /// missing field). Serde stops at the first such error.
    #[error("{origin}:{}{}{message}", position_text(*position), key_text(key.as_deref()))]
    Parse {
        origin: String,
        /// 1-based line and column, when the parser knows them.
        position: Option<(usize, usize)>,
        key: Option<String>,
        message: String,
    },
    /// The file parsed but breaks range or cross-field rules; every problem is listed.
    #[error("{}", invalid_text(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One broken rule, named by its dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key, e.g. `limits.max_packet_size` or `listeners[0].bind`.
    pub key: String,
    pub message: String,
    /// 1-based line of the key in the file; `None` when the value is a default or came
    /// from the command line.
    pub line: Option<usize>,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn position_text(position: Option<(usize, usize)>) -> String {
    match position {
        Some((line, column)) => format!("{line}:{column}: "),
        None => " ".to_string(),
    }
}

fn key_text(key: Option<&str>) -> String {
    key.map(|key| format!("{key}: ")).unwrap_or_default()
}

fn invalid_text(origin: &str, problems: &[Problem]) -> String {
    let count = match problems.len() {
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    };
    let mut text = format!("{origin}: invalid configuration, {count}:");
    for problem in problems {
        let line = problem
            .line
            .map(|line| format!(":{line}"))
            .unwrap_or_default();
        text.push_str(&format!("\n  {origin}{line}: {problem}"));
    }
    text
}

impl Config {
    /// Reads, parses and validates a configuration file. Keys the file leaves out keep
    /// their defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors (usually the
    /// file path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| parse_error(text, origin, &err))?;
        let mut problems = config.problems();
        if problems.is_empty() {
            return Ok(config);
        }
        let (document, _) = DeTable::parse_recoverable(text);
        for problem in &mut problems {
            problem.line = span_of_key(document.get_ref(), &problem.key)
                .map(|span| position(text, span.start).0);
            if problem.line.is_none() {
                // A key absent from the text holds its default: say so, or the reader
                // searches the file for a line that is not there.
                problem
                    .message
                    .push_str(" (not set in the file: this is the default)");
            }
        }
        Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        })
    }

    /// Runs every check of `problems()`, for a configuration built or changed in code
    /// (e.g. by command-line flags); `origin` names where the values came from.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }
}

fn parse_error(text: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let key = span.as_ref().and_then(|span| {
        let (document, _) = DeTable::parse_recoverable(text);
        let mut path = Vec::new();
        if key_at(document.get_ref(), span.start, &mut path) {
            Some(join_path(&path))
        } else {
            key_outside_document(text, span)
        }
    });
    ConfigError::Parse {
        origin: origin.to_string(),
        position: span.map(|span| position(text, span.start)),
        message: readable_message(err.message(), key.as_deref()),
        key,
    }
}

/// Names a key the parsed document does not hold, such as the second of two duplicate
/// keys: the bare key under the error, prefixed by the nearest `[table]` header above it.
fn key_outside_document(text: &str, span: &Range<usize>) -> Option<String> {
    let token = text.get(span.clone())?.trim();
    let is_bare_key = |key: &str| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !is_bare_key(token) {
        return None;
    }
    let header = text
        .get(..span.start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|line| {
            line.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
        });
    match header {
        Some(table) if table != token && is_bare_key(table) => Some(format!("{table}.{token}")),
        _ => Some(token.to_string()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|byte| **byte == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |index| index + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn join_path(path: &[Segment]) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) if text.is_empty() => text.push_str(key),
            Segment::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Segment::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Finds the deepest key or array element whose span covers `offset` and leaves its path
/// in `path`. Children are searched before their parent because a table's own span
/// covers only its `[header]`, not the keys below it.
fn key_at(table: &DeTable<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    for (key, value) in table.iter() {
        path.push(Segment::Key(key.get_ref().to_string()));
        if value_at(value.get_ref(), offset, path)
            || contains(&key.span(), offset)
            || contains(&value.span(), offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn value_at(value: &DeValue<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    match value {
        DeValue::Table(table) => key_at(table, offset, path),
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                path.push(Segment::Index(index));
                if value_at(element.get_ref(), offset, path) || contains(&element.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

/// The span of the key a dotted path names (`listeners[1].bind`), if the text has it.
fn span_of_key(table: &DeTable<'_>, dotted: &str) -> Option<Range<usize>> {
    let mut current_table = table;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (key, value) = current_table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == name)?;
        let (span, value) = match (index, value.get_ref()) {
            (Some(index), DeValue::Array(array)) => {
                let element = array.get(index)?;
                (element.span(), element.get_ref())
            }
            (Some(_), _) => return None,
            (None, value) => (key.span(), value),
        };
        if parts.peek().is_none() {
            return Some(span);
        }
        match value {
            DeValue::Table(table) => current_table = table,
            _ => return None,
        }
    }
    None
}

/// Rewrites serde's messages in the file's own vocabulary: "key" instead of "field",
/// the section the key was found in, and a suggestion for a likely typo.
fn readable_message(message: &str, key: Option<&str>) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, expected)) = rest.split_once('`') {
            return unknown_key_message(name, expected, key);
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((value, expected)) = rest.split_once("`, expected ") {
            return format!(
                "unknown value '{value}'; expected {}",
                expected.replace('`', "\"")
            );
        }
    }
    let mut message = message.to_string();
    for (serde_name, readable) in [
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
    ] {
        if message.ends_with(serde_name) {
            message.truncate(message.len() - serde_name.len());
            message.push_str(readable);
        }
    }
    message
}

fn unknown_key_message(name: &str, expected: &str, key: Option<&str>) -> String {
    let section = match key.and_then(|key| key.rsplit_once('.')) {
        Some((parent, _)) => match parent.rsplit_once('[') {
            Some((array, _)) => format!("in [[{array}]]"),
            None => format!("in [{parent}]"),
        },
        None => "at the top level".to_string(),
    };
    let known: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|candidate| !candidate.is_empty())
        .collect();
    let closest = known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .min();
    match closest {
        Some((distance, candidate)) if distance <= 2.max(name.len() / 4) => {
            format!("unknown key '{name}' {section}; did you mean '{candidate}'?")
        }
        Some(_) => format!(
            "unknown key '{name}' {section}; known keys: {}",
            known.join(", ")
        ),
        None => format!("unknown key '{name}' {section}"),
    }
}

/// Levenshtein distance; keys are short, so the quadratic table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ConfigError {
        match Config::from_toml_str(text, "test.toml") {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn unknown_key_names_file_line_key_and_suggests_the_right_one() {
        let err = parse_err("[limits]\nmax_pakcet_size = 3\n");
        assert_eq!(
            err.to_string(),
            "test.toml:2:1: limits.max_pakcet_size: unknown key 'max_pakcet_size' in [limits]; \
             did you mean 'max_packet_size'?"
        );
    }

    #[test]
    fn unknown_key_far_from_any_known_one_lists_the_known_keys() {
        let err = parse_err("[log]\ncolour = true\n");
        assert_eq!(
            err.to_string(),
            "test.toml:2:1: log.colour: unknown key 'colour' in [log]; known keys: level, format"
        );
    }

    #[test]
    fn unknown_top_level_section() {
        let err = parse_err("[limit]\nmax_packet_size = 300\n");
        assert_eq!(
            err.to_string(),
            "test.toml:1:2: limit: unknown key 'limit' at the top level; did you mean 'limits'?"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse_err("\n[limits]\nmax_packet_size = \"big\"\n");
        assert_eq!(
            err.to_string(),
            "test.toml:3:19: limits.max_packet_size: invalid type: string \"big\", \
             expected an integer from 0 to 4294967295"
        );
    }

    #[test]
    fn negative_value_names_the_key() {
        let err = parse_err("[limits]\nreceive_maximum = -1\n");
        assert_eq!(
            err.to_string(),
            "test.toml:2:19: limits.receive_maximum: invalid value: integer `-1`, \
             expected an integer from 0 to 65535"
        );
    }

    #[test]
    fn errors_inside_an_array_of_tables_name_the_element() {
        let text = "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1\"\n\
                    [[listeners]]\ntype = \"tcp\"\nbind = \"nowhere\"\n";
        let err = parse_err(text);
        assert_eq!(
            err.to_string(),
            "test.toml:6:8: listeners[1].bind: invalid socket address syntax"
        );
        let err = parse_err("[[listeners]]\ntype = \"tcp\"\n");
        assert_eq!(
            err.to_string(),
            "test.toml:1:1: listeners[0]: missing field `bind`"
        );
        let err = parse_err("[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1\"\nport = 3\n");
        assert_eq!(
            err.to_string(),
            "test.toml:4:1: listeners[0].port: unknown key 'port' in [[listeners]]; \
             known keys: type, bind, allow_anonymous, max_connections, max_connection_rate, \
             proxy_protocol, proxy_protocol_trusted, path, tls"
        );
    }

    #[test]
    fn duplicate_keys_are_named() {
        let err = parse_err("[limits]\nmax_packet_size = 300\nmax_packet_size = 400\n");
        assert_eq!(
            err.to_string(),
            "test.toml:3:1: limits.max_packet_size: duplicate key"
        );
        let err = parse_err("[limits]\n[limits]\n");
        assert_eq!(err.to_string(), "test.toml:2:2: limits: duplicate key");
    }

    #[test]
    fn unknown_enum_values_list_the_known_ones() {
        let err = parse_err("[[listeners]]\ntype = \"udp\"\nbind = \"127.0.0.1:1\"\n");
        assert_eq!(
            err.to_string(),
            "test.toml:2:8: listeners[0].type: unknown value 'udp'; expected one of \"tcp\", \"tls\", \"ws\", \"wss\""
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse_err("[limits\nmax_packet_size = 3\n");
        let text = err.to_string();
        assert!(text.starts_with("test.toml:1:8: "), "{text}");
        assert!(
            matches!(err, ConfigError::Parse { key: None, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn validation_problems_carry_the_line_of_their_key() {
        let text = "[limits]\nmax_packet_size = 64\nreceive_maximum = 0\n";
        let err = parse_err(text);
        assert_eq!(
            err.to_string(),
            "test.toml: invalid configuration, 2 problems:\n  \
             test.toml:2: limits.max_packet_size: 64 bytes is out of range; allowed: 128 to 268435455 bytes\n  \
             test.toml:3: limits.receive_maximum: 0 is too small; minimum: 1"
        );
    }

    #[test]
    fn problems_about_default_values_have_no_line() {
        // The metrics endpoint keeps its default address, now taken by a listener.
        let err = parse_err("[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:9883\"\n");
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected validation problems, got {err:?}");
        };
        let lines: Vec<_> = problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(lines, [("metrics.bind", None)]);
        assert!(problems[0]
            .message
            .ends_with("(not set in the file: this is the default)"));
    }

    #[test]
    fn listener_problems_point_at_the_array_element() {
        let text = "[[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1\"\n\n\
                    [[listeners]]\ntype = \"tcp\"\nbind = \"127.0.0.1:1\"\n";
        let ConfigError::Invalid { problems, .. } = parse_err(text) else {
            panic!("expected validation problems");
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "listeners[1].bind");
        assert_eq!(problems[0].line, Some(7));
    }

    #[test]
    fn missing_file_names_the_path_and_the_cause() {
        let err = match Config::from_file("/nonexistent/fleetmq.toml") {
            Ok(_) => panic!("a missing file must not load"),
            Err(err) => err,
        };
        assert_eq!(
            err.to_string(),
            "/nonexistent/fleetmq.toml: cannot read the configuration file"
        );
        let source = std::error::Error::source(&err).map(|s| s.to_string());
        assert!(source.is_some_and(|s| s.contains("No such file")));
    }

    #[test]
    fn a_file_that_is_not_utf8_is_a_read_error() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"[log]\nlevel = \"\xff\"\n").unwrap();
        let err = Config::from_file(file.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }

    #[test]
    fn position_counts_characters_not_bytes() {
        assert_eq!(position("a\n\u{e9}\u{e9}x", 6), (2, 3));
        assert_eq!(position("abc", 99), (1, 4));
        assert_eq!(position("", 0), (1, 1));
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("max_pakcet_size", "max_packet_size"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
