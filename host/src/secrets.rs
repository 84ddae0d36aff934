//! Secrets in plugin configs: any string in a slot's `config` table may contain
//! `${env:NAME}` or `${file:PATH}`, replaced when the config is read. Every value put in
//! that way is remembered, and everything the gateway writes where people can see it
//! (logs, error messages to clients, config errors, `prism status`) goes through
//! [`redact`], so a secret a plugin echoes (a connection URL in a driver's error) shows
//! as `[redacted]`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::RwLock;

const REDACTED: &str = "[redacted]";

/// Every secret value read so far in this process. Kept after a reload drops the config
/// that named it: a plugin may still hold and echo the old value.
static KNOWN: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Each known form of a secret, with the reference it was read from (`${file:pw}`).
static REFERENCES: RwLock<BTreeMap<String, String>> = RwLock::new(BTreeMap::new());

/// Why a reference could not be resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct SecretError {
    pub message: String,
    pub fix: String,
}

/// Replaces every `${env:NAME}` and `${file:PATH}` in `text` (a relative PATH is read
/// from `base_dir`, a file's one trailing newline dropped) and remembers the values.
/// Other `${…}` text is left as it is.
pub fn expand(text: &str, base_dir: &Path) -> Result<String, SecretError> {
    if !text.contains("${env:") && !text.contains("${file:") {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let reference = after.find('}').map(|end| (&after[..end], &after[end + 1..]));
        let Some((reference, tail)) = reference else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let value = if let Some(name) = reference.strip_prefix("env:") {
            Some(from_env(name)?)
        } else if let Some(path) = reference.strip_prefix("file:") {
            Some(from_file(path, base_dir)?)
        } else {
            None
        };
        match value {
            Some(value) => {
                remember(&value, &format!("${{{reference}}}"));
                out.push_str(&value);
            }
            None => {
                out.push_str("${");
                out.push_str(reference);
                out.push('}');
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

fn from_env(name: &str) -> Result<String, SecretError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(SecretError {
            message: format!("${{env:{name}}}: the environment variable {name} is empty"),
            fix: format!("set {name} to the secret in the gateway's environment"),
        }),
        Err(_) => Err(SecretError {
            message: format!("${{env:{name}}}: the environment variable {name} is not set"),
            fix: format!("set {name} in the gateway's environment, or write the value in the file"),
        }),
    }
}

fn from_file(path: &str, base_dir: &Path) -> Result<String, SecretError> {
    let full = base_dir.join(path);
    let text = std::fs::read_to_string(&full).map_err(|error| SecretError {
        message: format!("${{file:{path}}}: cannot read {}: {error}", full.display()),
        fix:
            "make the file readable by the gateway (a relative path is read from the config file's directory)"
                .to_owned(),
    })?;
    let value = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if value.is_empty() {
        return Err(SecretError {
            message: format!("${{file:{path}}}: {} is empty", full.display()),
            fix: "write the secret into the file".to_owned(),
        });
    }
    Ok(value.to_owned())
}

fn remember(value: &str, reference: &str) {
    let forms = shown_forms(value);
    let mut references = REFERENCES.write().unwrap_or_else(|e| e.into_inner());
    references.extend(forms.iter().map(|form| (form.clone(), reference.to_owned())));
    KNOWN.write().unwrap_or_else(|e| e.into_inner()).extend(forms);
}

/// `text` with every known secret, in any form, replaced by the reference it was read
/// from: how a config error names what is wrong without the value (`hang_health: invalid
/// type: string "${file:pw}", expected a boolean`).
pub fn as_references(text: &str) -> Cow<'_, str> {
    let references = REFERENCES.read().unwrap_or_else(|e| e.into_inner());
    let mut found: Vec<(&String, &String)> =
        references.iter().filter(|(form, _)| text.contains(form.as_str())).collect();
    if found.is_empty() {
        return Cow::Borrowed(text);
    }
    found.sort_by_key(|(form, _)| std::cmp::Reverse(form.len()));
    let mut out = text.to_owned();
    for (form, reference) in found {
        out = out.replace(form.as_str(), reference);
    }
    Cow::Owned(out)
}

/// `value` as it may be shown: raw; escaped as Rust and serde quote it (`{:?}`, how
/// `invalid type: string "…"` prints it), as JSON and TOML strings hold it, and as a
/// URL carries it; and those escaped once more, as a JSON log line holds an escaped
/// message. A secret with a `"` or `\` is then hidden in every channel, not only where
/// it appears raw.
fn shown_forms(value: &str) -> BTreeSet<String> {
    let unquoted = |quoted: String| quoted[1..quoted.len() - 1].to_owned();
    let json = |text: &str| unquoted(serde_json::to_string(text).expect("a string is valid JSON"));
    let debug = unquoted(format!("{value:?}"));
    // Every character but letters and digits encoded, or only those a URL's userinfo
    // may not hold (RFC 3986 unreserved characters stay).
    const RESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let percent = |set| percent_encoding::utf8_percent_encode(value, set).to_string();
    let mut forms = BTreeSet::from([
        value.to_owned(),
        json(value),
        json(&debug),
        json(&json(value)),
        percent(percent_encoding::NON_ALPHANUMERIC),
        percent(RESERVED),
    ]);
    forms.insert(debug);
    forms.retain(|form| !form.is_empty());
    forms
}

/// `text` with every known secret replaced by `[redacted]` (longest first, so a secret
/// that contains another is hidden whole).
pub fn redact(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    if known.is_empty() || !known.iter().any(|secret| text.contains(secret.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut secrets: Vec<&String> = known.iter().collect();
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    Cow::Owned(out)
}

/// A log writer that redacts each write (the fmt layer writes one event per call).
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0.write_all(redact(text).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_file_references_are_replaced_anywhere_in_a_string() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret-from-file\n").unwrap();
        std::env::set_var("PRISM_SECRETS_TEST_USER", "user-from-env");
        let expanded =
            expand("redis://${env:PRISM_SECRETS_TEST_USER}:${file:pw}@localhost:6379/0", dir.path()).unwrap();
        assert_eq!(expanded, "redis://user-from-env:s3cret-from-file@localhost:6379/0");
        assert_eq!(redact(&expanded), "redis://[redacted]:[redacted]@localhost:6379/0");
    }

    #[test]
    fn a_secret_is_hidden_in_every_escaped_form() {
        let secret = "p\"w\\d\n€%x-escaped-form-test";
        remember(secret, "${env:TEST}");
        let debug = format!("invalid type: string {secret:?}, expected a boolean");
        let json = serde_json::to_string(&format!("connecting to {secret}")).unwrap();
        let json_of_debug = serde_json::to_string(&debug).unwrap();
        let percent = format!(
            "redis://:{}@host",
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        );
        for shown in [secret.to_owned(), debug, json, json_of_debug, percent] {
            let redacted = redact(&shown);
            assert!(redacted.contains(REDACTED), "{shown:?} became {redacted:?}");
            assert!(!redacted.contains("escaped-form-test"), "{shown:?} became {redacted:?}");
            let named = as_references(&shown);
            assert!(named.contains("${env:TEST}") && !named.contains("escaped-form-test"), "{named:?}");
        }
    }

    #[test]
    fn other_dollar_braces_and_unclosed_references_stay() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(expand("${HOME} and ${other:x}", dir.path()).unwrap(), "${HOME} and ${other:x}");
        assert_eq!(expand("tail ${env:UNCLOSED", dir.path()).unwrap(), "tail ${env:UNCLOSED");
    }

    #[test]
    fn a_missing_variable_or_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = expand("${env:PRISM_SECRETS_TEST_UNSET}", dir.path()).unwrap_err();
        assert!(error.message.contains("PRISM_SECRETS_TEST_UNSET is not set"), "{error:?}");
        let error = expand("${file:absent.txt}", dir.path()).unwrap_err();
        assert!(error.message.contains("absent.txt"), "{error:?}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let error = expand("${file:empty}", dir.path()).unwrap_err();
        assert!(error.message.contains("is empty"), "{error:?}");
    }

    #[test]
    fn the_writer_redacts_what_it_writes() {
        remember("writer-secret-value", "${env:WRITER}");
        let mut out = RedactingWriter(Vec::new());
        std::io::Write::write_all(&mut out, b"connecting with writer-secret-value failed").unwrap();
        assert_eq!(String::from_utf8(out.0).unwrap(), "connecting with [redacted] failed");
    }
}
