//! Who a caller is, and the rules granting principals permissions on namespaces.

use std::collections::BTreeSet;

use super::methods::Permission;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// How the caller is named in messages and audit lines: `subject:alice`,
    /// `api_key:billing`, `cert:orders.internal`.
    pub display: String,
    pub identity: Identity,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Jwt { subject: String, groups: Vec<String>, claims: serde_json::Map<String, serde_json::Value> },
    ApiKey { name: String },
    Certificate { names: Vec<String> },
}

/// One `principals` entry of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Anyone,
    Subject(String),
    Group(String),
    Claim { name: String, value: String },
    ApiKey(String),
    Certificate(String),
}

impl Matcher {
    pub fn parse(text: &str) -> Result<Matcher, String> {
        if text == "*" {
            return Ok(Matcher::Anyone);
        }
        let (kind, value) = text.split_once(':').ok_or_else(|| {
            format!("'{text}' names no kind of principal (subject:, group:, claim:, api_key:, cert: or *)")
        })?;
        if value.is_empty() {
            return Err(format!("'{text}' has nothing after '{kind}:'"));
        }
        match kind {
            "subject" => Ok(Matcher::Subject(value.to_owned())),
            "group" => Ok(Matcher::Group(value.to_owned())),
            "api_key" => Ok(Matcher::ApiKey(value.to_owned())),
            "cert" => Ok(Matcher::Certificate(value.to_owned())),
            "claim" => match value.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    Ok(Matcher::Claim { name: name.to_owned(), value: value.to_owned() })
                }
                _ => Err(format!("'{text}' should be claim:NAME=VALUE")),
            },
            other => Err(format!(
                "'{other}:' is not a kind of principal (subject:, group:, claim:, api_key:, cert: or *)"
            )),
        }
    }

    /// Every entry of a config's `principals` list; each bad one is an error at `key`.
    pub fn parse_all(
        texts: &[String],
        key: &str,
        errors: &mut Vec<crate::shared::ConfigError>,
    ) -> Vec<Matcher> {
        let mut matchers = Vec::new();
        for text in texts {
            match Matcher::parse(text) {
                Ok(matcher) => matchers.push(matcher),
                Err(message) => errors.push(crate::shared::ConfigError::new(
                    key,
                    message,
                    "write e.g. \"subject:alice\", \"group:ops\", \"claim:team=payments\", \"api_key:batch\", \"cert:orders.internal\" or \"*\"",
                )),
            }
        }
        matchers
    }

    pub fn matches(&self, principal: &Principal) -> bool {
        match (self, &principal.identity) {
            (Matcher::Anyone, _) => true,
            (Matcher::Subject(want), Identity::Jwt { subject, .. }) => want == subject,
            (Matcher::Group(want), Identity::Jwt { groups, .. }) => groups.contains(want),
            (Matcher::Claim { name, value }, Identity::Jwt { claims, .. }) => match claims.get(name) {
                Some(serde_json::Value::String(found)) => found == value,
                Some(serde_json::Value::Array(items)) => {
                    items.iter().any(|item| item.as_str() == Some(value))
                }
                Some(other @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    serde_json::from_str::<serde_json::Value>(value).ok().as_ref() == Some(other)
                }
                _ => false,
            },
            (Matcher::ApiKey(want), Identity::ApiKey { name }) => want == name,
            (Matcher::Certificate(want), Identity::Certificate { names }) => names.contains(want),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub principals: Vec<Matcher>,
    pub namespaces: Vec<String>,
    pub permissions: BTreeSet<Permission>,
}

impl Rule {
    fn grants(&self, principal: &Principal, namespace: &str, permission: Permission) -> bool {
        self.permissions.contains(&permission)
            && self.namespaces.iter().any(|glob| glob_matches(glob, namespace))
            && self.principals.iter().any(|matcher| matcher.matches(principal))
    }
}

/// Whether any rule grants `permission` on `namespace` to `principal` (deny by default).
pub fn allowed(rules: &[Rule], principal: &Principal, namespace: &str, permission: Permission) -> bool {
    rules.iter().any(|rule| rule.grants(principal, namespace, permission))
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (glob, name, expected) in [
            ("*", "anything", true),
            ("*", "*", true),
            ("orders", "orders", true),
            ("orders", "orders-eu", false),
            ("orders-*", "orders-eu", true),
            ("orders-*", "orders-", true),
            ("orders-*", "orders", false),
            ("*-eu", "orders-eu", true),
            ("*-eu", "orders-us", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
        ] {
            assert_eq!(glob_matches(glob, name), expected, "{glob} vs {name}");
        }
    }

    fn jwt(subject: &str, groups: &[&str], claims: serde_json::Value) -> Principal {
        Principal {
            display: format!("subject:{subject}"),
            identity: Identity::Jwt {
                subject: subject.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                claims: claims.as_object().cloned().unwrap_or_default(),
            },
        }
    }

    #[test]
    fn matchers() {
        let alice =
            jwt("alice", &["ops"], serde_json::json!({"team": "payments", "tier": 2, "roles": ["a", "b"]}));
        let key = Principal {
            display: "api_key:batch".into(),
            identity: Identity::ApiKey { name: "batch".into() },
        };
        let cert = Principal {
            display: "cert:svc".into(),
            identity: Identity::Certificate { names: vec!["svc".into(), "svc.internal".into()] },
        };
        for (matcher, principal, expected) in [
            ("*", &alice, true),
            ("*", &key, true),
            ("subject:alice", &alice, true),
            ("subject:bob", &alice, false),
            ("group:ops", &alice, true),
            ("group:dev", &alice, false),
            ("claim:team=payments", &alice, true),
            ("claim:team=billing", &alice, false),
            ("claim:tier=2", &alice, true),
            ("claim:roles=b", &alice, true),
            ("claim:missing=x", &alice, false),
            ("api_key:batch", &key, true),
            ("api_key:batch", &alice, false),
            ("subject:batch", &key, false),
            ("cert:svc.internal", &cert, true),
            ("cert:other", &cert, false),
        ] {
            assert_eq!(Matcher::parse(matcher).unwrap().matches(principal), expected, "{matcher}");
        }
        for bad in ["alice", "user:alice", "subject:", "claim:team", "claim:=x"] {
            assert!(Matcher::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn a_rule_needs_principal_namespace_and_permission_to_match() {
        let rule = Rule {
            principals: vec![Matcher::Group("ops".into())],
            namespaces: vec!["orders-*".into()],
            permissions: [Permission::Read].into_iter().collect(),
        };
        let alice = jwt("alice", &["ops"], serde_json::json!({}));
        let bob = jwt("bob", &[], serde_json::json!({}));
        let rules = [rule];
        assert!(allowed(&rules, &alice, "orders-eu", Permission::Read));
        assert!(!allowed(&rules, &alice, "orders-eu", Permission::Write));
        assert!(!allowed(&rules, &alice, "billing", Permission::Read));
        assert!(!allowed(&rules, &bob, "orders-eu", Permission::Read));
        assert!(!allowed(&[], &alice, "orders-eu", Permission::Read));
    }
}
