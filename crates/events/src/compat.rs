//! The compatibility rules between an event version's released JSON Schema and the one the code
//! generates now, as pure functions over `serde_json::Value` that list what would break. Within a
//! version both directions must work (consumers on released code read new events, consumers on
//! new code read history), so only additive optional fields are compatible.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One breaking difference, at a place in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakage {
    /// Where in the payload, as a JSON path: `$` is the payload, `$.items[*].sku` a field
    /// of every line.
    pub path: String,
    pub change: Change,
}

/// The kinds of breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A field of the released schema is gone (removed, or renamed to another name).
    FieldRemoved { field: String },
    /// A new field that every payload must carry: history and old producers do not.
    RequiredFieldAdded { field: String },
    /// A new field in an object whose released schema forbids unknown fields.
    FieldAddedToClosedObject { field: String },
    /// An optional field became required: history and old producers may omit it.
    BecameRequired { field: String },
    /// A required field became optional: released consumers rely on it being there.
    NoLongerRequired { field: String },
    /// The JSON type(s) a value may have changed.
    TypeChanged { from: String, to: String },
    /// Values of an enum are gone: history and old producers still send them.
    EnumNarrowed { removed: Vec<String> },
    /// An enum gained values: released consumers reject what they do not know.
    EnumWidened { added: Vec<String> },
    /// A constraint (`format`, `minimum`, `pattern`, an enum where there was none, ...) changed.
    ConstraintChanged {
        keyword: String,
        from: String,
        to: String,
    },
    /// What an object accepts beyond its named fields changed (e.g. unknown fields used to
    /// be allowed and no longer are).
    AdditionalPropertiesChanged { from: String, to: String },
    /// One of the alternatives (`oneOf`/`anyOf`) of the released schema is gone.
    AlternativeRemoved { alternative: String },
    /// A new alternative: released consumers reject it.
    AlternativeAdded { alternative: String },
    /// A `$ref` that does not point into the same document; nothing can be compared.
    UnresolvedReference { reference: String },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::FieldRemoved { field } => write!(
                f,
                "field `{field}` was removed or renamed; consumers of this version still read it"
            ),
            Change::RequiredFieldAdded { field } => write!(
                f,
                "new required field `{field}`; events already published (and old producers) \
                 do not carry it"
            ),
            Change::FieldAddedToClosedObject { field } => write!(
                f,
                "new field `{field}` in an object that does not allow unknown fields; \
                 consumers of this version reject it"
            ),
            Change::BecameRequired { field } => write!(
                f,
                "field `{field}` became required; events already published may omit it"
            ),
            Change::NoLongerRequired { field } => write!(
                f,
                "field `{field}` is no longer required; consumers of this version rely on it"
            ),
            Change::TypeChanged { from, to } => write!(f, "type changed from {from} to {to}"),
            Change::EnumNarrowed { removed } => write!(
                f,
                "enum narrowed: {} removed; events already published still carry them",
                removed.join(", ")
            ),
            Change::EnumWidened { added } => write!(
                f,
                "enum widened: {} added; consumers of this version reject values they do not know",
                added.join(", ")
            ),
            Change::ConstraintChanged { keyword, from, to } => {
                write!(f, "`{keyword}` changed from {from} to {to}")
            }
            Change::AdditionalPropertiesChanged { from, to } => {
                write!(f, "additional properties changed from {from} to {to}")
            }
            Change::AlternativeRemoved { alternative } => write!(
                f,
                "alternative {alternative} removed; events already published may still be one"
            ),
            Change::AlternativeAdded { alternative } => write!(
                f,
                "alternative {alternative} added; consumers of this version reject it"
            ),
            Change::UnresolvedReference { reference } => write!(
                f,
                "cannot resolve `$ref` {reference:?}: only references into the same document \
                 (`#/$defs/...`) can be compared"
            ),
        }
    }
}

impl fmt::Display for Breakage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.change)
    }
}

