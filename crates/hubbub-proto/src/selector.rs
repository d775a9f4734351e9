//! Topic selectors: `*`, an exact topic, an RFC 6570 URI template (0.x) or a
//! WHATWG URL Pattern (1.0 `match_urlpattern`).

use std::sync::Arc;

use thiserror::Error;

use crate::template::{TemplateError, UriTemplate};
use crate::url_pattern::{UrlPatternError, UrlPatternMatcher};

/// A compiled subscription (or claim) selector.
#[derive(Debug, Clone)]
pub enum Selector {
    /// `*`: every topic.
    Any,
    /// Byte-equal match; indexed by the core so matching does not scan subscribers.
    Exact(String),
    /// Anchored URI-template match (the literal template string matches too).
    /// Boxed: templates are rare and large, exact topics common and small.
    Template(Box<UriTemplate>),
    /// A 1.0 URL Pattern; shared, as its compiled regexps cannot be cloned.
    UrlPattern(Arc<UrlPatternMatcher>),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("invalid URI template {selector:?}: {source}")]
    Template {
        selector: String,
        source: TemplateError,
    },
    #[error(transparent)]
    UrlPattern(#[from] UrlPatternError),
}

impl Selector {
    /// A selector containing `{` is a URI template; anything else is matched exactly.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if s.contains('{') {
            return UriTemplate::parse(s)
                .map(|t| Self::Template(Box::new(t)))
                .map_err(|source| SelectorError::Template {
                    selector: s.to_owned(),
                    source,
                });
        }
        Ok(Self::Exact(s.to_owned()))
    }

    /// A Mercure 1.0 `exact` matcher (`match=` / `match_exact=`): the value is
    /// compared byte for byte and never read as a URI template, so `{` is an
    /// ordinary character. `*` stays the wildcard: 1.0 recognizes it before the
    /// matcher type.
    pub fn exact(s: &str) -> Self {
        if s == "*" {
            Self::Any
        } else {
            Self::Exact(s.to_owned())
        }
    }

    /// A Mercure 1.0 `urlpattern` matcher (`match_urlpattern=`); relative
    /// patterns and topics are resolved against `base`, the hub's URL. `*` is
    /// the wildcard here too.
    pub fn url_pattern(s: &str, base: &str) -> Result<Self, SelectorError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        Ok(Self::UrlPattern(Arc::new(UrlPatternMatcher::parse(
            s, base,
        )?)))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Exact(s) => s,
            Self::Template(t) => t.as_str(),
            Self::UrlPattern(p) => p.as_str(),
        }
    }

    /// Matching cost per byte of a topic (see [`UriTemplate::states`]); 0 for
    /// `*` and exact topics, which cost a comparison, and for URL Patterns,
    /// whose regexps are size-capped when compiled (see [`crate::url_pattern`]).
    pub fn states(&self) -> usize {
        match self {
            Self::Template(t) => t.states(),
            Self::Any | Self::Exact(_) | Self::UrlPattern(_) => 0,
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == topic,
            Self::Template(t) => t.as_str() == topic || t.matches(topic),
            Self::UrlPattern(p) => p.matches(topic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(matches!(Selector::parse("*").unwrap(), Selector::Any));
        assert!(matches!(
            Selector::parse("https://a/b").unwrap(),
            Selector::Exact(_)
        ));
        assert!(matches!(
            Selector::parse("https://a/{id}").unwrap(),
            Selector::Template(_)
        ));
        assert!(Selector::parse("https://a/{id").is_err());
    }

    #[test]
    fn exact_matchers_are_never_templates() {
        assert!(matches!(Selector::exact("*"), Selector::Any));
        let braces = Selector::exact("https://a/{id}");
        assert!(matches!(braces, Selector::Exact(_)));
        assert!(braces.matches("https://a/{id}"));
        assert!(!braces.matches("https://a/1"));
        assert!(matches!(
            Selector::exact("https://a/{id"),
            Selector::Exact(_)
        ));
    }

    #[test]
    fn url_patterns() {
        let base = "https://hub.example/.well-known/mercure";
        assert!(matches!(
            Selector::url_pattern("*", base),
            Ok(Selector::Any)
        ));
        let p = Selector::url_pattern("https://a/books/:id", base).unwrap();
        assert!(matches!(p, Selector::UrlPattern(_)));
        assert_eq!(p.as_str(), "https://a/books/:id");
        assert!(p.matches("https://a/books/1"));
        assert!(!p.matches("https://a/books/1/2"));
        assert!(matches!(
            Selector::url_pattern("https://a/:id(", base),
            Err(SelectorError::UrlPattern(_))
        ));
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("https://a/books/1", "https://a/books/1", true),
            ("https://a/books/1", "https://a/books/10", false),
            ("https://a/books/{id}", "https://a/books/1", true),
            ("https://a/books/{id}", "https://a/books/1/x", false),
            ("https://a/books/{+rest}", "https://a/books/1/x", true),
            ("https://a/books/{id}", "https://a/books/{id}", true),
            ("https://a/books/{id}", "https://b/books/1", false),
        ];
        for (sel, topic, want) in cases {
            assert_eq!(
                Selector::parse(sel).unwrap().matches(topic),
                *want,
                "{sel} ~ {topic}"
            );
        }
    }
}
