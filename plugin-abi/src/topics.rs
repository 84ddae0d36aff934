//! Topic names and patterns shared by every pub/sub backend: tokens separated by `.`;
//! in a pattern `*` matches exactly one token and a final `>` one or more.

/// Why a topic or pattern is unusable, for an INVALID_ARGUMENT message.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a topic must not be empty".into());
    }
    if topic.len() > 1024 {
        return Err(format!("a topic is at most 1024 bytes; this one is {}", topic.len()));
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return Err(format!("'{topic}' has an empty token: tokens are separated by single dots"));
        }
        if token.chars().any(|c| c.is_whitespace()) {
            return Err(format!("'{topic}' contains white space"));
        }
        if token.contains(['*', '>']) {
            return Err(format!("'{topic}' contains a wildcard: publish to a concrete topic"));
        }
    }
    Ok(())
}

/// Checks a subscription pattern; returns whether it has wildcards.
pub fn check_pattern(pattern: &str) -> Result<bool, String> {
    if pattern.is_empty() {
        return Err("a topic pattern must not be empty".into());
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    let mut wild = false;
    for (index, token) in tokens.iter().enumerate() {
        match *token {
            "" => return Err(format!("'{pattern}' has an empty token")),
            "*" => wild = true,
            ">" if index == tokens.len() - 1 => wild = true,
            ">" => return Err(format!("'{pattern}': '>' may only be the last token")),
            token if token.contains(['*', '>']) => {
                return Err(format!(
                    "'{pattern}': wildcards stand alone as whole tokens ('*' or a final '>')"
                ))
            }
            token if token.chars().any(|c| c.is_whitespace()) => {
                return Err(format!("'{pattern}' contains white space"))
            }
            _ => {}
        }
    }
    Ok(wild)
}

/// Whether `topic` matches `pattern`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut topic_tokens = topic.split('.');
    for token in pattern.split('.') {
        match (token, topic_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(actual)) if expected == actual => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_tokens() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b", false),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.x.y.c", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            ("*", "a", true),
            ("*", "a.b", false),
            (">", "a.b", true),
            ("a.*", "a.b.c", false),
        ];
        for (pattern, topic, expected) in cases {
            assert_eq!(matches(pattern, topic), expected, "{pattern} vs {topic}");
        }
    }

    #[test]
    fn bad_topics_and_patterns_are_refused() {
        assert!(check_topic("orders.created").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_pattern("a.b"), Ok(false));
        assert_eq!(check_pattern("a.*.>"), Ok(true));
        for bad in ["", "a.>.b", "a.b*", "a..b"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }
}
