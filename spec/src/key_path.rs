//! Dotted key paths into a cloud-config document (`brig.console.autologin`,
//! `users[1].name`), as `brigctl config get|set` and problem reports name
//! them; and where each path is in the YAML source, for `validate`'s line
//! and column.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::problem::Problem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// `a.b[2].c` as segments.
pub fn parse(path: &str) -> Result<Vec<Segment>, Problem> {
    let bad = |problem: String| Problem::new(path.to_string(), problem);
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if name.is_empty() && segments.is_empty() || name.is_empty() && rest.is_empty() {
            return Err(bad("an empty key".into()));
        }
        if !name.is_empty() {
            segments.push(Segment::Key(name.to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((index, after)) = inner.split_once(']') else {
                return Err(bad("an unclosed [".into()));
            };
            let index = index
                .parse()
                .map_err(|_| bad(format!("{index:?} is not an index")))?;
            segments.push(Segment::Index(index));
            rest = after;
        }
        if !rest.is_empty() {
            return Err(bad(format!("unexpected {rest:?}")));
        }
    }
    Ok(segments)
}

/// The value at `path`.
pub fn get<'a>(document: &'a Map<String, Value>, path: &str) -> Result<Option<&'a Value>, Problem> {
    let segments = parse(path)?;
    let mut at: Option<&Value> = None;
    for (i, segment) in segments.iter().enumerate() {
        at = match (i, at, segment) {
            (0, _, Segment::Key(k)) => document.get(k),
            (_, Some(Value::Object(map)), Segment::Key(k)) => map.get(k),
            (_, Some(Value::Array(items)), Segment::Index(n)) => items.get(*n),
            _ => None,
        };
        if at.is_none() {
            return Ok(None);
        }
    }
    Ok(at)
}

/// Sets `path` to `value`, making the mappings on the way. Indices must
/// name an existing list item.
pub fn set(document: &mut Map<String, Value>, path: &str, value: Value) -> Result<(), Problem> {
    let at_path = |problem: String| Problem::new(path.to_string(), problem);
    let segments = parse(path)?;
    let Some((Segment::Key(first), rest)) = segments.split_first() else {
        return Err(at_path("must start with a key".into()));
    };
    let mut at = document.entry(first.clone()).or_insert(Value::Null);
    for segment in rest {
        at = match segment {
            Segment::Key(k) => {
                if !at.is_object() {
                    *at = Value::Object(Map::new());
                }
                at.as_object_mut()
                    .map(|m| m.entry(k.clone()).or_insert(Value::Null))
                    .ok_or_else(|| at_path("not a mapping".into()))?
            }
            Segment::Index(n) => at
                .as_array_mut()
                .and_then(|items| items.get_mut(*n))
                .ok_or_else(|| at_path(format!("no list item {n}")))?,
        };
    }
    *at = value;
    Ok(())
}

/// Setting `path` in settings merged over `document` replaces what
/// `document` holds on the way wherever that is not a mapping (a merge keeps
/// mappings key by key and replaces everything else): `users.shell` over a
/// list of users would replace the whole list. The part that would be lost,
/// and what it is; None when nothing would be.
pub fn replaces(document: &Map<String, Value>, path: &str) -> Option<(String, &'static str)> {
    let segments = parse(path).ok()?;
    let mut at: Option<&Value> = None;
    let mut walked = String::new();
    for (i, pair) in segments.windows(2).enumerate() {
        let next = match (i, at, &pair[0]) {
            (0, _, Segment::Key(k)) => document.get(k),
            (_, Some(Value::Object(map)), Segment::Key(k)) => map.get(k),
            (_, Some(Value::Array(items)), Segment::Index(n)) => items.get(*n),
            _ => None,
        }?;
        walked += &match &pair[0] {
            Segment::Key(k) if i == 0 => k.clone(),
            Segment::Key(k) => format!(".{k}"),
            Segment::Index(n) => format!("[{n}]"),
        };
        let kind = match next {
            Value::Object(_) | Value::Null => None,
            Value::Array(_) => Some("a list"),
            _ => Some("a value"),
        };
        if let (Some(kind), Segment::Key(_)) = (kind, &pair[1]) {
            return Some((walked, kind));
        }
        at = Some(next);
    }
    None
}

/// Removes `path`; whether it was there.
pub fn unset(document: &mut Map<String, Value>, path: &str) -> Result<bool, Problem> {
    let segments = parse(path)?;
    let Some((last, parents)) = segments.split_last() else {
        return Ok(false);
    };
    let mut at: Option<&mut Value> = None;
    let mut root = Some(document);
    for segment in parents {
        let next = match (root.take(), at.take(), segment) {
            (Some(map), _, Segment::Key(k)) => map.get_mut(k),
            (None, Some(Value::Object(map)), Segment::Key(k)) => map.get_mut(k),
            (None, Some(Value::Array(items)), Segment::Index(n)) => items.get_mut(*n),
            _ => None,
        };
        match next {
            Some(v) => at = Some(v),
            None => return Ok(false),
        }
    }
    Ok(match (root, at, last) {
        (Some(map), _, Segment::Key(k)) => map.remove(k).is_some(),
        (None, Some(Value::Object(map)), Segment::Key(k)) => map.remove(k).is_some(),
        (None, Some(Value::Array(items)), Segment::Index(n)) if *n < items.len() => {
            items.remove(*n);
            true
        }
        _ => false,
    })
}