/// Every breaking change from `released` to `current`, both whole JSON Schema documents
/// (their `$ref`s are resolved against their own root). Empty when `current` is compatible.
pub fn breaking_changes(released: &Value, current: &Value) -> Vec<Breakage> {
    let mut comparison = Comparison {
        released_root: released,
        current_root: current,
        in_progress: BTreeSet::new(),
        found: Vec::new(),
    };
    comparison.compare(released, current, "$");
    comparison.found
}

/// The failure message for one event version: what broke, where, and what to do instead.
pub fn report(event_type: &str, version: u32, released_file: &str, breaks: &[Breakage]) -> String {
    let mut text = format!(
        "`{event_type}` v{version} is not compatible with its released schema {released_file}:\n"
    );
    for breakage in breaks {
        text.push_str(&format!("  - {breakage}\n"));
    }
    text.push_str(&format!(
        "Add an optional field instead, or publish `{event_type}` v{} and keep v{version} \
         readable; see schemas/README.md.",
        version + 1
    ));
    text
}

/// The keywords whose any change narrows or widens what a value may be.
const CONSTRAINTS: &[&str] = &[
    "format",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "contentEncoding",
    "contentMediaType",
];

/// How deep a chain of `$ref`s to `$ref`s may go before it counts as unresolvable (a loop).
const MAX_REFERENCE_CHAIN: usize = 32;

struct Comparison<'a> {
    released_root: &'a Value,
    current_root: &'a Value,
    /// Pairs of definitions being compared further up the stack: a recursive type compares
    /// each pair once instead of forever.
    in_progress: BTreeSet<(String, String)>,
    found: Vec<Breakage>,
}

/// A schema with its `$ref` followed: the object to compare and the definition it came from.
struct Resolved {
    schema: Map<String, Value>,
    reference: Option<String>,
}

