//! RFC 6570 URI templates (all level-4 operators): parsing, and anchored matching against topics.
//!
//! Mercure selects topics with URI templates, and the reference hub matches them by turning the
//! template into an anchored regular expression. We do the same without a regex dependency: the
//! template compiles to a tiny Thompson NFA run Pike-VM style, one pass over the topic, so matching
//! is `O(topic length × template length)` whatever the input (no backtracking blow-up).
//!
//! What a template matches is "every string some assignment of variables could expand to":
//!
//! * Literals match byte-for-byte (they are not validated beyond the braces, so odd literals only
//!   make a template match less, never panic).
//! * A value is zero or more characters of its operator's class, each one byte or one `%XX`
//!   triplet. `{x}`, `{.x}`, `{/x}`, `{;x}`, `{?x}`, `{&x}` allow the unreserved set
//!   (`ALPHA DIGIT - . _ ~`); `{+x}` and `{#x}` also allow the reserved set (`:/?#[]@!$&'()*+,;=`).
//!   Zero characters are allowed because RFC 6570 expands an empty or undefined variable to
//!   nothing (`https://a/books/{id}` matches `https://a/books/`, as it does in the reference hub).
//! * Non-exploded values are scalars: `{x}` does not match `a,b`. Only exploded variables
//!   (`{x*}`, `{/x*}`, `{?x*}`, ...) match lists (`a,b`, `/a/b`, `?x=a&x=b`) and associative arrays
//!   (`k=v,k2=v2`, `?k=v&k2=v2`).
//! * Several variables in one expression match any in-order subset of them (undefined ones are
//!   skipped), joined by the operator's separator; if all are undefined the expression matches the
//!   empty string, operator prefix included (`https://a/b{?q}` matches `https://a/b`).
//! * Named operators match the variable's own name: `{?x}` matches `?x=1` and `?x=`, `{;x}`
//!   matches `;x=1` and `;x`. Exploded named variables match any non-empty key instead, since
//!   associative arrays bring their own keys.
//! * `:N` limits a value to `N` characters, counting a `%XX` triplet as one character (as the
//!   reference hub does; RFC 6570 counts code points, so `{x:1}` does not match `%C3%A9`).

mod compile;
mod matcher;
mod parse;

use thiserror::Error;

use compile::{Inst, compile};
use matcher::run;
use parse::{literal_ends, parse_pieces};

/// Why a string is not a usable URI template; the messages are meant for whoever wrote the selector.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unbalanced braces: `{{` at byte {at} is never closed")]
    UnclosedBrace { at: usize },
    #[error("unbalanced braces: `}}` at byte {at} has no matching `{{`")]
    UnopenedBrace { at: usize },
    #[error("unbalanced braces: `{{` at byte {at} opens inside another expression")]
    NestedBrace { at: usize },
    #[error("empty expression at byte {at}: an expression must name at least one variable")]
    EmptyExpression { at: usize },
    #[error("operator {op:?} in the expression at byte {at} is reserved by RFC 6570")]
    ReservedOperator { op: char, at: usize },
    #[error("invalid variable name {name:?} in the expression at byte {at}")]
    InvalidVarname { name: String, at: usize },
    #[error("invalid prefix length {raw:?} for variable {name:?}: expected an integer in 1..=9999")]
    InvalidPrefix { name: String, raw: String },
    #[error("variable {name:?} has both a prefix length and an explode modifier")]
    PrefixWithExplode { name: String },
}

/// A parsed URI template, kept with its source so selectors can echo and compare it.
#[derive(Debug, Clone)]
pub struct UriTemplate {
    src: String,
    /// Literal text before the first expression: a cheap pre-filter before running the NFA.
    head: String,
    /// Literal text after the last expression (empty if there is no expression).
    tail: String,
    prog: Vec<Inst>,
}

