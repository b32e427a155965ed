//! Reading a Hystrix stream: server-sent events as Hystrix writes them.
//!
//! Lines arrive in arbitrary chunks. A `data:` line carries one JSON
//! object; a blank line ends an event; `ping:` lines (Hystrix's keep-alive)
//! and `:` comments carry nothing. Multi-line `data:` fields are joined
//! with `\n`, as the SSE specification says.

use serde_json::Value;

/// What one complete event held.
#[derive(Debug, PartialEq)]
pub enum Item {
    /// A JSON object.
    Object(Value),
    /// A keep-alive (`ping:`).
    Ping,
    /// A `data:` payload that is not a JSON object.
    Malformed(String),
}

/// An incremental parser: feed it bytes, take out items.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    data: Option<String>,
}

/// The longest line accepted; a stream sending more is not a Hystrix stream.
pub const MAX_LINE: usize = 1 << 20;

impl Parser {
    /// Feeds `chunk`, returning the items it completed. Lines longer than
    /// [`MAX_LINE`] are reported as malformed and dropped.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                self.line_done(&String::from_utf8_lossy(line), &mut out);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.line.clear();
                out.push(Item::Malformed("line too long".into()));
            }
        }
        out
    }

    fn line_done(&mut self, line: &str, out: &mut Vec<Item>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(match serde_json::from_str::<Value>(&data) {
                    Ok(v) if v.is_object() => Item::Object(v),
                    _ => Item::Malformed(data),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "ping" => out.push(Item::Ping),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: {\"a\"").is_empty());
        let items = p.feed(b":1}\n\nping: \n\ndata: nope\n\n: comment\n");
        assert_eq!(
            items,
            vec![
                Item::Object(serde_json::json!({"a":1})),
                Item::Ping,
                Item::Malformed("nope".into())
            ]
        );
    }
}
