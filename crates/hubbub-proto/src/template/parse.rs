//! Template syntax: the source split into literals and expressions, each expression's
//! operator (which fixes its prefix, separator and character class) and variables.

use super::TemplateError;

/// The eight RFC 6570 expression kinds; each fixes a prefix, a separator and a character class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operator {
    Simple,
    Reserved,
    Fragment,
    Label,
    Path,
    PathParam,
    Query,
    QueryContinuation,
}

impl Operator {
    fn from_char(c: char) -> Option<Self> {
        Some(match c {
            '+' => Self::Reserved,
            '#' => Self::Fragment,
            '.' => Self::Label,
            '/' => Self::Path,
            ';' => Self::PathParam,
            '?' => Self::Query,
            '&' => Self::QueryContinuation,
            _ => return None,
        })
    }

    /// Emitted once before the first defined variable.
    pub(super) fn first(self) -> &'static [u8] {
        match self {
            Self::Simple | Self::Reserved => b"",
            Self::Fragment => b"#",
            Self::Label => b".",
            Self::Path => b"/",
            Self::PathParam => b";",
            Self::Query => b"?",
            Self::QueryContinuation => b"&",
        }
    }

    /// Emitted between variables and between the items of an exploded variable.
    pub(super) fn sep(self) -> u8 {
        match self {
            Self::Simple | Self::Reserved | Self::Fragment => b',',
            Self::Label => b'.',
            Self::Path => b'/',
            Self::PathParam => b';',
            Self::Query | Self::QueryContinuation => b'&',
        }
    }

    /// Named operators expand to `name=value` pairs.
    pub(super) fn named(self) -> bool {
        matches!(
            self,
            Self::PathParam | Self::Query | Self::QueryContinuation
        )
    }

    /// Query-style operators keep the `=` for empty values (`?x=`); `;` drops it (`;x`).
    pub(super) fn keeps_equals_when_empty(self) -> bool {
        matches!(self, Self::Query | Self::QueryContinuation)
    }

    pub(super) fn class(self) -> Class {
        match self {
            Self::Reserved | Self::Fragment => Class::UnreservedOrReserved,
            _ => Class::Unreserved,
        }
    }
}

/// Operator characters RFC 6570 sets aside for future extensions; rejected rather than guessed.
fn is_reserved_operator(c: char) -> bool {
    matches!(c, '=' | ',' | '!' | '@' | '|')
}

#[derive(Debug)]
pub(super) struct VarSpec {
    pub(super) name: String,
    pub(super) prefix: Option<u16>,
    pub(super) explode: bool,
}

#[derive(Debug)]
pub(super) struct Expression {
    pub(super) op: Operator,
    pub(super) vars: Vec<VarSpec>,
}

#[derive(Debug)]
pub(super) enum Piece<'a> {
    Literal(&'a str),
    Expression(Expression),
}

/// Splits the source into literals and parsed expressions.
pub(super) fn parse_pieces(src: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let bytes = src.as_bytes();
    let mut pieces = Vec::new();
    let (mut i, mut literal_start) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'}' => return Err(TemplateError::UnopenedBrace { at: i }),
            b'{' => {
                let close = find_close(bytes, i)?;
                if literal_start < i {
                    pieces.push(Piece::Literal(&src[literal_start..i]));
                }
                // `{` and `}` are ASCII, so these slice bounds are char boundaries.
                let expr = parse_expression(&src[i + 1..close], i)?;
                pieces.push(Piece::Expression(expr));
                i = close + 1;
                literal_start = i;
            }
            _ => i += 1,
        }
    }
    if literal_start < bytes.len() {
        pieces.push(Piece::Literal(&src[literal_start..]));
    }
    Ok(pieces)
}

/// Index of the `}` closing the expression opened at `open`.
fn find_close(bytes: &[u8], open: usize) -> Result<usize, TemplateError> {
    for (at, &b) in bytes.iter().enumerate().skip(open + 1) {
        match b {
            b'}' => return Ok(at),
            b'{' => return Err(TemplateError::NestedBrace { at }),
            _ => {}
        }
    }
    Err(TemplateError::UnclosedBrace { at: open })
}

