//! HTML character reference decoding, as ftfy's `unescape_html` and Python's `html.unescape`.

/// Common named entities (HTML5 names, value). Covers the ones seen in captions and alt text;
/// the rest of HTML5's 2,000+ names are left as they are.
const NAMED_ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{A0}"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("hellip", "…"),
    ("mdash", "—"),
    ("ndash", "–"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("bull", "•"),
    ("middot", "·"),
    ("deg", "°"),
    ("times", "×"),
    ("divide", "÷"),
    ("plusmn", "±"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("para", "¶"),
    ("frac12", "½"),
    ("frac14", "¼"),
    ("frac34", "¾"),
    ("iexcl", "¡"),
    ("iquest", "¿"),
    ("aacute", "á"),
    ("agrave", "à"),
    ("acirc", "â"),
    ("atilde", "ã"),
    ("auml", "ä"),
    ("aring", "å"),
    ("aelig", "æ"),
    ("ccedil", "ç"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("ecirc", "ê"),
    ("euml", "ë"),
    ("iacute", "í"),
    ("igrave", "ì"),
    ("icirc", "î"),
    ("iuml", "ï"),
    ("ntilde", "ñ"),
    ("oacute", "ó"),
    ("ograve", "ò"),
    ("ocirc", "ô"),
    ("otilde", "õ"),
    ("ouml", "ö"),
    ("oslash", "ø"),
    ("uacute", "ú"),
    ("ugrave", "ù"),
    ("ucirc", "û"),
    ("uuml", "ü"),
    ("yacute", "ý"),
    ("yuml", "ÿ"),
    ("szlig", "ß"),
    ("Aacute", "Á"),
    ("Agrave", "À"),
    ("Acirc", "Â"),
    ("Atilde", "Ã"),
    ("Auml", "Ä"),
    ("Aring", "Å"),
    ("AElig", "Æ"),
    ("Ccedil", "Ç"),
    ("Eacute", "É"),
    ("Egrave", "È"),
    ("Ecirc", "Ê"),
    ("Euml", "Ë"),
    ("Iacute", "Í"),
    ("Igrave", "Ì"),
    ("Icirc", "Î"),
    ("Iuml", "Ï"),
    ("Ntilde", "Ñ"),
    ("Oacute", "Ó"),
    ("Ograve", "Ò"),
    ("Ocirc", "Ô"),
    ("Otilde", "Õ"),
    ("Ouml", "Ö"),
    ("Oslash", "Ø"),
    ("Uacute", "Ú"),
    ("Ugrave", "Ù"),
    ("Ucirc", "Û"),
    ("Uuml", "Ü"),
    ("Yacute", "Ý"),
];

/// Names HTML5 also accepts without the `;` (the legacy subset of [`NAMED_ENTITIES`] that
/// Python's `html.unescape` honours), longest first so the longest prefix wins.
const LEGACY_NO_SEMICOLON: &[&str] = &["nbsp", "quot", "copy", "amp", "reg", "lt", "gt"];

/// Decodes HTML character references. `lenient` mimics Python's `html.unescape` (numeric
/// references without `;`, legacy names without `;`); otherwise only `&name;`, `&#N;` and
/// `&#xH;` are decoded, like ftfy's `unescape_html`.
pub(super) fn unescape_html(text: &str, lenient: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match decode_reference(after, lenient) {
            Some((decoded, consumed)) => {
                out.push_str(&decoded);
                rest = &after[consumed..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference at the start of `s` (just after `&`): returns the text and the
/// number of bytes of `s` consumed.
fn decode_reference(s: &str, lenient: bool) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (radix, digits_start) = match num.as_bytes().first() {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits: &str = {
            let body = &s[digits_start..];
            let end = body
                .find(|c: char| !c.is_digit(radix))
                .unwrap_or(body.len());
            &body[..end]
        };
        if digits.is_empty() {
            return None;
        }
        let mut consumed = digits_start + digits.len();
        if s[consumed..].starts_with(';') {
            consumed += 1;
        } else if !lenient {
            return None;
        }
        let value = u32::from_str_radix(digits, radix).unwrap_or(u32::MAX);
        return Some((numeric_reference(value), consumed));
    }
    let name_end = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let name = &s[..name_end];
    if s[name_end..].starts_with(';') {
        if let Some((_, value)) = NAMED_ENTITIES.iter().find(|(n, _)| *n == name) {
            return Some(((*value).to_owned(), name_end + 1));
        }
    }
    if lenient {
        for legacy in LEGACY_NO_SEMICOLON {
            if name.starts_with(legacy) {
                let value = NAMED_ENTITIES
                    .iter()
                    .find(|(n, _)| n == legacy)
                    .map(|(_, v)| *v)?;
                return Some((value.to_owned(), legacy.len()));
            }
        }
    }
    None
}

/// A numeric character reference's text, following HTML5 (and Python's `html.unescape`):
/// NUL, surrogates and out-of-range values become U+FFFD, 0x80–0x9F are read as Windows-1252,
/// and non-characters / C0 controls are dropped.
fn numeric_reference(value: u32) -> String {
    const CP1252: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match value {
        0 | 0xD800..=0xDFFF | 0x11_0000.. => "\u{FFFD}".into(),
        0x0D => "\r".into(),
        0x80..=0x9F => CP1252[(value - 0x80) as usize].to_string(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        v if v & 0xFFFE == 0xFFFE => String::new(),
        v => char::from_u32(v).map(String::from).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_unescape_subset() {
        assert_eq!(
            unescape_html("fish &amp; chips &lt;3", true),
            "fish & chips <3"
        );
        assert_eq!(unescape_html("&amp;amp;", true), "&amp;");
        assert_eq!(unescape_html("&#233;t&#xE9;", true), "été");
        assert_eq!(unescape_html("&ampx &#65", true), "&x A");
        assert_eq!(unescape_html("&ampx &#65", false), "&ampx &#65");
        assert_eq!(unescape_html("&unknown; & &", true), "&unknown; & &");
        assert_eq!(unescape_html("&#150;", true), "–");
        assert_eq!(unescape_html("&#0;&#x110000;", true), "\u{FFFD}\u{FFFD}");
    }
}