impl Comparison<'_> {
    fn report(&mut self, path: &str, change: Change) {
        self.found.push(Breakage {
            path: path.to_owned(),
            change,
        });
    }

    fn compare(&mut self, released: &Value, current: &Value, path: &str) {
        let released = match resolve(self.released_root, released) {
            Ok(resolved) => resolved,
            Err(reference) => return self.report(path, Change::UnresolvedReference { reference }),
        };
        let current = match resolve(self.current_root, current) {
            Ok(resolved) => resolved,
            Err(reference) => return self.report(path, Change::UnresolvedReference { reference }),
        };
        let pair = (
            released.reference.clone().unwrap_or_default(),
            current.reference.clone().unwrap_or_default(),
        );
        let recursive = released.reference.is_some() && current.reference.is_some();
        if recursive && !self.in_progress.insert(pair.clone()) {
            return;
        }
        self.compare_alternatives(&released.schema, &current.schema, path);
        if recursive {
            self.in_progress.remove(&pair);
        }
    }

    /// Pairs the alternatives of both sides (a plain schema is its one alternative) and
    /// compares each pair; an alternative on one side only narrows or widens the value.
    fn compare_alternatives(
        &mut self,
        released: &Map<String, Value>,
        current: &Map<String, Value>,
        path: &str,
    ) {
        // Enums written as alternatives of constants (documented variants) are compared as
        // enums, with messages about values rather than alternatives.
        if let (Some(old), Some(new)) = (
            values(self.released_root, released),
            values(self.current_root, current),
        ) {
            return self.compare_values(&old, &new, path);
        }
        let old = alternatives(self.released_root, released);
        let new = alternatives(self.current_root, current);
        if let ([(_, old_single)], [(_, new_single)]) = (old.as_slice(), new.as_slice()) {
            // No branches on either side: compare the schemas themselves. A lone branch is
            // compared through `compare`, which follows its `$ref` and guards recursion.
            return if has_branches(released) || has_branches(current) {
                self.compare(old_single, new_single, path)
            } else {
                self.compare_single(old_single, new_single, path)
            };
        }
        let mut unmatched_new: BTreeMap<String, Value> = new.into_iter().collect();
        let mut unmatched_old = Vec::new();
        for (key, schema) in old {
            match unmatched_new.remove(&key) {
                Some(counterpart) => self.compare(&schema, &counterpart, path),
                None => unmatched_old.push((key, schema)),
            }
        }
        // One alternative left on each side is the same alternative, changed (e.g. the
        // non-null branch of an optional value whose type changed).
        if unmatched_old.len() == 1 && unmatched_new.len() == 1 {
            if let (Some((_, old)), Some((_, new))) =
                (unmatched_old.pop(), unmatched_new.pop_first())
            {
                self.compare(&old, &new, path);
            }
            return;
        }
        for (alternative, _) in unmatched_old {
            self.report(path, Change::AlternativeRemoved { alternative });
        }
        for alternative in unmatched_new.into_keys() {
            self.report(path, Change::AlternativeAdded { alternative });
        }
    }

    fn compare_single(&mut self, released: &Value, current: &Value, path: &str) {
        let (released, current) = match (
            resolve(self.released_root, released),
            resolve(self.current_root, current),
        ) {
            (Ok(released), Ok(current)) => (released.schema, current.schema),
            (Err(reference), _) | (_, Err(reference)) => {
                return self.report(path, Change::UnresolvedReference { reference });
            }
        };
        let (old_types, new_types) = (types(&released), types(&current));
        if old_types != new_types {
            return self.report(
                path,
                Change::TypeChanged {
                    from: describe_types(old_types.as_ref()),
                    to: describe_types(new_types.as_ref()),
                },
            );
        }
        match (
            values(self.released_root, &released),
            values(self.current_root, &current),
        ) {
            (Some(old), Some(new)) => self.compare_values(&old, &new, path),
            (None, None) => {}
            (old, new) => self.report(
                path,
                Change::ConstraintChanged {
                    keyword: "enum".to_owned(),
                    from: describe_values(old.as_ref()),
                    to: describe_values(new.as_ref()),
                },
            ),
        }
        for keyword in CONSTRAINTS {
            let (old, new) = (released.get(*keyword), current.get(*keyword));
            if old != new {
                self.report(
                    path,
                    Change::ConstraintChanged {
                        keyword: (*keyword).to_owned(),
                        from: describe_constraint(old),
                        to: describe_constraint(new),
                    },
                );
            }
        }
        self.compare_object(&released, &current, path);
        self.compare_array(&released, &current, path);
    }

    fn compare_values(
        &mut self,
        released: &BTreeSet<String>,
        current: &BTreeSet<String>,
        path: &str,
    ) {
        let removed: Vec<String> = released.difference(current).cloned().collect();
        let added: Vec<String> = current.difference(released).cloned().collect();
        if !removed.is_empty() {
            self.report(path, Change::EnumNarrowed { removed });
        }
        if !added.is_empty() {
            self.report(path, Change::EnumWidened { added });
        }
    }

    fn compare_object(
        &mut self,
        released: &Map<String, Value>,
        current: &Map<String, Value>,
        path: &str,
    ) {
        let empty = Map::new();
        let old_fields = released
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let new_fields = current
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let old_required = required(released);
        let new_required = required(current);
        for (field, old_schema) in old_fields {
            let field_path = child_path(path, field);
            let field = field.clone();
            let Some(new_schema) = new_fields.get(&field) else {
                self.report(&field_path, Change::FieldRemoved { field });
                continue;
            };
            match (old_required.contains(&field), new_required.contains(&field)) {
                (false, true) => self.report(&field_path, Change::BecameRequired { field }),
                (true, false) => self.report(&field_path, Change::NoLongerRequired { field }),
                _ => {}
            }
            self.compare(old_schema, new_schema, &field_path);
        }
        let old_additional = Additional::of(released);
        for field in new_fields.keys().filter(|f| !old_fields.contains_key(*f)) {
            let field_path = child_path(path, field);
            let field = field.clone();
            if new_required.contains(&field) {
                self.report(&field_path, Change::RequiredFieldAdded { field });
            } else if old_additional == Additional::Forbidden {
                self.report(&field_path, Change::FieldAddedToClosedObject { field });
            }
        }
        let new_additional = Additional::of(current);
        match (&old_additional, &new_additional) {
            (Additional::Schema(old), Additional::Schema(new)) => {
                self.compare(old, new, &format!("{path}.*"));
            }
            (old, new) if old != new => self.report(
                path,
                Change::AdditionalPropertiesChanged {
                    from: old.describe().to_owned(),
                    to: new.describe().to_owned(),
                },
            ),
            _ => {}
        }
    }

    fn compare_array(
        &mut self,
        released: &Map<String, Value>,
        current: &Map<String, Value>,
        path: &str,
    ) {
        let item_path = format!("{path}[*]");
        match (released.get("items"), current.get("items")) {
            (Some(old), Some(new)) => self.compare(old, new, &item_path),
            (None, None) => {}
            (old, new) => self.report(
                &item_path,
                Change::ConstraintChanged {
                    keyword: "items".to_owned(),
                    from: describe_constraint(old),
                    to: describe_constraint(new),
                },
            ),
        }
        let empty = Vec::new();
        let old_prefix = released
            .get("prefixItems")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let new_prefix = current
            .get("prefixItems")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        if old_prefix.len() != new_prefix.len() {
            return self.report(
                path,
                Change::ConstraintChanged {
                    keyword: "prefixItems".to_owned(),
                    from: format!("{} positions", old_prefix.len()),
                    to: format!("{} positions", new_prefix.len()),
                },
            );
        }
        for (index, (old, new)) in old_prefix.iter().zip(new_prefix).enumerate() {
            self.compare(old, new, &format!("{path}[{index}]"));
        }
    }
}

