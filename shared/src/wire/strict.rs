//! The strict reading of JSON text the gateway passes on as written: it
//! must mean one thing to every reader (see [`valid`]).

use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
#[cfg(doc)]
use serde_json::Value;

/// The deepest nesting of arrays and objects serde_json reads (its
/// recursion limit): one level more is refused by every tree reader the
/// gateway and its interceptors use.
pub(crate) const READER_DEPTH: usize = 127;

/// True when `raw` reads as a JSON value the way [`Value`] would read it
/// (every string's escapes valid, every number in range, nesting within
/// serde_json's limit) and no object in it names a member twice. Members
/// are forwarded as their raw text: this makes sure the text the gateway
/// digests, reads and forwards means one thing to every reader.
pub(crate) fn valid(raw: &RawValue) -> bool {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Check {
        depth: READER_DEPTH,
    }
    .deserialize(&mut de)
    .is_ok()
        && de.end().is_ok()
}

/// Checks `text` as [`valid`] does, for a value that will be written
/// `outer` levels deep into a message (its nesting counted from there),
/// and which must be an object: `each` is shown the name of each of that
/// object's members and whether its value is `true`. The check and the
/// reading of the top members are one pass over the text.
pub(crate) fn valid_object(text: &str, outer: usize, each: impl FnMut(&str, bool)) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = Top {
        depth: READER_DEPTH.saturating_sub(outer),
        each,
    };
    de.deserialize_map(top).is_ok() && de.end().is_ok()
}

/// Deserializes any JSON value without keeping it, refusing what [`valid`]
/// refuses; `depth` is how many levels of arrays and objects may still
/// open. What it reads is whether the value is `true`.
#[derive(Clone, Copy)]
struct Check {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl Check {
    /// The check of a member or an element one level down.
    fn inner<E: serde::de::Error>(self) -> Result<Check, E> {
        match self.depth.checked_sub(1) {
            Some(depth) => Ok(Check { depth }),
            None => Err(E::custom("nested deeper than a reader takes")),
        }
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<bool, E> {
        Ok(b)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        members(self.inner()?, map, |_, _| ())?;
        Ok(false)
    }
}

/// The object at the top of [`valid_object`]'s text.
struct Top<F> {
    depth: usize,
    each: F,
}

impl<'de, F: FnMut(&str, bool)> Visitor<'de> for Top<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let inner = Check { depth: self.depth }.inner()?;
        members(inner, map, self.each)
    }
}

/// Reads an object's members, each checked by `check`, refusing a name
/// given twice; `each` is shown every name and whether its value is `true`.
fn members<'de, A: MapAccess<'de>>(
    check: Check,
    mut map: A,
    mut each: impl FnMut(&str, bool),
) -> Result<(), A::Error> {
    // The names seen so far, borrowed from the text where they have no
    // escapes: a few in a list on the stack, more in a set, so that an
    // object of very many members is checked in linear time.
    let mut few: [Option<Key<'de>>; FEW_MEMBERS] = Default::default();
    let mut count = 0;
    let mut many: Option<std::collections::HashSet<Key<'de>>> = None;
    while let Some(key) = map.next_key::<Key<'de>>()? {
        let is_true = map.next_value_seed(check)?;
        each(&key.0, is_true);
        let repeated = match &mut many {
            Some(set) => !set.insert(key),
            None if few[..count].iter().flatten().any(|k| *k == key) => true,
            None if count < FEW_MEMBERS => {
                few[count] = Some(key);
                count += 1;
                false
            }
            None => {
                let mut set: std::collections::HashSet<Key<'de>> =
                    few.iter_mut().filter_map(Option::take).collect();
                set.insert(key);
                many = Some(set);
                false
            }
        };
        if repeated {
            return Err(serde::de::Error::custom("a member given twice"));
        }
    }
    Ok(())
}

/// Up to this many members, names are compared one by one.
const FEW_MEMBERS: usize = 16;

/// A member's name: borrowed from the text unless it has escapes.
#[derive(PartialEq, Eq, Hash)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod many_members {
    use super::*;

    /// Attack: an object with very many members (a 1 MB request, a 16 MB
    /// upstream result) makes a check that compares each member's name
    /// with every earlier one take time growing with the square of their
    /// number: minutes of a function's CPU for one body. The check stays
    /// linear (bounded here at far more than a linear check takes).
    #[test]
    fn a_body_with_very_many_members_is_checked_in_linear_time() {
        let members = 300_000;
        let mut text = String::with_capacity(members * 16);
        text.push('{');
        for i in 0..members {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"m{i}\":0"));
        }
        text.push('}');
        let raw = RawValue::from_string(text.clone()).unwrap();
        let (done, checked) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(valid(&raw));
        });
        let within = std::time::Duration::from_secs(60);
        assert_eq!(
            checked.recv_timeout(within),
            Ok(true),
            "{members} distinct members are checked within {within:?}"
        );
        // And one name given twice among them is still found.
        let twice = RawValue::from_string(text.replacen("}", ",\"m12345\":1}", 1)).unwrap();
        assert!(!valid(&twice));
    }
}

#[cfg(test)]
mod depth {
    use super::*;
    use serde_json::Value;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn the_depth_counted_is_the_depth_serde_json_reads() {
        let read = |levels| serde_json::from_str::<Value>(&nested(levels)).is_ok();
        assert!(read(READER_DEPTH) && !read(READER_DEPTH + 1));
        let check = |levels| valid(&RawValue::from_string(nested(levels)).unwrap());
        assert!(check(READER_DEPTH) && !check(READER_DEPTH + 1));
    }

    #[test]
    fn an_object_written_into_a_message_is_checked_as_deep_as_it_will_be() {
        // `{"a":[...]}` written one level down into a message.
        let object = |levels| format!(r#"{{"a":{}}}"#, nested(levels));
        let fits = READER_DEPTH - 2;
        for (levels, ok) in [(fits, true), (fits + 1, false)] {
            assert_eq!(valid_object(&object(levels), 1, |_, _| ()), ok, "{levels}");
            let message = format!(r#"{{"result":{}}}"#, object(levels));
            assert_eq!(serde_json::from_str::<Value>(&message).is_ok(), ok);
        }
    }

    #[test]
    fn the_top_members_are_shown_with_whether_they_are_true() {
        let mut seen = Vec::new();
        let text =
            r#"{"isError":true,"n":1,"s":"true","o":{"isError":true},"f":false,"_m\u0065ta":null}"#;
        assert!(valid_object(text, 1, |name, is_true| seen
            .push((name.to_owned(), is_true))));
        let expected = [
            ("isError", true),
            ("n", false),
            ("s", false),
            ("o", false),
            ("f", false),
            ("_meta", false),
        ];
        assert_eq!(seen, expected.map(|(n, t)| (n.to_owned(), t)));
        for not_an_object in ["[]", "1", "\"x\"", "null", "{} {}", r#"{"a":1,"a":1}"#] {
            assert!(
                !valid_object(not_an_object, 1, |_, _| ()),
                "{not_an_object}"
            );
        }
    }
}
