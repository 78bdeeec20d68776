//! haproxy.cfg's lines as HAProxy reads them: one statement a line (no continuation lines),
//! words split at unquoted blanks, `#` starting a comment, weak (`"…"`) and strong (`'…'`)
//! quotes, backslash escapes, and `.if`/`.elif`/`.else`/`.endif` blocks (not evaluated: the
//! first branch is read).

use super::warnings::Warnings;

/// One statement: its words after quoting and escapes, and its line number (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) number: usize,
    pub(super) words: Vec<String>,
}

impl Line {
    /// Word `i`, or "" past the end.
    pub(super) fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    /// The statement written again (words joined by one space, control characters escaped as
    /// haproxy.cfg writes them), for comments and warnings.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        for (i, w) in self.words.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let quote = w.is_empty() || w.contains([' ', '#']);
            if quote {
                out.push('\'');
            }
            for c in w.chars() {
                match c {
                    '\r' => out.push_str("\\r"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            if quote {
                out.push('\'');
            }
        }
        out
    }
}

/// The statements of `text`, with a warning for each quirk met (a backslash at the end of a
/// line, an unclosed quote, an environment variable, a conditional block).
pub(super) fn lex(text: &str, warn: &mut Warnings) -> Vec<Line> {
    let mut out = Vec::new();
    // Per open `.if`: whether its branch being read is over (an `.elif`/`.else` was met).
    let mut blocks: Vec<bool> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let words = match words(raw) {
            Ok(Split {
                words,
                trailing_backslash,
                variables,
            }) => {
                if trailing_backslash {
                    warn.at(
                        number,
                        "a backslash at the end of a line does not continue it in haproxy.cfg \
                         (HAProxy reads the next line as a statement of its own); read the same way",
                    );
                }
                for v in variables {
                    warn.at(
                        number,
                        format!(
                            "environment variable {v} is not expanded (HAProxy expands it when it \
                             starts); write its value in the xlb config"
                        ),
                    );
                }
                words
            }
            Err(quote) => {
                warn.at(
                    number,
                    format!("unclosed {quote} quote: line skipped, as HAProxy refuses it"),
                );
                continue;
            }
        };
        let Some(first) = words.first() else { continue };
        let skipping = blocks.iter().any(|over| *over);
        match first.as_str() {
            ".if" => {
                if !skipping {
                    warn.at(
                        number,
                        format!(
                            "`{}`: conditions are not evaluated; the lines up to its first .elif or \
                             .else are read, the other branches skipped",
                            words.join(" ")
                        ),
                    );
                }
                blocks.push(false);
            }
            ".elif" | ".else" => match blocks.last_mut() {
                Some(over) => *over = true,
                None => warn.at(number, format!("{first} without .if: ignored")),
            },
            ".endif" => {
                if blocks.pop().is_none() {
                    warn.at(number, ".endif without .if: ignored");
                }
            }
            ".diag" | ".notice" | ".warning" | ".alert" if !skipping => {
                warn.at(
                    number,
                    format!("{first}: a message HAProxy prints when it starts; ignored"),
                );
            }
            _ if skipping => {}
            _ => out.push(Line { number, words }),
        }
    }
    if !blocks.is_empty() {
        warn.at(text.lines().count(), ".if without .endif at the end of the file");
    }
    out
}

/// One line's words.
struct Split {
    words: Vec<String>,
    trailing_backslash: bool,
    /// `$NAME`/`${NAME}` met in weak quotes, as written.
    variables: Vec<String>,
}

