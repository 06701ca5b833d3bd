//! Printing results: aligned `key: value` lines for people, one JSON object for scripts.
//!
//! Invariant: with `--output json`, stdout holds exactly one JSON document and nothing else.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    /// Prints a flat record: a JSON object, or one aligned line per field.
    pub fn record(self, fields: &[(&str, Value)]) {
        match self {
            Output::Json => {
                let map: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                println!("{}", Value::Object(map));
            }
            Output::Table => {
                let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                for (k, v) in fields {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Array(items) => items
                            .iter()
                            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(", "),
                        other => other.to_string(),
                    };
                    println!("{k:>width$}  {text}");
                }
            }
        }
    }
}
