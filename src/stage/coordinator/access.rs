//! Allow and deny rules: which targets (and action kinds) the coordinator may act on.
//!
//! A rule is `TARGET_GLOB` or `TARGET_GLOB:kind`, where the glob may use `*` for any
//! run of characters: `payments-*`, `*:scale_in`, `db-main:lower`.

use crate::event::ActionKind;

/// One parsed rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    glob: String,
    kind: Option<String>,
    text: String,
}

impl Rule {
    /// Parses a rule.
    pub fn parse(text: &str) -> Self {
        let (glob, kind) = match text.rsplit_once(':') {
            Some((g, k)) => (g.to_string(), Some(k.to_string())),
            None => (text.to_string(), None),
        };
        Rule {
            glob,
            kind,
            text: text.to_string(),
        }
    }

    /// The rule as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The action kind named, if any.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// Whether the rule covers an action of `kind` on `target`.
    pub fn matches(&self, target: &str, kind: ActionKind) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind.as_str()) && glob(&self.glob, target)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a target may not act, if it may not: the deny rule that matched, or the absence
/// of a matching allow rule when allow rules exist.
pub fn refusal(allow: &[Rule], deny: &[Rule], target: &str, kind: ActionKind) -> Option<String> {
    if let Some(d) = deny.iter().find(|r| r.matches(target, kind)) {
        return Some(format!("denied by rule {:?}", d.text()));
    }
    if !allow.is_empty() && !allow.iter().any(|r| r.matches(target, kind)) {
        return Some(format!(
            "no allow rule covers a {} of {target} (allowed: {})",
            kind.as_str(),
            allow.iter().map(Rule::text).collect::<Vec<_>>().join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "anything", true),
            ("payments-*", "payments-api", true),
            ("payments-*", "pay", false),
            ("*-db", "orders-db", true),
            ("*-db", "orders-db2", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn deny_wins_and_allow_lists_restrict() {
        let allow = vec![Rule::parse("web-*"), Rule::parse("*:scale_out")];
        let deny = vec![Rule::parse("web-legacy")];
        assert!(refusal(&allow, &deny, "web-api", ActionKind::ScaleIn).is_none());
        assert!(refusal(&allow, &deny, "db", ActionKind::ScaleOut).is_none());
        assert!(refusal(&allow, &deny, "db", ActionKind::ScaleIn).is_some());
        let r = refusal(&allow, &deny, "web-legacy", ActionKind::ScaleOut).unwrap();
        assert!(r.contains("web-legacy"), "{r}");
        assert!(refusal(&[], &[], "x", ActionKind::Lower).is_none());
    }
}