/// A value given on a command line, read as YAML: `true`, `10`, `[a, b]`,
/// `{k: v}`; anything else (or a YAML error) is the text itself.
pub fn parse_value(text: &str) -> Value {
    match crate::cloud_config::load_yaml(text, &mut Vec::new()) {
        Ok(Value::Null)
            if !text.trim().is_empty() && text.trim() != "null" && text.trim() != "~" =>
        {
            Value::String(text.to_string())
        }
        Ok(value) => value,
        Err(_) => Value::String(text.to_string()),
    }
}

/// Where each key path starts in YAML `text`: (line, column), both from 1.
/// Mapping entries are located at their key, list items at the item.
pub fn locations(text: &str) -> BTreeMap<String, (usize, usize)> {
    use serde_saphyr::granit_parser::{Event, Parser};

    enum Frame {
        Map { path: String, key: Option<String> },
        List { path: String, index: usize },
    }
    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }
    /// The path of the value that comes next in the innermost frame.
    fn value_path(stack: &[Frame]) -> Option<String> {
        match stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { path, key: Some(k) }) => Some(join(path, k)),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::List { path, index }) => Some(format!("{path}[{index}]")),
        }
    }
    /// A value is done: the frame moves on.
    fn done(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::List { index, .. }) => *index += 1,
            None => {}
        }
    }

    let mut found = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for next in Parser::new_from_str(text) {
        let Ok((event, span)) = next else { break };
        let at = (span.start.line(), span.start.col() + 1);
        match event {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                }) = stack.last_mut()
                {
                    found.insert(join(path, &value), at);
                    *key = Some(value.to_string());
                } else {
                    if let Some(Frame::List { path, index }) = stack.last() {
                        found.insert(format!("{path}[{index}]"), at);
                    }
                    done(&mut stack);
                }
            }
            Event::Alias(_) => done(&mut stack),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = value_path(&stack).unwrap_or_default();
                if matches!(stack.last(), Some(Frame::List { .. })) {
                    found.insert(path.clone(), at);
                }
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::List { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                done(&mut stack);
            }
            _ => {}
        }
    }
    found
}

/// The location of `path`, or of the nearest enclosing path that has one.
pub fn locate(locations: &BTreeMap<String, (usize, usize)>, path: &str) -> Option<(usize, usize)> {
    let mut path = path.to_string();
    loop {
        if let Some(at) = locations.get(&path) {
            return Some(*at);
        }
        let cut = path.rfind(['.', '['])?;
        path.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_get_set_and_unset() {
        let mut doc = json!({"users": [{"name": "a"}, {"name": "b"}], "brig": {"console": {}}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(get(&doc, "users[1].name").unwrap(), Some(&json!("b")));
        assert_eq!(get(&doc, "users[7].name").unwrap(), None);
        assert_eq!(get(&doc, "hostname").unwrap(), None);
        set(&mut doc, "brig.console.autologin", json!(true)).unwrap();
        set(&mut doc, "brig.sysctl.vm", json!(1)).unwrap();
        set(&mut doc, "users[0].shell", json!("/bin/sh")).unwrap();
        assert_eq!(doc["brig"]["console"]["autologin"], json!(true));
        assert_eq!(doc["users"][0]["shell"], "/bin/sh");
        assert!(set(&mut doc, "users[5].shell", json!("x")).is_err());
        assert_eq!(
            replaces(&doc, "users.shell"),
            Some(("users".into(), "a list"))
        );
        assert_eq!(
            replaces(&doc, "hostname.x"),
            None,
            "not there: nothing lost"
        );
        assert_eq!(replaces(&doc, "users[1].name"), None, "a list item's key");
        assert!(unset(&mut doc, "brig.console.autologin").unwrap());
        assert!(!unset(&mut doc, "brig.console.autologin").unwrap());
        assert!(unset(&mut doc, "users[0]").unwrap());
        assert_eq!(doc["users"][0]["name"], "b");
        for bad in ["", ".a", "a..b", "a[x]", "a[1", "a[1]b"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_from_the_command_line_are_typed() {
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("10"), json!(10));
        assert_eq!(parse_value("[a, b]"), json!(["a", "b"]));
        assert_eq!(
            parse_value("{autologin: brig}"),
            json!({"autologin": "brig"})
        );
        assert_eq!(parse_value("Europe/Berlin"), json!("Europe/Berlin"));
        assert_eq!(
            parse_value("a: b: c"),
            json!("a: b: c"),
            "a YAML error is text"
        );
        assert_eq!(parse_value("~"), Value::Null);
    }

    #[test]
    fn locations_of_keys_and_items() {
        let text = "#cloud-config\nhostname: x\nusers:\n  - default\n  - name: alice\n    groups: [a, b]\nbrig:\n  console: {autologin: true}\n";
        let at = locations(text);
        assert_eq!(at["hostname"], (2, 1));
        assert_eq!(at["users"], (3, 1));
        assert_eq!(at["users[0]"], (4, 5));
        assert_eq!(at["users[1]"], (5, 5));
        assert_eq!(at["users[1].name"], (5, 5));
        assert_eq!(at["users[1].groups"], (6, 5));
        assert_eq!(at["users[1].groups[1]"], (6, 17));
        assert_eq!(at["brig.console.autologin"], (8, 13));
        assert_eq!(locate(&at, "users[1].shell"), Some((5, 5)));
        assert_eq!(locate(&at, "nowhere.at.all"), None);
    }
}
