//! A reader for Java `.properties` text, as `java.util.Properties#load` reads it, that keeps
//! the line each entry starts on (so every problem can be reported where it was written).
//!
//! The rules: lines end with `\n`, `\r\n` or `\r`; leading blanks (space, tab, form feed) are
//! skipped; a line whose first non-blank character is `#` or `!` is a comment; a line ending
//! in an odd number of backslashes continues on the next one, whose leading blanks are
//! skipped. The key runs to the first unescaped `=`, `:` or blank; then blanks, at most one
//! `=` or `:`, and blanks again separate it from the value. `\t`, `\n`, `\r`, `\f` and
//! `\uXXXX` are escapes in keys and values; a backslash before any other character stands for
//! that character.

/// One `key = value` entry; `line` is the 1-based line its (logical) line starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Property {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Every entry of `text` in file order. A key written twice appears twice (the last one wins,
/// as in Java; the caller decides what to say about the first).
pub(super) fn parse(text: &str) -> Vec<Property> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = natural_lines(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim_start_matches(is_blank);
        i += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = first.to_owned();
        while continues(&logical) {
            logical.pop();
            if i >= lines.len() {
                break;
            }
            logical.push_str(lines[i].trim_start_matches(is_blank));
            i += 1;
        }
        let (key, value) = split_entry(&logical);
        out.push(Property {
            key: unescape(key),
            value: unescape(value),
            line: start + 1,
        });
    }
    out
}

/// The blanks of the format: space, tab and form feed.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Splits on `\n`, `\r\n` and `\r`, as Java does.
fn natural_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push(&text[start..i]);
                i += 1;
                if bytes.get(i) == Some(&b'\n') {
                    i += 1;
                }
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        out.push(&text[start..]);
    }
    out
}

/// Whether a line ends in an odd number of backslashes (the last one joins the next line).
fn continues(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// The key and the value of a logical line, both still escaped.
fn split_entry(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut end: Option<(usize, char)> = None;
    for (idx, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' => {
                end = Some((idx, c));
                break;
            }
            c if is_blank(c) => {
                end = Some((idx, c));
                break;
            }
            _ => {}
        }
    }
    let Some((idx, c)) = end else {
        return (line, "");
    };
    let key = &line[..idx];
    let rest = if is_blank(c) {
        let r = line[idx..].trim_start_matches(is_blank);
        r.strip_prefix(['=', ':']).unwrap_or(r)
    } else {
        &line[idx + c.len_utf8()..]
    };
    (key, rest.trim_start_matches(is_blank))
}

/// Resolves the escapes of a key or a value.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = chars.get(i) else {
            break;
        };
        i += 1;
        match e {
            't' => out.push('\t'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            'f' => out.push('\x0c'),
            'u' => match hex4(&chars, i) {
                Some(unit) => {
                    i += 4;
                    let low = if (0xD800..0xDC00).contains(&unit)
                        && chars.get(i) == Some(&'\\')
                        && chars.get(i + 1) == Some(&'u')
                    {
                        hex4(&chars, i + 2).filter(|l| (0xDC00..0xE000).contains(l))
                    } else {
                        None
                    };
                    match low {
                        Some(low) => {
                            i += 6;
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        None => out.push(char::from_u32(unit).unwrap_or('\u{fffd}')),
                    }
                }
                // Java refuses a malformed \uXXXX; keeping it as written is the useful choice
                // here (the value will be reported wherever it does not make sense).
                None => out.push_str("\\u"),
            },
            other => out.push(other),
        }
    }
    out
}

/// The UTF-16 unit written as four hex digits at `chars[at..]`.
fn hex4(chars: &[char], at: usize) -> Option<u32> {
    let digits = chars.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, c| Some(acc * 16 + c.to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(String, String, usize)> {
        parse(text)
            .into_iter()
            .map(|p| (p.key, p.value, p.line))
            .collect()
    }

    fn e(key: &str, value: &str, line: usize) -> (String, String, usize) {
        (key.to_owned(), value.to_owned(), line)
    }

    #[test]
    fn separators_and_blanks() {
        let text = "a=1\nb = 2\nc: 3\n  d\t=\t4\ne 5\nf\ng = \nh=x=y\ni :: j\n";
        assert_eq!(
            entries(text),
            [
                e("a", "1", 1),
                e("b", "2", 2),
                e("c", "3", 3),
                e("d", "4", 4),
                e("e", "5", 5),
                e("f", "", 6),
                e("g", "", 7),
                e("h", "x=y", 8),
                e("i", ": j", 9),
            ]
        );
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_but_counted() {
        let text = "# a comment\n\n   ! another\n\t\na = 1\n#b = 2\n";
        assert_eq!(entries(text), [e("a", "1", 5)]);
    }

    #[test]
    fn continuations_join_lines_and_keep_the_first_line_number() {
        let text = "x = 1\nlist = a \\\n       b \\\n  c\ny = 2\n";
        assert_eq!(
            entries(text),
            [e("x", "1", 1), e("list", "a b c", 2), e("y", "2", 5)]
        );
        // An even number of backslashes is an escaped backslash, not a continuation.
        assert_eq!(
            entries("p = C:\\\\\nq = 1\n"),
            [e("p", "C:\\", 1), e("q", "1", 2)]
        );
        // A comment line does not continue, and a continued line may start with `#`.
        assert_eq!(entries("# c \\\nk = a\\\n  #b\n"), [e("k", "a#b", 2)]);
    }

    #[test]
    fn line_endings() {
        assert_eq!(
            entries("a=1\r\nb=2\rc=3"),
            [e("a", "1", 1), e("b", "2", 2), e("c", "3", 3)]
        );
    }

    #[test]
    fn escapes() {
        let text = "re = (\\\\d):(\\\\d)\nkey\\:with\\=seps\\ x = v\nu = caf\\u00e9 \\ud83d\\ude00\nt = a\\tb\\qc\n";
        assert_eq!(
            entries(text),
            [
                e("re", "(\\d):(\\d)", 1),
                e("key:with=seps x", "v", 2),
                e("u", "café 😀", 3),
                e("t", "a\tbqc", 4),
            ]
        );
    }

    #[test]
    fn trailing_blanks_stay_in_values_and_a_bom_is_ignored() {
        assert_eq!(entries("\u{feff}a = x  \n"), [e("a", "x  ", 1)]);
    }
}
