//! Fails when a checked-in JSON Schema in `schemas/` differs from what the events crate
//! generates. Run with `UPDATE_SCHEMAS=1` to rewrite them after changing an event type.

use std::path::{Path, PathBuf};

use events::catalogue::CATALOGUE;
use events::envelope::Envelope;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn expected_files() -> Vec<(PathBuf, String)> {
    let dir = schemas_dir();
    let mut files = vec![(
        dir.join("envelope.json"),
        pretty(&schemars::schema_for!(Envelope)),
    )];
    for entry in CATALOGUE {
        files.push((
            dir.join("events")
                .join(entry.event_type)
                .join(format!("v{}.json", entry.version)),
            pretty(&(entry.schema)()),
        ));
    }
    files
}

fn pretty(schema: &schemars::Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serialises");
    text.push('\n');
    text
}

#[test]
fn checked_in_schemas_match_the_event_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for (path, expected) in expected_files() {
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        if actual == expected {
            continue;
        }
        if update {
            std::fs::create_dir_all(path.parent().expect("schema files live in a folder"))
                .expect("create schema folder");
            std::fs::write(&path, expected).expect("write schema");
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale schemas (run `UPDATE_SCHEMAS=1 cargo test -p events`): {stale:#?}"
    );
}
