//! The files under `schemas/` as the code generates them, and where the released contracts the
//! compatibility gate compares against are kept. Paths are relative to `schemas/`.

use schemars::Schema;

use crate::catalogue::CATALOGUE;
use crate::envelope::Envelope;

/// The generated AsyncAPI document.
pub const ASYNCAPI_FILE: &str = "asyncapi.json";
/// The envelope's JSON Schema.
pub const ENVELOPE_FILE: &str = "envelope.json";
/// The folder of released contracts, frozen per version.
pub const RELEASED_DIR: &str = "released";

/// `events/<type>/v<N>.json`: the JSON Schema of one event version's `data`.
pub fn event_file(event_type: &str, version: u32) -> String {
    format!("events/{event_type}/v{version}.json")
}

/// `released/<type>/v<N>.json`: the schema of that version as it was last released.
pub fn released_event_file(event_type: &str, version: u32) -> String {
    format!("{RELEASED_DIR}/{event_type}/v{version}.json")
}

/// `released/envelope.json`: the envelope as it was last released.
pub fn released_envelope_file() -> String {
    format!("{RELEASED_DIR}/{ENVELOPE_FILE}")
}

/// The envelope's JSON Schema.
pub fn envelope_schema() -> Schema {
    schemars::schema_for!(Envelope)
}

/// Every generated file with its content: the envelope, each event version, the AsyncAPI
/// document. The released contracts are not among them: they only move through the gate.
pub fn generated_files() -> Vec<(String, String)> {
    let mut files = vec![(ENVELOPE_FILE.to_owned(), pretty(&envelope_schema()))];
    for entry in CATALOGUE {
        files.push((
            event_file(entry.event_type, entry.version),
            pretty(&(entry.schema)()),
        ));
    }
    files.push((
        ASYNCAPI_FILE.to_owned(),
        pretty(&crate::asyncapi::document()),
    ));
    files
}

/// Pretty JSON with a final newline, the form every file under `schemas/` is written in. A
/// `Schema` serialises its keywords in schemars' reading order (`$schema`, `title`, ... `$defs`
/// last), so pass schemas as `Schema`, not as `Value`.
pub fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Serialising a schema or a `Value` cannot fail: their map keys are strings.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