/// Follows `$ref`s (JSON pointers into `root`) until a schema without one; keywords beside a
/// `$ref` (a description, usually) are kept on top of the target. `Err` names a reference
/// that cannot be followed.
fn resolve(root: &Value, schema: &Value) -> Result<Resolved, String> {
    let mut current = as_schema(schema);
    let mut reference = None;
    for _ in 0..MAX_REFERENCE_CHAIN {
        let Some(target) = current
            .get("$ref")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Ok(Resolved {
                schema: current,
                reference,
            });
        };
        let pointer = target.strip_prefix('#').ok_or_else(|| target.clone())?;
        let resolved = root.pointer(pointer).ok_or_else(|| target.clone())?;
        let mut merged = as_schema(resolved);
        for (keyword, value) in current {
            if keyword != "$ref" {
                merged.insert(keyword, value);
            }
        }
        current = merged;
        reference = Some(target);
    }
    Err(reference.unwrap_or_default())
}

/// A schema as an object: `true` accepts anything (`{}`), `false` nothing (`{"not": {}}`).
fn as_schema(schema: &Value) -> Map<String, Value> {
    match schema {
        Value::Object(map) => map.clone(),
        Value::Bool(false) => Map::from_iter([("not".to_owned(), Value::Object(Map::new()))]),
        _ => Map::new(),
    }
}

/// The alternatives of a schema, keyed so that the same alternative is found on both sides:
/// `oneOf`/`anyOf` branches, or the schema itself when it has none.
fn alternatives(root: &Value, schema: &Map<String, Value>) -> Vec<(String, Value)> {
    let Some(branches) = branches(schema) else {
        let whole = Value::Object(schema.clone());
        return vec![(alternative_key(root, &whole, 0), whole)];
    };
    let keyed: Vec<(String, Value)> = branches
        .iter()
        .enumerate()
        .map(|(index, branch)| (alternative_key(root, branch, index), branch.clone()))
        .collect();
    let distinct: BTreeSet<&String> = keyed.iter().map(|(key, _)| key).collect();
    if distinct.len() == keyed.len() {
        keyed
    } else {
        // Keys that do not tell the branches apart: fall back to their positions.
        keyed
            .into_iter()
            .enumerate()
            .map(|(index, (_, branch))| (format!("#{index}"), branch))
            .collect()
    }
}

