//! The strict reading of JSON text the gateway passes on as written: it
//! must mean one thing to every reader (see [`valid`]).

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;
#[cfg(doc)]
use serde_json::Value;

/// True when `raw` reads as a JSON value the way [`Value`] would read it
/// (every string's escapes valid, every number in range, nesting within
/// serde_json's limit) and no object in it names a member twice. Members
/// are forwarded as their raw text: this makes sure the text the gateway
/// digests, reads and forwards means one thing to every reader.
pub(crate) fn valid(raw: &RawValue) -> bool {
    serde_json::from_str::<Checked>(raw.get()).is_ok()
}

/// Deserializes any JSON value without keeping it, refusing what [`valid`] refuses.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        // The names seen so far, borrowed from the text where they have no
        // escapes: a few in a list, more in a set, so that an object of
        // very many members is checked in linear time.
        let mut few: Vec<Key<'de>> = Vec::new();
        let mut many: Option<std::collections::HashSet<Key<'de>>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let repeated = match &mut many {
                Some(set) => !set.insert(key),
                None if few.contains(&key) => true,
                None => {
                    few.push(key);
                    if few.len() >= FEW_MEMBERS {
                        many = Some(few.drain(..).collect());
                    }
                    false
                }
            };
            if repeated {
                return Err(serde::de::Error::custom("a member given twice"));
            }
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
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
