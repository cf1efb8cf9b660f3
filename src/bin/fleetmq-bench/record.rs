//! The result of one scenario run: an ordered list of named values printed as one
//! line of flat JSON, and the parser that reads those lines back for `report`.
//!
//! The format is flat on purpose (strings and numbers only) so that shell tools,
//! `jq`, and the report command all read it without a JSON library.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    fields: Vec<(String, Value)>,
}

impl Record {
    pub fn new(case: &str, broker: &str) -> Record {
        let mut record = Record::default();
        record.text("case", case);
        record.text("broker", broker);
        record
    }

    pub fn text(&mut self, key: &str, value: &str) -> &mut Record {
        self.fields
            .push((key.to_owned(), Value::Text(value.to_owned())));
        self
    }

    pub fn number(&mut self, key: &str, value: f64) -> &mut Record {
        self.fields.push((key.to_owned(), Value::Number(value)));
        self
    }

    /// Adds the value when it is measurable; absent figures stay out of the line.
    pub fn maybe(&mut self, key: &str, value: Option<f64>) -> &mut Record {
        if let Some(value) = value {
            self.number(key, value);
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_text(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Text(text) => Some(text),
            Value::Number(_) => None,
        }
    }

    pub fn numbers(&self) -> impl Iterator<Item = (&str, f64)> {
        self.fields.iter().filter_map(|(k, v)| match v {
            Value::Number(n) => Some((k.as_str(), *n)),
            Value::Text(_) => None,
        })
    }

    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_string(&mut out, key);
            out.push(':');
            match value {
                Value::Text(text) => write_json_string(&mut out, text),
                // Rates and microseconds: three decimals are plenty and keep lines short.
                Value::Number(n) if n.is_finite() => {
                    let rounded = (n * 1000.0).round() / 1000.0;
                    let _ = write!(out, "{rounded}");
                }
                Value::Number(_) => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }

    /// Parses one line written by `to_json`. `null` values are skipped.
    pub fn parse(line: &str) -> Option<Record> {
        let mut parser = Parser {
            rest: line.trim().as_bytes(),
        };
        parser.eat(b'{')?;
        let mut record = Record::default();
        if parser.peek() == Some(b'}') {
            parser.eat(b'}')?;
            return parser.rest.is_empty().then_some(record);
        }
        loop {
            let key = parser.string()?;
            parser.eat(b':')?;
            match parser.peek()? {
                b'"' => record.fields.push((key, Value::Text(parser.string()?))),
                b'n' => parser.literal(b"null")?,
                _ => record.fields.push((key, Value::Number(parser.number()?))),
            }
            match parser.peek()? {
                b',' => parser.eat(b',')?,
                b'}' => {
                    parser.eat(b'}')?;
                    return parser.rest.is_empty().then_some(record);
                }
                _ => return None,
            }
        }
    }
}

fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    rest: &'a [u8],
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while let [b' ' | b'\t', tail @ ..] = self.rest {
            self.rest = tail;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.rest.first().copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.rest = &self.rest[1..])
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.skip_space();
        let tail = self.rest.strip_prefix(word)?;
        self.rest = tail;
        Some(())
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut bytes = Vec::new();
        loop {
            let (&byte, tail) = self.rest.split_first()?;
            self.rest = tail;
            match byte {
                b'"' => return String::from_utf8(bytes).ok(),
                b'\\' => {
                    let (&escaped, tail) = self.rest.split_first()?;
                    self.rest = tail;
                    match escaped {
                        b'"' | b'\\' | b'/' => bytes.push(escaped),
                        b'n' => bytes.push(b'\n'),
                        b't' => bytes.push(b'\t'),
                        b'u' => {
                            let hex = std::str::from_utf8(self.rest.get(..4)?).ok()?;
                            let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            self.rest = &self.rest[4..];
                            let mut utf8 = [0; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                        }
                        _ => return None,
                    }
                }
                _ => bytes.push(byte),
            }
        }
    }

    fn number(&mut self) -> Option<f64> {
        self.skip_space();
        let len = self
            .rest
            .iter()
            .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(self.rest.len());
        let text = std::str::from_utf8(&self.rest[..len]).ok()?;
        self.rest = &self.rest[len..];
        text.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut record = Record::new("fanin-q1", "fleet\"mq\\");
        record
            .number("delivered_per_s", 123456.789_4)
            .number("qos", 1.0)
            .maybe("absent", None)
            .number("nan", f64::NAN)
            .text("note", "tab\there");
        let json = record.to_json();
        assert_eq!(
            json,
            r#"{"case":"fanin-q1","broker":"fleet\"mq\\","delivered_per_s":123456.789,"qos":1,"nan":null,"note":"tab\u0009here"}"#
        );
        let parsed = Record::parse(&json).unwrap();
        assert_eq!(parsed.get_text("broker"), Some("fleet\"mq\\"));
        assert_eq!(parsed.get_text("note"), Some("tab\there"));
        assert_eq!(
            parsed.get("delivered_per_s"),
            Some(&Value::Number(123456.789))
        );
        assert_eq!(parsed.get("nan"), None);
        let numbers: Vec<_> = parsed.numbers().map(|(k, _)| k.to_owned()).collect();
        assert_eq!(numbers, ["delivered_per_s", "qos"]);
    }

    #[test]
    fn parses_spaced_json_from_other_tools() {
        let parsed = Record::parse(r#" { "case" : "x", "v" : -1.5e3 , "s":"a\/b\n" } "#).unwrap();
        assert_eq!(parsed.get("v"), Some(&Value::Number(-1500.0)));
        assert_eq!(parsed.get_text("s"), Some("a/b\n"));
        assert_eq!(Record::parse("{}"), Some(Record::default()));
    }

    #[test]
    fn rejects_what_it_did_not_write() {
        for bad in [
            "",
            "not json",
            "{\"a\":1",
            "{\"a\" 1}",
            "{\"a\":1}}",
            "{\"a\":[1]}",
            "{\"a\":\"unterminated}",
            "{\"a\":\"\\q\"}",
            "{\"a\":1,}",
            "{\"a\":\"\\u12\"}",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad}");
        }
    }
}
