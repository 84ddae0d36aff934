//! A plugin's config keys, derived from its `Config` type's JSON schema (schemars), so
//! what `prism plugins` shows cannot drift from what the plugin parses.

use serde_json::Value;

use crate::ConfigKey;

/// The keys of `T`, in declaration order: name, type, TOML default, whether required,
/// and the first line of the field's doc comment. Derive `JsonSchema` (and `Serialize`,
/// so defaults can be shown) on the config type.
pub fn config_keys_of<T: schemars::JsonSchema>() -> Vec<ConfigKey> {
    let schema = schemars::schema_for!(T);
    let root = schema.as_value();
    let required: Vec<&str> = root
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = root.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| ConfigKey {
            name: name.clone(),
            type_name: type_name(property, root),
            default: property.get("default").and_then(toml_text),
            required: required.contains(&name.as_str()),
            doc: property
                .get("description")
                .and_then(Value::as_str)
                .and_then(|doc| doc.lines().next())
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

fn type_name(property: &Value, root: &Value) -> String {
    if let Some(reference) = property.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return match root.get("$defs").and_then(|defs| defs.get(name)) {
            Some(definition) => type_name(definition, root),
            None => name.to_owned(),
        };
    }
    if let Some(values) = property.get("enum").and_then(Value::as_array) {
        return values.iter().filter_map(toml_text).collect::<Vec<_>>().join(" | ");
    }
    for alternatives in ["oneOf", "anyOf"] {
        if let Some(options) = property.get(alternatives).and_then(Value::as_array) {
            let names: Vec<String> = options
                .iter()
                .map(|option| match option.get("const").and_then(toml_text) {
                    Some(constant) => constant,
                    None => type_name(option, root),
                })
                .collect();
            return names.join(" | ");
        }
    }
    match property.get("type") {
        Some(Value::String(single)) => single.clone(),
        Some(Value::Array(several)) => {
            several.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | ")
        }
        _ => "value".to_owned(),
    }
}

/// A JSON default as it would be written in plugins.toml.
fn toml_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(format!("{text:?}")),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as plugins write them.
    #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        /// Where the backend listens.
        ///
        /// More prose that is not shown.
        url: String,
        /// Pool size.
        #[serde(default = "ten")]
        pool: u32,
        /// Optional name.
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        mode: Mode,
    }

    fn ten() -> u32 {
        10
    }

    #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema, Default)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Fast,
        Safe,
    }

    #[test]
    fn keys_come_from_the_type_with_defaults_and_first_doc_lines() {
        let keys = config_keys_of::<Sample>();
        let key =
            |name: &str| keys.iter().find(|k| k.name == name).unwrap_or_else(|| panic!("{name} in {keys:?}"));
        assert_eq!(keys.len(), 4);
        assert_eq!(key("url").type_name, "string");
        assert!(key("url").required);
        assert_eq!(key("url").doc, "Where the backend listens.");
        assert_eq!(key("url").default, None);
        assert_eq!(key("pool").type_name, "integer");
        assert_eq!(key("pool").default.as_deref(), Some("10"));
        assert!(!key("pool").required);
        assert_eq!(key("name").type_name, "string | null");
        assert_eq!(key("mode").type_name, "\"fast\" | \"safe\"");
        assert_eq!(key("mode").default.as_deref(), Some("\"fast\""));
    }
}
