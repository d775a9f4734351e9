//! A small RFC 6570 *expander* (the direction hubbub does not implement), the oracle of the
//! `template` target: whatever a template expands to must match it.
//!
//! Input format (one text, so seeds stay readable): the template on the first line, then one value
//! line per variable occurrence, in order (hubbub matches occurrences independently, so each gets
//! its own): `!` or no line = undefined, `[a<TAB>b` = list, `<k=v<TAB>k2=v2` = associative array,
//! anything else = a string (a leading `\` is dropped, for strings starting with `!`, `[`, `<`).
//!
//! Left out, as hubbub documents them as deviations: non-exploded lists and arrays (matched as
//! scalars only; treated as undefined here), empty keys in exploded named arrays (dropped), and
//! `:N` counting code points (hubbub counts `%XX` triplets, see [`truncate`]).

use std::fmt::Write;

#[derive(Debug)]
enum Value<'a> {
    Undefined,
    Text(&'a str),
    List(Vec<&'a str>),
    Map(Vec<(&'a str, &'a str)>),
}

fn value(line: Option<&str>) -> Value<'_> {
    let Some(line) = line else {
        return Value::Undefined;
    };
    if line == "!" {
        Value::Undefined
    } else if let Some(items) = line.strip_prefix('[') {
        Value::List(items.split('\t').collect())
    } else if let Some(pairs) = line.strip_prefix('<') {
        Value::Map(
            pairs
                .split('\t')
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .collect(),
        )
    } else {
        Value::Text(line.strip_prefix('\\').unwrap_or(line))
    }
}

/// Expands `template` (one that `UriTemplate::parse` accepted) with values from `lines`.
pub fn expand<'a>(template: &str, lines: &mut impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("a parsed template");
        out.push_str(&rest[..open]);
        expression(&mut out, &rest[open + 1..close], lines);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

fn expression<'a>(out: &mut String, body: &str, lines: &mut impl Iterator<Item = &'a str>) {
    let op = body.chars().next().filter(|c| "+#./;?&".contains(*c));
    let list = if op.is_some() { &body[1..] } else { body };
    let (first, sep, named, if_empty) = match op {
        None | Some('+') => ("", ",", false, ""),
        Some('#') => ("#", ",", false, ""),
        Some('.') => (".", ".", false, ""),
        Some('/') => ("/", "/", false, ""),
        Some(';') => (";", ";", true, ""),
        Some('?') => ("?", "&", true, "="),
        _ => ("&", "&", true, "="),
    };
    let enc = |s: &str| encode(s, matches!(op, Some('+' | '#')));
    let mut any = false;
    for spec in list.split(',') {
        let (spec, explode) = spec.strip_suffix('*').map_or((spec, false), |s| (s, true));
        let (name, prefix) = match spec.split_once(':') {
            Some((name, n)) => (name, n.parse::<usize>().ok()),
            None => (spec, None),
        };
        let mut v = String::new();
        let pair = |v: &mut String, key: &str, value: &str| {
            v.push_str(key);
            v.push_str(if value.is_empty() { if_empty } else { "=" });
        };
        match (value(lines.next()), explode) {
            (Value::Text(s), _) => {
                let s = truncate(s, prefix);
                if named {
                    pair(&mut v, name, &s);
                }
                v.push_str(&enc(&s));
            }
            (Value::List(items), true) => {
                for (i, item) in items.iter().enumerate() {
                    v.push_str(if i > 0 { sep } else { "" });
                    if named {
                        pair(&mut v, name, item);
                    }
                    v.push_str(&enc(item));
                }
            }
            (Value::Map(pairs), true) => {
                let pairs: Vec<_> = pairs
                    .into_iter()
                    .filter(|(k, _)| !named || !k.is_empty())
                    .collect();
                if pairs.is_empty() {
                    continue; // an empty associative array is undefined
                }
                for (i, (k, val)) in pairs.iter().enumerate() {
                    v.push_str(if i > 0 { sep } else { "" });
                    if named {
                        pair(&mut v, &enc(k), val);
                    } else {
                        v.push_str(&enc(k));
                        v.push('=');
                    }
                    v.push_str(&enc(val));
                }
            }
            _ => continue, // undefined, or a composite value without explode
        }
        out.push_str(if any { sep } else { first });
        out.push_str(&v);
        any = true;
    }
}

/// The first `max` characters of `s` (RFC 6570 §2.4.1), but no more than hubbub counts: it counts
/// an encoded `%XX` triplet as one character, as the reference hub's matcher does, so a character
/// outside ASCII costs as many as its UTF-8 bytes. Cutting earlier still gives the expansion of
/// some value.
fn truncate(s: &str, max: Option<usize>) -> String {
    let Some(max) = max else {
        return s.to_owned();
    };
    let (mut out, mut units) = (String::new(), 0);
    for c in s.chars().take(max) {
        units += c.len_utf8(); // an ASCII character is one byte or one triplet
        if units > max {
            break;
        }
        out.push(c);
    }
    out
}

/// RFC 6570 §3.2.1: unreserved characters stay; with `+`/`#` reserved characters and existing
/// `%XX` triplets stay too; everything else is percent-encoded as UTF-8.
fn encode(s: &str, reserved: bool) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let unreserved = c.is_ascii_alphanumeric() || b"-._~".contains(&c);
        let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
        if unreserved || (reserved && b":/?#[]@!$&'()*+,;=".contains(&c)) {
            out.push(char::from(c));
        } else if reserved && c == b'%' && hex(i + 1) && hex(i + 2) {
            out.push_str(&s[i..i + 3]);
            i += 2;
        } else {
            let _ = write!(out, "%{c:02X}");
        }
        i += 1;
    }
    out
}
