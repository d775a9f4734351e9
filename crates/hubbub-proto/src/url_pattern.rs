//! Mercure 1.0 `urlpattern` matchers (`match_urlpattern=`): WHATWG URL
//! Patterns, evaluated by the `urlpattern` crate (Deno's implementation).
//!
//! Cost: the draft warns that URL Patterns compile to regular expressions and a
//! backtracking engine can be made to run for ever. The crate's regexps run on
//! the `regex` crate, whose automata match in time linear in the input, so no
//! topic can make one evaluation blow up. What is left to bound is the compiled
//! size: each component's regexp is built with a small size and nesting cap
//! (a pattern over it is refused, 400), the pattern's length is capped by
//! `max_topic_bytes` like every selector, and results are cached per
//! (pattern, topic) by the core's matcher.

use std::fmt;

use thiserror::Error;
use url::Url;
use urlpattern::regexp::RegExp;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions};

/// Compiled-program cap of one component's regexp (the `regex` crate's default
/// is 10 MiB). A plain `:name` segment compiles to a few KiB; reaching this
/// takes large counted repetitions (`(a{1000}){1000}`) or many wide classes.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Lazy-DFA cache cap per regexp, so matching memory is bounded too.
const DFA_SIZE_LIMIT: usize = 256 * 1024;
/// Nesting cap of regexp groups (the crate's default is 250).
const NEST_LIMIT: u32 = 16;

/// A `regex::Regex` built under the caps above.
#[derive(Debug)]
pub struct BoundedRegex(regex::Regex);

impl RegExp for BoundedRegex {
    fn syntax() -> urlpattern::RegexSyntax {
        urlpattern::RegexSyntax::Rust
    }