/// The `oneOf` or `anyOf` branches of a schema, if it has any.
fn branches(schema: &Map<String, Value>) -> Option<&Vec<Value>> {
    ["oneOf", "anyOf"]
        .into_iter()
        .find_map(|keyword| schema.get(keyword).and_then(Value::as_array))
}

fn has_branches(schema: &Map<String, Value>) -> bool {
    branches(schema).is_some()
}

/// What names an alternative across versions: a tag field's constant (`kind = "card"`), the
/// single field of an externally tagged variant, or else its JSON type.
fn alternative_key(root: &Value, branch: &Value, index: usize) -> String {
    let Ok(resolved) = resolve(root, branch) else {
        return format!("#{index}");
    };
    let schema = resolved.schema;
    let fields = schema.get("properties").and_then(Value::as_object);
    let required = required(&schema);
    if let Some(fields) = fields {
        for (field, field_schema) in fields {
            if !required.contains(field) {
                continue;
            }
            let tag = resolve(root, field_schema)
                .ok()
                .and_then(|resolved| values(root, &resolved.schema))
                .filter(|values| values.len() == 1)
                .and_then(|values| values.into_iter().next());
            if let Some(tag) = tag {
                return format!("`{field}` = {tag}");
            }
        }
        if fields.len() == 1
            && required.len() == 1
            && let Some(field) = fields.keys().next()
        {
            return format!("`{{{field}: ...}}`");
        }
    }
    match types(&schema) {
        Some(types) => describe_types(Some(&types)),
        None => format!("#{index}"),
    }
}

/// The allowed values when the schema is an enumeration (`enum`, `const`, `type: null`, or
/// alternatives that are all enumerations), as canonical JSON text.
fn values(root: &Value, schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    if let Some(listed) = schema.get("enum").and_then(Value::as_array) {
        return Some(listed.iter().map(Value::to_string).collect());
    }
    if let Some(constant) = schema.get("const") {
        return Some(BTreeSet::from([constant.to_string()]));
    }
    if schema.get("type").and_then(Value::as_str) == Some("null") {
        return Some(BTreeSet::from(["null".to_owned()]));
    }
    let mut all = BTreeSet::new();
    for branch in branches(schema)? {
        let resolved = resolve(root, branch).ok()?;
        all.extend(values(root, &resolved.schema)?);
    }
    Some(all)
}

