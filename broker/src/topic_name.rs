//! Kafka's rules for topic names, shared by the single broker's catalog and the controller's
//! decisions: which names are legal, and which names collide with existing ones.

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Kafka's topic name rule: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The name with `.` read as `_` (Kafka's `Topic.unifyCollisionChars`): Kafka keeps `.` and `_`
/// apart in topic names but not in metric names.
pub fn unify_collision_chars(name: &str) -> String {
    name.replace('.', "_")
}

/// The first of `existing` that is not `name` but equals it once `.` is read as `_` (Kafka's
/// `Topic.hasCollision`): creating `name` must be refused.
pub fn colliding_topic<'a>(
    name: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    if !name.contains(['.', '_']) {
        return None;
    }
    let wanted = unify_collision_chars(name);
    existing
        .into_iter()
        .find(|other| *other != name && unify_collision_chars(other) == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_kafka_characters_up_to_249_long_are_legal() {
        assert_eq!(validate_topic_name("a.B_c-9"), Ok(()));
        assert_eq!(validate_topic_name(&"x".repeat(249)), Ok(()));
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
    }

    #[test]
    fn a_name_that_differs_only_by_dot_and_underscore_collides() {
        assert_eq!(colliding_topic("a.b", ["a_b", "c"]), Some("a_b"));
        assert_eq!(colliding_topic("a_b", ["a.b"]), Some("a.b"));
        assert_eq!(colliding_topic("a.b", ["a.b"]), None);
        assert_eq!(colliding_topic("ab", ["a_b"]), None);
    }
}
