//! A shields.io "flat" badge: grey label on the left, coloured message on the right,
//! sized from the text so it needs no font at render time.

use std::fmt::Write as _;

/// Advance widths of Verdana (what shields.io measures with) for ASCII 32..=126, in
/// 1/2048 em. Close enough that a badge's text fits its box without a font file; text
/// is also drawn with `textLength`, so a viewer with another font stretches it to fit.
const VERDANA_ADVANCE: [u16; 95] = [
    720, 806, 940, 1716, 1303, 2204, 1487, 550, 909, 909, 1303, 1716, 745, 929, 745,
    909, // ' '..'/'
    1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, // '0'..'9'
    909, 909, 1716, 1716, 1716, 1110, 2048, // ':'..'@'
    1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 862, 931, 1416, 1145, 1738, // 'A'..'M'
    1532, 1612, 1237, 1612, 1423, 1399, 1245, 1501, 1401, 2025, 1399, 1243, 1399, // 'N'..'Z'
    909, 909, 909, 1716, 1303, 1303, // '['..'`'
    1229, 1276, 1067, 1276, 1220, 720, 1276, 1296, 562, 705, 1186, 562, 1993, // 'a'..'m'
    1296, 1243, 1276, 1276, 874, 1067, 807, 1296, 1186, 1665, 1186, 1186, 1051, // 'n'..'z'
    1300, 909, 1300, 1716, // '{'..'~'
];

/// Font size of badge text, in pixels.
const FONT_PX: f64 = 11.0;
/// Space left and right of each text, in pixels together.
const PADDING: u32 = 10;

/// The width of `text` in Verdana 11px, in pixels. Characters outside ASCII are
/// guessed: East Asian scripts a full em, anything else an average Latin letter.
pub fn text_width(text: &str) -> f64 {
    let units: u32 = text
        .chars()
        .map(|c| match c as u32 {
            code @ 32..=126 => u32::from(VERDANA_ADVANCE[(code - 32) as usize]),
            0x2E80.. => 2048,
            _ => 1300,
        })
        .sum();
    f64::from(units) * FONT_PX / 2048.0
}

/// The flat badge for `label` and `message` on a `color` (`#rrggbb` or `#rgb`)
/// background. Both texts are XML-escaped here.
pub fn flat(label: &str, message: &str, color: &str) -> String {
    let label_text = text_width(label).round() as u32;
    let message_text = text_width(message).round() as u32;
    let label_w = label_text + PADDING;
    let message_w = message_text + PADDING;
    let width = label_w + message_w;
    let (label, message) = (escape(label), escape(message));
    let title = format!("{label}: {message}");
    // Text is laid out at ten times the size and scaled down, as shields does, so
    // positions keep a tenth of a pixel of precision in integers.
    let label_x = label_w * 5 + 10;
    let message_x = label_w * 10 + message_w * 5 - 10;
    let mut svg = String::with_capacity(1200);
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{title}"><title>{title}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{label_w}" height="20" fill="#555"/><rect x="{label_w}" width="{message_w}" height="20" fill="{color}"/><rect width="{width}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="110">"##
    );
    for (x, length, text) in [
        (label_x, label_text * 10, &label),
        (message_x, message_text * 10, &message),
    ] {
        let _ = write!(
            svg,
            r##"<text aria-hidden="true" x="{x}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{length}">{text}</text><text x="{x}" y="140" transform="scale(.1)" fill="#fff" textLength="{length}">{text}</text>"##
        );
    }
    svg.push_str("</g></svg>");
    svg
}

/// Text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_follow_verdana() {
        // shields.io draws "build" 27 px and "passing" 42 px wide.
        assert_eq!(text_width("build").round(), 27.0);
        assert_eq!(text_width("passing").round(), 42.0);
        assert!(text_width("WWW") > text_width("iii") * 3.0);
        assert_eq!(text_width(""), 0.0);
        // Outside ASCII: a guess, never zero.
        assert!(text_width("é") > 5.0);
        assert_eq!(text_width("构建"), 22.0);
    }

    #[test]
    fn a_badge_is_sized_from_its_texts() {
        let svg = flat("build", "passing", "#4c1");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"89\""));
        assert!(svg.contains(r#"aria-label="build: passing""#), "{svg}");
        assert!(svg.contains("<title>build: passing</title>"));
        assert!(svg.contains(r##"<rect width="37" height="20" fill="#555"/>"##));
        assert!(svg.contains(r##"<rect x="37" width="52" height="20" fill="#4c1"/>"##));
        assert!(svg.contains(
            r##"x="195" y="140" transform="scale(.1)" fill="#fff" textLength="270">build<"##
        ));
        assert!(svg.contains(
            r##"x="620" y="140" transform="scale(.1)" fill="#fff" textLength="420">passing<"##
        ));
        assert!(svg.ends_with("</g></svg>"));
        let width = |svg: &str| svg.split('"').nth(3).unwrap().parse::<u32>().unwrap();
        assert_eq!(width(&svg), 89);
        assert!(
            width(&flat("build", "cancelled", "#9f9f9f"))
                > width(&flat("build", "failing", "#e05d44"))
        );
    }

    #[test]
    fn texts_are_escaped() {
        let svg = flat(r#"<a href="x">&'"#, "ok", "#4c1");
        assert!(!svg.contains("<a "), "{svg}");
        assert!(
            svg.contains("&lt;a href=&quot;x&quot;&gt;&amp;&apos;"),
            "{svg}"
        );
    }
}