/// The `type` keyword as a set; `None` when it is absent (any type).
fn types(schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    if schema.contains_key("not") && schema.len() == 1 {
        // The `false` schema: no value at all.
        return Some(BTreeSet::new());
    }
    match schema.get("type")? {
        Value::String(single) => Some(BTreeSet::from([single.clone()])),
        Value::Array(many) => Some(
            many.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn required(schema: &Map<String, Value>) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// What an object accepts besides its named properties.
#[derive(Debug, PartialEq)]
enum Additional {
    Allowed,
    Forbidden,
    Schema(Value),
}

impl Additional {
    fn of(schema: &Map<String, Value>) -> Additional {
        match schema.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Additional::Allowed,
            Some(Value::Bool(false)) => Additional::Forbidden,
            Some(other) => Additional::Schema(other.clone()),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Additional::Allowed => "allowed (any unknown field)",
            Additional::Forbidden => "forbidden (no unknown field)",
            Additional::Schema(_) => "restricted to a schema",
        }
    }
}

fn describe_types(types: Option<&BTreeSet<String>>) -> String {
    match types {
        None => "any".to_owned(),
        Some(types) if types.is_empty() => "nothing".to_owned(),
        Some(types) => types.iter().cloned().collect::<Vec<_>>().join(" | "),
    }
}

fn describe_values(values: Option<&BTreeSet<String>>) -> String {
    match values {
        None => "any value".to_owned(),
        Some(values) => format!(
            "[{}]",
            values.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

fn describe_constraint(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".to_owned(), Value::to_string)
}

/// `$.field`, or `$["odd field"]` for names that are not plain identifiers.
fn child_path(path: &str, field: &str) -> String {
    if !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{path}.{field}")
    } else {
        format!("{path}[{}]", Value::String(field.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A released v1 shaped like schemars' output: `$defs`, `$ref`s, an enum, an array of
    /// objects, an optional field.
    fn released() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "OrderPlaced",
            "type": "object",
            "properties": {
                "order_id": { "type": "string", "format": "uuid" },
                "items": { "type": "array", "items": { "$ref": "#/$defs/OrderLine" } },
                "reason": { "$ref": "#/$defs/Reason" },
                "note": { "type": ["string", "null"] },
                "shipping": { "$ref": "#/$defs/Shipping" }
            },
            "required": ["order_id", "items", "reason", "shipping"],
            "$defs": {
                "OrderLine": {
                    "type": "object",
                    "properties": {
                        "sku": { "type": "string" },
                        "quantity": { "type": "integer", "format": "uint32", "minimum": 0 }
                    },
                    "required": ["sku", "quantity"]
                },
                "Reason": { "type": "string", "enum": ["out_of_stock", "declined"] },
                "Shipping": {
                    "type": "object",
                    "properties": { "country": { "type": "string" } },
                    "required": ["country"]
                }
            }
        })
    }

    /// The released schema with `change` applied to a copy.
    fn changed(change: impl FnOnce(&mut Value)) -> Value {
        let mut schema = released();
        change(&mut schema);
        schema
    }

    fn check(current: Value, expected: &[(&str, Change)]) {
        let found = breaking_changes(&released(), &current);
        let expected: Vec<Breakage> = expected
            .iter()
            .map(|(path, change)| Breakage {
                path: (*path).to_owned(),
                change: change.clone(),
            })
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn an_identical_schema_is_compatible() {
        check(released(), &[]);
    }

    #[test]
    fn an_added_optional_field_is_compatible() {
        check(
            changed(|s| {
                s["properties"]["currency"] = json!({ "type": ["string", "null"] });
                s["$defs"]["OrderLine"]["properties"]["discount_cents"] =
                    json!({ "type": "integer", "format": "int64", "default": 0 });
            }),
            &[],
        );
    }

    #[test]
    fn documentation_and_definition_names_may_change() {
        check(
            changed(|s| {
                s["description"] = json!("Now documented.");
                s["title"] = json!("OrderPlacedV1");
                let line = s["$defs"]["OrderLine"].take();
                s["$defs"]["Line"] = line;
                s["properties"]["items"]["items"]["$ref"] = json!("#/$defs/Line");
                s["properties"]["order_id"]["description"] = json!("The order.");
            }),
            &[],
        );
    }

    #[test]
    fn a_removed_field_breaks() {
        check(
            changed(|s| {
                s["properties"]
                    .as_object_mut()
                    .map(|p| p.remove("order_id"));
                s["required"] = json!(["items", "reason", "shipping"]);
            }),
            &[(
                "$.order_id",
                Change::FieldRemoved {
                    field: "order_id".into(),
                },
            )],
        );
    }

    #[test]
    fn a_removed_optional_field_breaks_too() {
        check(
            changed(|s| {
                s["properties"].as_object_mut().map(|p| p.remove("note"));
            }),
            &[(
                "$.note",
                Change::FieldRemoved {
                    field: "note".into(),
                },
            )],
        );
    }

    #[test]
    fn a_renamed_nested_field_breaks_as_a_removal_and_a_new_required_field() {
        check(
            changed(|s| {
                let line = &mut s["$defs"]["OrderLine"];
                line["properties"].as_object_mut().map(|p| p.remove("sku"));
                line["properties"]["product"] = json!({ "type": "string" });
                line["required"] = json!(["product", "quantity"]);
            }),
            &[
                (
                    "$.items[*].sku",
                    Change::FieldRemoved {
                        field: "sku".into(),
                    },
                ),
                (
                    "$.items[*].product",
                    Change::RequiredFieldAdded {
                        field: "product".into(),
                    },
                ),
            ],
        );
    }

    #[test]
    fn a_changed_type_breaks() {
        check(
            changed(|s| {
                s["$defs"]["Shipping"]["properties"]["country"] = json!({ "type": "integer" });
            }),
            &[(
                "$.shipping.country",
                Change::TypeChanged {
                    from: "string".into(),
                    to: "integer".into(),
                },
            )],
        );
    }

    #[test]
    fn a_changed_integer_width_breaks() {
        check(
            changed(|s| {
                s["$defs"]["OrderLine"]["properties"]["quantity"] =
                    json!({ "type": "integer", "format": "int64" });
            }),
            &[
                (
                    "$.items[*].quantity",
                    Change::ConstraintChanged {
                        keyword: "format".into(),
                        from: "\"uint32\"".into(),
                        to: "\"int64\"".into(),
                    },
                ),
                (
                    "$.items[*].quantity",
                    Change::ConstraintChanged {
                        keyword: "minimum".into(),
                        from: "0".into(),
                        to: "none".into(),
                    },
                ),
            ],
        );
    }

    #[test]
    fn a_new_required_field_breaks() {
        check(
            changed(|s| {
                s["properties"]["currency"] = json!({ "type": "string" });
                s["required"] = json!(["order_id", "items", "reason", "shipping", "currency"]);
            }),
            &[(
                "$.currency",
                Change::RequiredFieldAdded {
                    field: "currency".into(),
                },
            )],
        );
    }

    #[test]
    fn an_optional_field_that_becomes_required_breaks_and_so_does_the_reverse() {
        check(
            changed(|s| {
                s["properties"]["note"] = json!({ "type": ["string", "null"] });
                s["required"] = json!(["order_id", "items", "reason", "note"]);
            }),
            &[
                (
                    "$.note",
                    Change::BecameRequired {
                        field: "note".into(),
                    },
                ),
                (
                    "$.shipping",
                    Change::NoLongerRequired {
                        field: "shipping".into(),
                    },
                ),
            ],
        );
    }

    #[test]
    fn a_narrowed_enum_breaks() {
        check(
            changed(|s| s["$defs"]["Reason"]["enum"] = json!(["out_of_stock"])),
            &[(
                "$.reason",
                Change::EnumNarrowed {
                    removed: vec!["\"declined\"".into()],
                },
            )],
        );
    }

    #[test]
    fn a_widened_enum_breaks_consumers_that_decode_into_a_closed_enum() {
        check(
            changed(|s| {
                s["$defs"]["Reason"]["enum"] = json!(["out_of_stock", "declined", "fraud"]);
            }),
            &[(
                "$.reason",
                Change::EnumWidened {
                    added: vec!["\"fraud\"".into()],
                },
            )],
        );
    }

    #[test]
    fn an_enum_rewritten_as_documented_constants_is_the_same_enum() {
        // schemars emits `oneOf` of `const`s once a variant has a doc comment.
        check(
            changed(|s| {
                s["$defs"]["Reason"] = json!({
                    "oneOf": [
                        { "type": "string", "const": "out_of_stock", "description": "None left." },
                        { "type": "string", "const": "declined" }
                    ]
                });
            }),
            &[],
        );
        check(
            changed(|s| {
                s["$defs"]["Reason"] =
                    json!({ "oneOf": [{ "type": "string", "const": "declined" }] });
            }),
            &[(
                "$.reason",
                Change::EnumNarrowed {
                    removed: vec!["\"out_of_stock\"".into()],
                },
            )],
        );
    }

    #[test]
    fn forbidding_unknown_fields_breaks() {
        check(
            changed(|s| s["$defs"]["Shipping"]["additionalProperties"] = json!(false)),
            &[(
                "$.shipping",
                Change::AdditionalPropertiesChanged {
                    from: "allowed (any unknown field)".into(),
                    to: "forbidden (no unknown field)".into(),
                },
            )],
        );
    }

    #[test]
    fn a_new_field_in_a_closed_object_breaks() {
        let closed = changed(|s| s["additionalProperties"] = json!(false));
        let mut current = closed.clone();
        current["properties"]["currency"] = json!({ "type": ["string", "null"] });
        assert_eq!(
            breaking_changes(&closed, &current),
            vec![Breakage {
                path: "$.currency".into(),
                change: Change::FieldAddedToClosedObject {
                    field: "currency".into()
                },
            }]
        );
    }

    #[test]
    fn a_value_that_becomes_nullable_breaks() {
        check(
            changed(|s| {
                s["properties"]["shipping"] =
                    json!({ "anyOf": [{ "$ref": "#/$defs/Shipping" }, { "type": "null" }] });
            }),
            &[(
                "$.shipping",
                Change::AlternativeAdded {
                    alternative: "null".into(),
                },
            )],
        );
    }

    #[test]
    fn a_change_inside_an_optional_object_is_found_through_its_alternatives() {
        let optional = changed(|s| {
            s["properties"]["shipping"] =
                json!({ "anyOf": [{ "$ref": "#/$defs/Shipping" }, { "type": "null" }] });
        });
        let mut current = optional.clone();
        current["$defs"]["Shipping"]["properties"]["country"] = json!({ "type": "integer" });
        assert_eq!(
            breaking_changes(&optional, &current),
            vec![Breakage {
                path: "$.shipping.country".into(),
                change: Change::TypeChanged {
                    from: "string".into(),
                    to: "integer".into()
                },
            }]
        );
    }

    #[test]
    fn tagged_variants_are_matched_by_their_tag_whatever_their_order() {
        let card = json!({
            "type": "object",
            "properties": { "kind": { "type": "string", "const": "card" }, "token": { "type": "string" } },
            "required": ["kind", "token"]
        });
        let cash = json!({
            "type": "object",
            "properties": { "kind": { "type": "string", "const": "cash" } },
            "required": ["kind"]
        });
        let released = json!({ "oneOf": [card, cash] });
        assert_eq!(
            breaking_changes(&released, &json!({ "oneOf": [cash, card] })),
            vec![]
        );
        assert_eq!(
            breaking_changes(&released, &json!({ "oneOf": [card] })),
            vec![Breakage {
                path: "$".into(),
                change: Change::AlternativeRemoved {
                    alternative: "`kind` = \"cash\"".into()
                },
            }]
        );
    }

    #[test]
    fn recursive_definitions_are_compared_once() {
        let tree = json!({
            "$ref": "#/$defs/Node",
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "children": { "type": "array", "items": { "$ref": "#/$defs/Node" } }
                    }
                }
            }
        });
        assert_eq!(breaking_changes(&tree, &tree), vec![]);
    }

    #[test]
    fn a_reference_outside_the_document_is_reported_not_followed() {
        check(
            changed(|s| s["properties"]["shipping"] = json!({ "$ref": "shipping.json" })),
            &[(
                "$.shipping",
                Change::UnresolvedReference {
                    reference: "shipping.json".into(),
                },
            )],
        );
    }

    #[test]
    fn field_names_that_are_not_identifiers_are_quoted_in_paths() {
        assert_eq!(child_path("$", "order_id"), "$.order_id");
        assert_eq!(child_path("$", "a.b"), "$[\"a.b\"]");
    }

    #[test]
    fn the_report_says_what_broke_and_what_to_do() {
        let breaks = [Breakage {
            path: "$.items[*].sku".into(),
            change: Change::FieldRemoved {
                field: "sku".into(),
            },
        }];
        let text = report(
            "order.placed",
            1,
            "schemas/released/order.placed/v1.json",
            &breaks,
        );
        assert!(
            text.contains("`order.placed` v1 is not compatible"),
            "{text}"
        );
        assert!(
            text.contains("$.items[*].sku: field `sku` was removed"),
            "{text}"
        );
        assert!(
            text.contains(
                "Add an optional field instead, or publish `order.placed` v2 and keep v1 \
                 readable; see schemas/README.md."
            ),
            "{text}"
        );
    }
}
