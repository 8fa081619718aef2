//! The cheap, deterministic part of ftfy's `fix_text`, applied before tokenizing.

use tokenizers::NormalizedString;

use super::html::unescape_html;

/// The cheap part of OpenAI's `basic_clean` (`ftfy.fix_text` + `html.unescape` twice).
///
/// Applied, in ftfy's order: HTML entities (only if the text has no `<`, like ftfy's "auto"
/// mode), Latin ligatures, fullwidth/halfwidth forms, curly quotes, control characters; then
/// two more rounds of HTML unescaping as OpenAI does, and Python-style lowercasing (with
/// the final-sigma rule). NFC and whitespace are handled by the tokenizer's normalizer.
/// Mojibake repair is not attempted (see the [module docs](super)).
pub fn clean_text(text: &str) -> String {
    let text = if text.contains('&') && !text.contains('<') {
        unescape_html(text, false)
    } else {
        text.to_owned()
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        fix_char(c, &mut out);
    }
    if out.contains('&') {
        out = unescape_html(&unescape_html(&out, true), true);
    }
    // Whole-string lowercasing, like Python's `str.lower()`: unlike the tokenizer's per-char
    // normalizer it knows that a word-final 'Σ' becomes 'ς'.
    out.to_lowercase()
}

/// ftfy's per-character fixes, in its order: ligatures, width, quotes, control characters.
fn fix_char(c: char, out: &mut String) {
    if let Some(s) = latin_ligature(c) {
        out.push_str(s);
        return;
    }
    let c = match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FFEF}' => {
            // ftfy maps each width form to its NFKC equivalent.
            let mut normalized = NormalizedString::from(c.to_string());
            normalized.nfkc();
            for c in normalized.get().chars() {
                push_fixed_quote_or_control(c, out);
            }
            return;
        }
        c => c,
    };
    push_fixed_quote_or_control(c, out);
}

fn push_fixed_quote_or_control(c: char, out: &mut String) {
    match c {
        '\u{02BC}' | '\u{2018}'..='\u{201B}' => out.push('\''),
        '\u{201C}'..='\u{201F}' => out.push('"'),
        '\u{0}'..='\u{8}'
        | '\u{B}'
        | '\u{E}'..='\u{1F}'
        | '\u{7F}'
        | '\u{206A}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFC}' => {}
        c => out.push(c),
    }
}

fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_like_ftfy() {
        assert_eq!(clean_text("‘a’ “b”"), "'a' \"b\"");
        assert_eq!(clean_text("ﬁne"), "fine");
        assert_eq!(clean_text("ＡＢＣ１\u{3000}x"), "abc1 x");
        assert_eq!(clean_text("ΟΔΟΣ"), "\u{3bf}\u{3b4}\u{3bf}\u{3c2}");
        assert_eq!(clean_text("a\u{0}b\u{7F}c\u{FEFF}"), "abc");
        assert_eq!(clean_text("&ldquo;hi&rdquo;"), "\"hi\"");
        // With a '<' ftfy skips its own unescaping, so the quotes stay curly.
        assert_eq!(clean_text("<&ldquo;"), "<“");
    }
}