    fn parse(pattern: &str, flags: &str, _force_eval: bool) -> Result<Self, ()> {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(flags.contains('i'))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .nest_limit(NEST_LIMIT)
            .build()
            .map(Self)
            .map_err(|_| ())
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(
            captures
                .iter()
                .skip(1)
                .map(|c| c.map(|m| m.as_str()))
                .collect(),
        )
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid URL pattern {pattern:?}: {reason}")]
pub struct UrlPatternError {
    pub pattern: String,
    pub reason: String,
}

/// A compiled URL Pattern and the base URL (the hub's) that relative patterns
/// and relative topics are resolved against.
pub struct UrlPatternMatcher {
    pattern: UrlPattern<BoundedRegex>,
    source: String,
    base: Url,
    /// Identifies (base, pattern) for result caches: a relative pattern means
    /// different URLs under different bases. U+0001 occurs in neither a
    /// serialized URL nor a matcher value, so the pair is unambiguous.
    key: Box<str>,
}

impl fmt::Debug for UrlPatternMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlPatternMatcher")
            .field("pattern", &self.source)
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl UrlPatternMatcher {
    /// Compiles `pattern`; a relative one is taken relative to `base` (an
    /// absolute URL: the hub's). The `ignoreCase` option stays off, as the
    /// draft requires.
    pub fn parse(pattern: &str, base: &str) -> Result<Self, UrlPatternError> {
        let fail = |e: urlpattern::Error| UrlPatternError {
            pattern: pattern.to_owned(),
            reason: match e {
                urlpattern::Error::RegExp(()) => {
                    "a regular expression group is invalid, unsupported or too large".to_owned()
                }
                e => e.to_string(),
            },
        };
        let base = Url::parse(base).map_err(|e| UrlPatternError {
            pattern: pattern.to_owned(),
            reason: format!("base URL {base:?}: {e}"),
        })?;
        // An absolute pattern is parsed on its own: given a base, the
        // constructor would also take the base's components it leaves out.
        let init = match UrlPatternInit::parse_constructor_string::<BoundedRegex>(pattern, None) {
            Err(urlpattern::Error::BaseUrlRequired) => UrlPatternInit::parse_constructor_string::<
                BoundedRegex,
            >(pattern, Some(base.clone())),
            other => other,
        }
        .map_err(fail)?;
        let options = UrlPatternOptions {
            ignore_case: false,
            ..UrlPatternOptions::default()
        };
        let compiled = UrlPattern::parse(init, options).map_err(fail)?;
        Ok(Self {
            pattern: compiled,
            source: pattern.to_owned(),
            key: format!("{base}\u{1}{pattern}").into(),
            base,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// A key naming this matcher exactly (see the field).
    pub fn cache_key(&self) -> &str {
        &self.key
    }

    /// A topic that is not a URL reference resolvable against the base does not
    /// match (the draft's rule); neither does one the evaluation rejects.
    pub fn matches(&self, topic: &str) -> bool {
        let Ok(url) = self.base.join(topic) else {
            return false;
        };
        self.pattern
            .test(UrlPatternMatchInput::Url(url))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://hub.example/.well-known/mercure";

    fn matcher(p: &str) -> UrlPatternMatcher {
        UrlPatternMatcher::parse(p, BASE).unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "https://example.com/books/:id",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/:id",
                "https://example.com/books/1/x",
                false,
            ),
            (
                "https://example.com/books/:id",
                "https://example.com/authors/1",
                false,
            ),
            (
                "https://example.com/books/:id",
                "https://EXAMPLE.com/books/1",
                true,
            ),
            (
                "https://example.com/books/:id",
                "https://example.com/Books/1",
                false,
            ),
            (
                "https://example.com/books/:id",
                "https://example.com/books/1?x=1",
                true,
            ),
            (
                "https://example.com/books/*",
                "https://example.com/books/1/x",
                true,
            ),
            (
                "https://example.com/books/:id(\\d+)",
                "https://example.com/books/12",
                true,
            ),
            (
                "https://example.com/books/:id(\\d+)",
                "https://example.com/books/ab",
                false,
            ),
            (
                "https://example.com/books{/:id}?",
                "https://example.com/books",
                true,
            ),
            ("https://*.example.com/*", "https://a.example.com/x", true),
            ("/books/:id", "/books/1", true),
            ("/books/:id", "https://hub.example/books/1", true),
            ("/books/:id", "https://other.example/books/1", false),
            ("https://hub.example/books/:id", "/books/1", true),
            ("https://example.com/books/:id", "urn:isbn:1", false),
            ("https://example.com/books/:id", "not a url at all", false),
            ("https://example.com/books/:id", "http://[::1", false),
        ];
        for (pattern, topic, want) in cases {
            assert_eq!(
                matcher(pattern).matches(topic),
                *want,
                "{pattern} ~ {topic}"
            );
        }
    }

    #[test]
    fn bad_and_oversized_patterns_are_refused() {
        for p in [
            "https://example.com/books/:id(",
            "https://example.com/(a",
            "https://example.com/:id((?=x))",
            "https://example.com/:id(\\1)",
            "https://example.com/:id(\\w{200})",
            "https://example.com/:id(((((((((((((((((((a)))))))))))))))))))",
        ] {
            assert!(UrlPatternMatcher::parse(p, BASE).is_err(), "{p}");
        }
    }

    #[test]
    fn keys_tell_bases_apart() {
        let a = matcher("/books/:id");
        let b = UrlPatternMatcher::parse("/books/:id", "https://other.example/.well-known/mercure")
            .unwrap();
        assert_ne!(a.cache_key(), b.cache_key());
        assert_eq!(a.as_str(), b.as_str());
    }

    /// Debug-build timings, printed with `--nocapture`; asserts only a loose
    /// ceiling so a loaded machine does not fail it.
    #[test]
    fn cost() {
        use std::time::{Duration, Instant};
        fn per<T>(n: u32, mut f: impl FnMut(u32) -> T) -> Duration {
            let t = Instant::now();
            for i in 0..n {
                std::hint::black_box(f(i));
            }
            t.elapsed() / n
        }
        let n = 100;
        let compile = per(n, |i| {
            matcher(&format!("https://example.com/b{i}/:id/reviews/:r"))
        });
        let wild = "https://*.*.example.com/*/:a/*/:b/*/:c(.*)/*";
        let compile_wild = per(n, |_| matcher(wild));
        let m = matcher("https://example.com/books/:id/reviews/:r");
        let w = matcher(wild);
        let short = "https://example.com/books/1/reviews/2";
        let long = format!("https://example.com/books/1/reviews/{}", "a/".repeat(1000));
        let short_ns = per(n, |_| m.matches(short));
        let long_ns = per(n, |_| m.matches(&long));
        let wild_long = per(n, |_| w.matches(&long));
        println!(
            "url pattern (debug build): compile {compile:?} (wildcards {compile_wild:?}); \
             match {short_ns:?} (37 B topic), {long_ns:?} (2 KB), wildcards on 2 KB {wild_long:?}"
        );
        for t in [short_ns, long_ns, wild_long] {
            assert!(t < Duration::from_millis(50), "{t:?}");
        }
    }
}
