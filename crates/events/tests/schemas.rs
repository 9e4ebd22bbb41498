//! Guards `schemas/`: fails when a checked-in file differs from what the events crate generates,
//! or when an event version (or the envelope) changed incompatibly since it was released.
//! `UPDATE_SCHEMAS=1 cargo test -p events` regenerates and records compatible changes as released.

use std::path::{Path, PathBuf};

use events::catalogue::CATALOGUE;
use events::compat::{breaking_changes, report};
use events::contracts::{
    RELEASED_DIR, envelope_schema, generated_files, pretty, released_envelope_file,
    released_event_file,
};
use schemars::Schema;
use serde_json::Value;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_SCHEMAS").is_some()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().expect("schema files live in a folder"))
        .expect("create schema folder");
    std::fs::write(path, content).expect("write schema");
}

#[test]
fn checked_in_schemas_match_the_event_types() {
    let mut stale = Vec::new();
    for (relative, expected) in generated_files() {
        let path = schemas_dir().join(&relative);
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        if actual == expected {
            continue;
        }
        if updating() {
            write(&path, &expected);
        } else {
            stale.push(format!("schemas/{relative}"));
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `UPDATE_SCHEMAS=1 cargo test -p events`): {stale:#?}"
    );
}

/// What the gate thinks of one contract; `None` when it is released as it is now.
fn gate(name: &str, version: u32, relative: &str, schema: &Schema) -> Option<String> {
    let current = schema.as_value();
    let path = schemas_dir().join(relative);
    let shown = format!("schemas/{relative}");
    let released = match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(released) => released,
            Err(error) => return Some(format!("{shown} is not JSON: {error}")),
        },
        Err(_) if updating() => {
            write(&path, &pretty(schema));
            return None;
        }
        Err(_) => {
            return Some(format!(
                "`{name}` v{version} has never been released: run \
                 `UPDATE_SCHEMAS=1 cargo test -p events` to record {shown}"
            ));
        }
    };
    let breaks = breaking_changes(&released, current);
    if !breaks.is_empty() && name == "envelope" {
        let lines: Vec<String> = breaks.iter().map(|b| format!("  - {b}")).collect();
        return Some(format!(
            "the envelope is not compatible with {shown}:\n{}\nEvery consumer reads the \
             envelope: add an optional attribute instead; see schemas/README.md.",
            lines.join("\n")
        ));
    }
    if !breaks.is_empty() {
        return Some(report(name, version, &shown, &breaks));
    }
    if &released == current {
        return None;
    }
    if updating() {
        write(&path, &pretty(schema));
        return None;
    }
    // Released must follow every compatible step: otherwise a field added after the release
    // could later be removed again without the gate noticing.
    Some(format!(
        "`{name}` v{version} changed compatibly since {shown}: run \
         `UPDATE_SCHEMAS=1 cargo test -p events` to record it as released"
    ))
}

#[test]
fn event_schemas_are_compatible_with_their_released_versions() {
    let mut failures = Vec::new();
    for entry in CATALOGUE {
        let relative = released_event_file(entry.event_type, entry.version);
        failures.extend(gate(
            entry.event_type,
            entry.version,
            &relative,
            &(entry.schema)(),
        ));
    }
    failures.extend(gate(
        "envelope",
        1,
        &released_envelope_file(),
        &envelope_schema(),
    ));
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n\n"));
}

#[test]
fn every_released_version_is_still_in_the_catalogue() {
    let released_dir = schemas_dir().join(RELEASED_DIR);
    let mut missing = Vec::new();
    // No folder at all means nothing released: the gate itself reports every version then.
    let type_dirs = std::fs::read_dir(&released_dir).into_iter().flatten();
    for type_dir in type_dirs {
        let type_dir = type_dir.expect("read schemas/released").path();
        if !type_dir.is_dir() {
            continue;
        }
        let event_type = type_dir
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        for file in std::fs::read_dir(&type_dir).expect("read a released type") {
            let file = file.expect("read a released type").path();
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let version = name
                .strip_prefix('v')
                .and_then(|rest| rest.strip_suffix(".json"))
                .and_then(|number| number.parse::<u32>().ok());
            let known = CATALOGUE
                .iter()
                .any(|e| e.event_type == event_type && Some(e.version) == version);
            if !known {
                missing.push(format!("schemas/{RELEASED_DIR}/{event_type}/{name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "released versions that the catalogue no longer decodes: {missing:#?}\n\
         A released version must stay readable while events of it may still be in the streams: \
         keep its type in the catalogue next to the new version; see schemas/README.md."
    );
}