/// Parses the text between the braces of the expression whose `{` is at byte `at`.
fn parse_expression(body: &str, at: usize) -> Result<Expression, TemplateError> {
    let first = body
        .chars()
        .next()
        .ok_or(TemplateError::EmptyExpression { at })?;
    if is_reserved_operator(first) {
        return Err(TemplateError::ReservedOperator { op: first, at });
    }
    let (op, list) = match Operator::from_char(first) {
        // Every operator is one ASCII byte.
        Some(op) => (op, &body[1..]),
        None => (Operator::Simple, body),
    };
    if list.is_empty() {
        return Err(TemplateError::EmptyExpression { at });
    }
    let vars = list
        .split(',')
        .map(|spec| parse_varspec(spec, at))
        .collect::<Result<_, _>>()?;
    Ok(Expression { op, vars })
}

/// Parses `name`, `name*` or `name:N`.
fn parse_varspec(spec: &str, at: usize) -> Result<VarSpec, TemplateError> {
    let (name, explode) = match spec.strip_suffix('*') {
        Some(name) => (name, true),
        None => (spec, false),
    };
    let (name, raw_prefix) = match name.split_once(':') {
        Some((name, raw)) => (name, Some(raw)),
        None => (name, None),
    };
    if raw_prefix.is_some() {
        // `x:3*` has already lost its `*`; `x*:3` still carries it on the name.
        let bare = name.strip_suffix('*');
        if explode || bare.is_some() {
            let name = bare.unwrap_or(name).to_owned();
            return Err(TemplateError::PrefixWithExplode { name });
        }
    }
    if !is_varname(name) {
        return Err(TemplateError::InvalidVarname {
            name: name.to_owned(),
            at,
        });
    }
    let prefix = raw_prefix
        .map(|raw| {
            parse_prefix(raw).ok_or_else(|| TemplateError::InvalidPrefix {
                name: name.to_owned(),
                raw: raw.to_owned(),
            })
        })
        .transpose()?;
    Ok(VarSpec {
        name: name.to_owned(),
        prefix,
        explode,
    })
}

/// `varname = varchar *( ["."] varchar )`, `varchar = ALPHA / DIGIT / "_" / pct-encoded`.
fn is_varname(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    let mut after_dot = true; // a name may neither start nor end with `.`, nor hold `..`
    while i < b.len() {
        if b[i] == b'.' && !after_dot {
            after_dot = true;
            i += 1;
        } else if b[i] == b'%'
            && b.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            after_dot = false;
            i += 3;
        } else if b[i].is_ascii_alphanumeric() || b[i] == b'_' {
            after_dot = false;
            i += 1;
        } else {
            return false;
        }
    }
    !after_dot
}

/// `max-length = %x31-39 0*3DIGIT`, i.e. 1..=9999 without leading zeros.
fn parse_prefix(raw: &str) -> Option<u16> {
    let well_formed = (1..=4).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_digit())
        && !raw.starts_with('0');
    well_formed.then(|| raw.parse().ok()).flatten()
}

/// The literal text before the first and after the last expression.
pub(super) fn literal_ends<'a>(pieces: &[Piece<'a>]) -> (&'a str, &'a str) {
    let head = match pieces.first() {
        Some(Piece::Literal(s)) => s,
        _ => "",
    };
    let tail = match (pieces.len(), pieces.last()) {
        (2.., Some(Piece::Literal(s))) => s,
        _ => "",
    };
    (head, tail)
}

/// Which bytes a value may contain literally (anything else must arrive as `%XX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Unreserved,
    UnreservedOrReserved,
}

impl Class {
    pub(super) fn allows(self, b: u8) -> bool {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        match self {
            Self::Unreserved => unreserved,
            Self::UnreservedOrReserved => unreserved || b":/?#[]@!$&'()*+,;=".contains(&b),
        }
    }
}
