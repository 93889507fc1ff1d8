//! A small XML writer for the libvirt target: element and attribute names are
//! fixed by the caller's code, every value passes through [`escape`].

/// An XML document being written, indented two spaces per level.
pub(crate) struct XmlDoc {
    out: String,
    open: Vec<&'static str>,
}

impl XmlDoc {
    /// An empty document.
    pub(crate) fn new() -> Self {
        XmlDoc {
            out: String::new(),
            open: Vec::new(),
        }
    }

    /// Writes `<name attrs...>` and leaves it open for children.
    pub(crate) fn open(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.open.push(name);
    }

    /// Writes `<name attrs.../>`.
    pub(crate) fn empty(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// Writes `<name attrs...>text</name>`.
    pub(crate) fn text(&mut self, name: &'static str, attrs: &[(&str, &str)], text: &str) {
        self.start_tag(name, attrs);
        self.out.push('>');
        escape(text, &mut self.out);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// Writes an XML comment; `--` in the text (not allowed there) becomes `- -`.
    pub(crate) fn comment(&mut self, text: &str) {
        self.indent();
        self.out.push_str("<!-- ");
        let mut clean = String::new();
        escape(text, &mut clean);
        while clean.contains("--") {
            clean = clean.replace("--", "- -");
        }
        self.out.push_str(clean.trim_end_matches('-'));
        self.out.push_str(" -->\n");
    }

    /// Closes the innermost open element.
    pub(crate) fn close(&mut self) {
        if let Some(name) = self.open.pop() {
            self.indent();
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push_str(">\n");
        }
    }

    /// Closes every open element and returns the text.
    pub(crate) fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }

    fn start_tag(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("='");
            escape(v, &mut self.out);
            self.out.push('\'');
        }
    }

    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
    }
}

/// Appends `s` escaped for XML text or a quoted attribute value. Characters XML
/// 1.0 cannot carry at all (most C0 controls, U+FFFE/U+FFFF) become U+FFFD;
/// tab, newline and CR are written as character references so attribute
/// normalisation keeps them.
pub(crate) fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials_and_controls() {
        let mut s = String::new();
        escape("a<b>&'\"\u{1}\tz", &mut s);
        assert_eq!(s, "a&lt;b&gt;&amp;&apos;&quot;\u{FFFD}&#9;z");
    }

    #[test]
    fn nesting_and_comments() {
        let mut d = XmlDoc::new();
        d.open("a", &[("k", "v'")]);
        d.comment("x -- y-");
        d.text("b", &[], "t&");
        d.empty("c", &[]);
        assert_eq!(
            d.finish(),
            "<a k='v&apos;'>\n  <!-- x - - y -->\n  <b>t&amp;</b>\n  <c/>\n</a>\n"
        );
    }
}
