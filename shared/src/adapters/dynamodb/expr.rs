//! Update expressions and condition-failure handling.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{Error, Result};

use super::*;

/// Builds `SET a = :a, ... REMOVE x, ...` with one placeholder per attribute,
/// plus extra clauses.
pub(super) struct UpdateBuilder {
    sets: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl UpdateBuilder {
    pub(super) fn new() -> Self {
        UpdateBuilder {
            sets: vec![],
            removes: vec![],
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }
    pub(super) fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }
    pub(super) fn set(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        let n = self.name(attr);
        let v = format!(":{attr}");
        self.sets.push(format!("{n} = {v}"));
        self.values.insert(v, value);
        self
    }
    pub(super) fn set_expr(&mut self, attr: &str, expr: &str) -> &mut Self {
        let n = self.name(attr);
        self.sets.push(format!("{n} = {expr}"));
        self
    }
    pub(super) fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.removes.push(n);
        self
    }
    pub(super) fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }
    pub(super) fn expression(&self) -> String {
        let mut out = String::new();
        if !self.sets.is_empty() {
            out.push_str("SET ");
            out.push_str(&self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            out.push_str(" REMOVE ");
            out.push_str(&self.removes.join(", "));
        }
        out
    }
    pub(super) fn apply(
        self,
        req: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let expr = self.expression();
        let mut req = req.update_expression(expr);
        for (k, v) in self.names {
            req = req.expression_attribute_names(k, v);
        }
        for (k, v) in self.values {
            req = req.expression_attribute_values(k, v);
        }
        req
    }
}

/// The item a failed condition check reported, if the error is one.
pub(super) trait ConditionFailure {
    fn condition_item(&self) -> Option<Option<Item>>;
}
macro_rules! condition_failure {
    ($($t:ty),*) => {$(
        impl ConditionFailure for $t {
            fn condition_item(&self) -> Option<Option<Item>> {
                match self {
                    Self::ConditionalCheckFailedException(e) => Some(e.item().cloned()),
                    _ => None,
                }
            }
        }
    )*};
}
condition_failure!(UpdateItemError, PutItemError, DeleteItemError);

/// Splits an SDK error into "the condition failed (with the item it saw)" or a real failure.
pub(super) fn condition<E, R>(err: SdkError<E, R>) -> Result<Option<Item>>
where
    E: ConditionFailure + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if let Some(old) = err.as_service_error().and_then(|e| e.condition_item()) {
        return Ok(old);
    }
    Err(Error::dynamo(err))
}
