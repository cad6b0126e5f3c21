//! Attribute codecs.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{Error, Result};

use super::*;

pub(super) fn sv(v: impl AsRef<str>) -> AttributeValue {
    AttributeValue::S(v.as_ref().to_owned())
}
pub(super) fn nv(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub(super) fn opt_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}
pub(super) fn s(item: &Item, name: &str) -> Result<String> {
    opt_s(item, name).ok_or_else(|| Error::Malformed(format!("missing string attribute {name}")))
}
pub(super) fn opt_n(item: &Item, name: &str) -> Result<Option<i64>> {
    match item.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_n()
            .ok()
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::Malformed(format!("attribute {name} is not an integer"))),
    }
}
pub(super) fn n(item: &Item, name: &str) -> Result<i64> {
    opt_n(item, name)?.ok_or_else(|| Error::Malformed(format!("missing number attribute {name}")))
}
pub(super) fn list_s(item: &Item, name: &str) -> Vec<String> {
    item.get(name)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}