impl UriTemplate {
    /// Parses and compiles `src`; matching later never fails, so all errors surface here.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let pieces = parse_pieces(src)?;
        let (head, tail) = literal_ends(&pieces);
        Ok(Self {
            src: src.to_owned(),
            head: head.to_owned(),
            tail: tail.to_owned(),
            prog: compile(&pieces),
        })
    }

    /// The template source, exactly as given to [`UriTemplate::parse`].
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// How many states the compiled matcher has: matching a topic costs at most
    /// this many steps per byte of the topic, so it is the template's
    /// complexity as far as the hub's CPU is concerned.
    pub fn states(&self) -> usize {
        self.prog.len()
    }

    /// Whether the whole of `uri` is a possible expansion of the template.
    pub fn matches(&self, uri: &str) -> bool {
        uri.len() >= self.head.len() + self.tail.len()
            && uri.starts_with(&self.head)
            && uri.ends_with(&self.tail)
            && run(&self.prog, uri.as_bytes())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(template: &str, uri: &str) -> bool {
        UriTemplate::parse(template)
            .unwrap_or_else(|e| panic!("{template:?} should parse: {e}"))
            .matches(uri)
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            // Literals only.
            ("https://example.com/a", "https://example.com/a", true),
            ("https://example.com/a", "https://example.com/ab", false),
            ("", "", true),
            ("", "x", false),
            // Mercure classics.
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1/reviews",
                false,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/",
                true,
            ),
            (
                "https://example.com/books/{id}",
                "https://example.org/books/1",
                false,
            ),
            (
                "https://example.com/{+path}",
                "https://example.com/a/b/c?d=e#f",
                true,
            ),
            ("https://example.com/{+path}", "https://example.com/", true),
            (
                "https://example.com/users/{user}/books{?sort}",
                "https://example.com/users/kevin/books",
                true,
            ),
            (
                "https://example.com/users/{user}/books{?sort}",
                "https://example.com/users/kevin/books?sort=asc",
                true,
            ),
            (
                "https://example.com/users/{user}/books{?sort}",
                "https://example.com/users/kevin/books?order=asc",
                false,
            ),
            (
                "https://example.com/users/{user}/books{?sort}",
                "https://example.com/users/a/b/books",
                false,
            ),
            // Anchoring: no partial match at either end.
            ("books/{id}", "https://example.com/books/1", false),
            (
                "https://example.com/books/{id}",
                "https://example.com/books/1 ",
                false,
            ),
            ("{id}", "1/", false),
            ("{id}", "/1", false),
            ("{id}/x", "1/x/", false),
            // Simple expansion: unreserved and %XX only, scalar values.
            ("{var}", "value", true),
            ("{var}", "Aa0-._~", true),
            ("{hello}", "Hello%20World%21", true),
            ("{half}", "50%25", true),
            ("{var}", "50%2", false),
            ("{var}", "50%zz", false),
            ("{var}", "a/b", false),
            ("{var}", "a?b", false),
            ("{var}", "a#b", false),
            ("{var}", "a,b", false),
            ("{var}", "a b", false),
            ("{var}", "caf\u{e9}", false),
            ("O{empty}X", "OX", true),
            ("{x,y}", "1024,768", true),
            ("{x,y}", "1024", true),
            ("{x,y}", "1024,768,1", false),
            ("{x,hello,y}", "1024,Hello%20World%21,768", true),
            ("?{x,empty}", "?1024,", true),
            ("?{undef,y}", "?768", true),
            (
                "{base}index",
                "http%3A%2F%2Fexample.com%2Fhome%2Findex",
                true,
            ),
            ("{list*}", "red,green,blue", true),
            ("{keys*}", "semi=%3B,dot=.,comma=%2C", true),
            ("{keys*}", "semi=;", false),
            // Prefix modifier.
            ("{var:3}", "val", true),
            ("{var:3}", "valu", false),
            ("{var:3}", "%20%20%20", true),
            ("{var:3}", "%20%20%20a", false),
            ("{var:30}", "value", true),
            ("{var:1}/{var}", "v/value", true),
            ("{var:1}{var}", "value", true),
            // A `%XX` triplet counts as one character, as in the reference hub's matcher, so a
            // character outside ASCII costs one per UTF-8 byte: RFC 6570 would let `{var:1}`
            // match `%C3%A9` ("é"). Found by the `template` fuzz target; kept on purpose.
            ("{var:1}", "%C3%A9", false),
            ("{var:2}", "%C3%A9", true),
            // Reserved expansion.
            ("{+var}", "value", true),
            ("{+hello}", "Hello%20World!", true),
            ("{+half}", "50%25", true),
            ("{+base}index", "http://example.com/home/index", true),
            ("O{+empty}X", "OX", true),
            ("{+path}/here", "/foo/bar/here", true),
            ("here?ref={+path}", "here?ref=/foo/bar", true),
            ("up{+path}{var}/here", "up/foo/barvalue/here", true),
            ("{+x,hello,y}", "1024,Hello%20World!,768", true),
            ("{+path,x}/here", "/foo/bar,1024/here", true),
            ("{+path:6}/here", "/foo/b/here", true),
            ("{+path:6}/here", "/foo/ba/here", false),
            ("{+keys*}", "semi=;,dot=.,comma=,", true),
            ("{+var}", "a b", false),
            ("{+var}", "a%2", false),
            // Fragment expansion.
            ("{#var}", "#value", true),
            ("{#hello}", "#Hello%20World!", true),
            ("foo{#empty}", "foo#", true),
            ("foo{#undef}", "foo", true),
            ("{#path,x}/here", "#/foo/bar,1024/here", true),
            ("{#path:6}/here", "#/foo/b/here", true),
            ("{#keys*}", "#semi=;,dot=.,comma=,", true),
            ("{#var}", "value", false),
            // Label expansion.
            ("{.who}", ".fred", true),
            ("{.who,who}", ".fred.fred", true),
            ("{.half,who}", ".50%25.fred", true),
            ("www{.dom*}", "www.example.com", true),
            ("X{.var}", "X.value", true),
            ("X{.empty}", "X.", true),
            ("X{.undef}", "X", true),
            ("X{.var:3}", "X.val", true),
            ("X{.var:3}", "X.valu", false),
            ("X{.list*}", "X.red.green.blue", true),
            ("X{.keys*}", "X.semi=%3B.dot=..comma=%2C", true),
            ("X{.var}", "Xvalue", false),
            ("X{.var}", "X.a/b", false),
            // Path segments.
            ("{/who}", "/fred", true),
            ("{/who,who}", "/fred/fred", true),
            ("{/half,who}", "/50%25/fred", true),
            ("{/who,dub}", "/fred/me%2Ftoo", true),
            ("{/var,empty}", "/value/", true),
            ("{/var,undef}", "/value", true),
            ("{/var,x}/here", "/value/1024/here", true),
            ("{/var,x}/here", "/value/1024/768/here", false),
            ("{/var:1,var}", "/v/value", true),
            ("{/var:1,var}", "/va/value", false),
            ("{/list*}", "/red/green/blue", true),
            ("{/list*,path:4}", "/red/green/blue/%2Ffoo", true),
            ("{/keys*}", "/semi=%3B/dot=./comma=%2C", true),
            ("{/path*}", "/a/b/c", true),
            ("{/var}", "value", false),
            ("{/var}", "/a?b", false),
            // Path-style parameters.
            ("{;who}", ";who=fred", true),
            ("{;half}", ";half=50%25", true),
            ("{;empty}", ";empty", true),
            ("{;empty}", ";empty=", false),
            ("{;v,empty,who}", ";v=6;empty;who=fred", true),
            ("{;v,bar,who}", ";v=6;who=fred", true),
            ("{;x,y}", ";x=1024;y=768", true),
            ("{;x,y,undef}", ";x=1024;y=768", true),
            ("{;hello:5}", ";hello=Hello", true),
            ("{;hello:5}", ";hello=Hello%20", false),
            ("{;list*}", ";list=red;list=green;list=blue", true),
            ("{;keys*}", ";semi=%3B;dot=.;comma=%2C", true),
            ("{;who}", ";whom=fred", false),
            ("{;x,y}", ";y=768;x=1024", false),
            // Form-style query.
            ("{?who}", "?who=fred", true),
            ("{?half}", "?half=50%25", true),
            ("{?x,y}", "?x=1024&y=768", true),
            ("{?x,y}", "?x=1", true),
            ("{?x,y}", "?y=2", true),
            ("{?x,y}", "?y=2&x=1", false),
            ("{?x,y}", "?x=1&z=2", false),
            ("{?x,y,empty}", "?x=1024&y=768&empty=", true),
            ("{?var:3}", "?var=val", true),
            ("{?var:3}", "?var=valu", false),
            ("{?list*}", "?list=red&list=green&list=blue", true),
            ("{?keys*}", "?semi=%3B&dot=.&comma=%2C", true),
            ("{?q*}", "?a=1&b=2", true),
            ("{?q*}", "?a=1&=2", false),
            ("{?x}", "?x", false),
            ("{?x}", "?", false),
            ("{?x}", "?x=a/b", false),
            ("{?x}", "?x=a&b", false),
            ("https://a/b{?q}", "https://a/b", true),
            // Form-style query continuation.
            ("{&who}", "&who=fred", true),
            ("{&half}", "&half=50%25", true),
            ("?fixed=yes{&x}", "?fixed=yes&x=1024", true),
            ("{&x,y,empty}", "&x=1024&y=768&empty=", true),
            ("{&var:3}", "&var=val", true),
            ("{&list*}", "&list=red&list=green&list=blue", true),
            ("{&keys*}", "&semi=%3B&dot=.&comma=%2C", true),
            ("{&x}", "?x=1", false),
            // Composite values must be exploded to match.
            ("{count}", "one,two,three", false),
            ("{/count}", "/one,two,three", false),
            ("{?count}", "?count=one,two,three", false),
        ];
        for (template, uri, want) in cases {
            assert_eq!(matches(template, uri), *want, "{template:?} ~ {uri:?}");
        }
    }

    #[test]
    fn as_str_returns_source() {
        let src = "https://example.com/{+path}{?q*}";
        assert_eq!(UriTemplate::parse(src).unwrap().as_str(), src);
    }

    #[test]
    fn parse_errors() {
        use TemplateError::*;
        let name = |s: &str| s.to_owned();
        let cases: Vec<(&str, TemplateError)> = vec![
            ("https://a/{id", UnclosedBrace { at: 10 }),
            ("https://a/id}", UnopenedBrace { at: 12 }),
            ("{a{b}", NestedBrace { at: 2 }),
            ("x{}", EmptyExpression { at: 1 }),
            ("{+}", EmptyExpression { at: 0 }),
            ("{=x}", ReservedOperator { op: '=', at: 0 }),
            ("{,x}", ReservedOperator { op: ',', at: 0 }),
            ("{!x}", ReservedOperator { op: '!', at: 0 }),
            ("{@x}", ReservedOperator { op: '@', at: 0 }),
            ("{|x}", ReservedOperator { op: '|', at: 0 }),
            (
                "{$x}",
                InvalidVarname {
                    name: name("$x"),
                    at: 0,
                },
            ),
            (
                "{-x}",
                InvalidVarname {
                    name: name("-x"),
                    at: 0,
                },
            ),
            (
                "{x y}",
                InvalidVarname {
                    name: name("x y"),
                    at: 0,
                },
            ),
            (
                "{x,}",
                InvalidVarname {
                    name: name(""),
                    at: 0,
                },
            ),
            (
                "{.x.}",
                InvalidVarname {
                    name: name("x."),
                    at: 0,
                },
            ),
            (
                "{a..b}",
                InvalidVarname {
                    name: name("a..b"),
                    at: 0,
                },
            ),
            (
                "{a%2}",
                InvalidVarname {
                    name: name("a%2"),
                    at: 0,
                },
            ),
            (
                "{x**}",
                InvalidVarname {
                    name: name("x*"),
                    at: 0,
                },
            ),
            (
                "{x:0}",
                InvalidPrefix {
                    name: name("x"),
                    raw: name("0"),
                },
            ),
            (
                "{x:10000}",
                InvalidPrefix {
                    name: name("x"),
                    raw: name("10000"),
                },
            ),
            (
                "{x:}",
                InvalidPrefix {
                    name: name("x"),
                    raw: name(""),
                },
            ),
            (
                "{x:01}",
                InvalidPrefix {
                    name: name("x"),
                    raw: name("01"),
                },
            ),
            (
                "{x:a}",
                InvalidPrefix {
                    name: name("x"),
                    raw: name("a"),
                },
            ),
            ("{x:3*}", PrefixWithExplode { name: name("x") }),
            ("{x*:3}", PrefixWithExplode { name: name("x") }),
        ];
        for (template, want) in cases {
            assert_eq!(
                UriTemplate::parse(template).unwrap_err(),
                want,
                "{template:?}"
            );
        }
    }

    #[test]
    fn valid_varnames() {
        for template in [
            "{a.b}",
            "{a_1}",
            "{%41b}",
            "{x:9999}",
            "{x:1}",
            "{A,b*,c:2}",
        ] {
            assert!(UriTemplate::parse(template).is_ok(), "{template:?}");
        }
    }

    #[test]
    fn errors_have_messages() {
        let err = UriTemplate::parse("https://a/{id").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unbalanced braces: `{` at byte 10 is never closed"
        );
    }

    #[test]
    fn long_input_stays_fast() {
        let template = UriTemplate::parse("{a}{b}{c}{d}{e}{f}{g}{h}{+i}{/j*}{?k,l*}x").unwrap();
        let mut uri = "a".repeat(30_000);
        assert!(!template.matches(&uri));
        uri.push('x');
        assert!(template.matches(&uri));
    }

    proptest! {
        #[test]
        fn simple_value_matches(v in "[A-Za-z0-9._~-]{1,12}") {
            let template = UriTemplate::parse("https://h/{x}").unwrap();
            let uri = format!("https://h/{v}");
            prop_assert!(template.matches(&uri), "{} should match", uri);
        }

        #[test]
        fn slash_needs_reserved_expansion(v in "[A-Za-z0-9._~/-]{0,6}/[A-Za-z0-9._~/-]{0,6}") {
            let simple = UriTemplate::parse("https://h/{x}").unwrap();
            let reserved = UriTemplate::parse("https://h/{+x}").unwrap();
            let uri = format!("https://h/{v}");
            prop_assert!(!simple.matches(&uri), "{{x}} should not match {}", uri);
            prop_assert!(reserved.matches(&uri), "{{+x}} should match {}", uri);
        }
    }
}