/// Split one line into words, or name the quote (`"double"`/`"single"`) left open.
fn words(line: &str) -> Result<Split, &'static str> {
    let mut split = Split {
        words: Vec::new(),
        trailing_backslash: false,
        variables: Vec::new(),
    };
    let mut word = String::new();
    // A word is open (even an empty one, `""`).
    let mut open = false;
    let mut chars = line.chars().peekable();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        if single {
            if c == '\'' {
                single = false;
            } else {
                word.push(c);
            }
            continue;
        }
        match c {
            '\\' => match chars.next() {
                None => split.trailing_backslash = true,
                Some(e) => {
                    open = true;
                    match e {
                        ' ' | '\t' | '#' | '\\' | '\'' | '"' => word.push(e),
                        '$' if double => word.push('$'),
                        'r' => word.push('\r'),
                        'n' => word.push('\n'),
                        't' => word.push('\t'),
                        'x' => {
                            let hex: String = chars.clone().take(2).collect();
                            match u8::from_str_radix(&hex, 16) {
                                Ok(b) if hex.len() == 2 => {
                                    word.push(char::from(b));
                                    chars.nth(1);
                                }
                                _ => word.push_str("\\x"),
                            }
                        }
                        // Any other escape is kept as written (regular expressions: `\d`, `\.`).
                        other => {
                            word.push('\\');
                            word.push(other);
                        }
                    }
                }
            },
            '"' => {
                double = !double;
                open = true;
            }
            '\'' if !double => {
                single = true;
                open = true;
            }
            '$' if double => {
                let mut name = String::from("$");
                if chars.peek() == Some(&'{') {
                    for n in chars.by_ref() {
                        name.push(n);
                        if n == '}' {
                            break;
                        }
                    }
                } else {
                    while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                        name.push(n);
                        chars.next();
                    }
                }
                if name.len() > 1 {
                    split.variables.push(name.clone());
                }
                word.push_str(&name);
                open = true;
            }
            '#' if !double => break,
            ' ' | '\t' if !double => {
                if open {
                    split.words.push(std::mem::take(&mut word));
                    open = false;
                }
            }
            c => {
                word.push(c);
                open = true;
            }
        }
    }
    if single {
        return Err("single");
    }
    if double {
        return Err("double");
    }
    if open {
        split.words.push(word);
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexed(text: &str) -> (Vec<Vec<String>>, Vec<String>) {
        let mut w = Warnings::default();
        let lines = lex(text, &mut w).into_iter().map(|l| l.words).collect();
        (lines, w.into_sorted().iter().map(|w| w.to_string()).collect())
    }

    fn one(line: &str) -> Vec<String> {
        let (lines, warnings) = lexed(line);
        assert!(warnings.is_empty(), "{warnings:?}");
        lines.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn words_comments_and_blank_lines() {
        let (lines, _) = lexed("global\n  # a comment\n\n\tmaxconn   4096 # trailing\nbackend be_app#x\n");
        assert_eq!(
            lines,
            [vec!["global"], vec!["maxconn", "4096"], vec!["backend", "be_app"]]
        );
    }

    #[test]
    fn quotes_join_into_one_word() {
        assert_eq!(one(r#"log-format "%t %s" x"#), ["log-format", "%t %s", "x"]);
        assert_eq!(
            one("acl a path_reg '^/a b\\d$'"),
            ["acl", "a", "path_reg", "^/a b\\d$"]
        );
        assert_eq!(one(r#"x "a # b"'c d'e"#), ["x", "a # bc de"]);
        assert_eq!(one(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(one(r#"x "it's""#), ["x", "it's"]);
    }

    #[test]
    fn backslash_escapes() {
        assert_eq!(one(r"x a\ b c\#d e\\f"), ["x", "a b", "c#d", "e\\f"]);
        assert_eq!(
            one(r"option httpchk GET /h HTTP/1.1\r\nHost:\ www"),
            ["option", "httpchk", "GET", "/h", "HTTP/1.1\r\nHost: www"]
        );
        assert_eq!(one(r"x \x41\x4a \xZZ \d"), ["x", "AJ", "\\xZZ", "\\d"]);
        assert_eq!(one(r#"x \"q\" "\$5""#), ["x", "\"q\"", "$5"]);
    }

    #[test]
    fn quirks_are_warned_about() {
        let (lines, w) = lexed("bind \"${VIP}:80\"\nserver a 10.0.0.1:80 \\\n  check\nacl x 'open\n");
        assert_eq!(
            lines,
            [
                vec!["bind", "${VIP}:80"],
                vec!["server", "a", "10.0.0.1:80"],
                vec!["check"]
            ]
        );
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("haproxy.cfg:1: warning: environment variable ${VIP}"),
            "{w:?}"
        );
        assert!(
            w[1].contains(":2: warning: a backslash at the end of a line"),
            "{w:?}"
        );
        assert!(w[2].contains(":4: warning: unclosed single quote"), "{w:?}");
    }

    #[test]
    fn conditional_blocks_read_their_first_branch() {
        let text =
            ".if defined(A)\n a\n .if 1\n  b\n .else\n  c\n .endif\n.elif 1\n d\n.else\n e\n.endif\nf\n";
        let (lines, w) = lexed(text);
        assert_eq!(lines, [vec!["a"], vec!["b"], vec!["f"]]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains(":1: warning: `.if defined(A)`"), "{w:?}");
        let (_, w) = lexed(".if 1\na\n");
        assert!(w[1].contains(".if without .endif"), "{w:?}");
    }
}
