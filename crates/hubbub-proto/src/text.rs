//! Characters Mercure 1.0 forbids in topics and topic matchers: C0 and C1
//! controls, DEL and Unicode format characters (general category `Cf`). They
//! are invisible or reorder text (bidi overrides, zero-width joiners), so two
//! matchers that look identical could select different topics; controls could
//! also break the SSE framing or log lines.

/// Every `Cf` range of Unicode 15 (14 plus the Egyptian hieroglyph format
/// controls U+13439..U+1343F that 15 added). The draft lets a hub reject
/// characters later versions add, so a fixed table is enough.
const FORMAT: &[(u32, u32)] = &[
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// A control (C0, DEL, C1) or format (`Cf`) character.
pub fn is_forbidden(c: char) -> bool {
    let c = u32::from(c);
    c < 0x20
        || (0x7F..=0x9F).contains(&c)
        || FORMAT
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

/// The first forbidden character of `s`, if any.
pub fn forbidden_char(s: &str) -> Option<char> {
    s.chars().find(|&c| is_forbidden(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_format_characters() {
        for c in [
            '\0',
            '\n',
            '\u{1F}',
            '\u{7F}',
            '\u{80}',
            '\u{9F}',
            '\u{AD}',
            '\u{200B}',
            '\u{200F}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{1343F}',
            '\u{E0001}',
            '\u{E007F}',
        ] {
            assert!(is_forbidden(c), "{:?} is forbidden", c);
        }
        for c in [
            ' ',
            'a',
            '~',
            '\u{A0}',
            '\u{AE}',
            '\u{2010}',
            '\u{FFFD}',
            '\u{1F600}',
            '\u{E0080}',
        ] {
            assert!(!is_forbidden(c), "{:?} is allowed", c);
        }
        assert_eq!(forbidden_char("https://a/b"), None);
        assert_eq!(forbidden_char("https://a/\u{202E}b"), Some('\u{202E}'));
    }

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for pair in FORMAT.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
    }
}
