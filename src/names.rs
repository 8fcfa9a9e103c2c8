//! The names a user gives for a namespace or a Service, checked the same
//! way wherever they come from (a command-line flag, an HTTP path). Knows
//! nothing of either: each caller wraps the message in its own error.

/// Namespaces and Service names are DNS labels (RFC 1123): a bad one can
/// never match anything, so it is refused with a message saying what a
/// label looks like. `what` names the thing in that message ("namespace").
pub(crate) fn check_dns_label(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: expected a DNS label (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_labels() {
        assert!(check_dns_label("namespace", "shop-1").is_ok());
        assert!(check_dns_label("namespace", &"a".repeat(63)).is_ok());
        for bad in ["", "Shop", "a_b", "-a", "a-", &"a".repeat(64), "a.b"] {
            let error = check_dns_label("namespace", bad).unwrap_err();
            assert!(error.starts_with("invalid namespace "), "{bad:?}: {error}");
        }
    }
}
