//! The nesting limit of chain files, checked on the raw text before the YAML parser runs.
//!
//! Why before: the parser (serde_yaml_ng over unsafe-libyaml, a line-by-line translation of
//! libyaml) keeps one "possible simple key" slot per open flow collection (`[` or `{`) and,
//! before every token, walks the slots to expire stale ones (`yaml_parser_stale_simple_keys`).
//! It skips a leading run of expired slots, but once the first slot is empty for another reason
//! (after `key: `, for instance) every token walks every open level, so `key: [[[[…` costs
//! depth × tokens: quadratic (200 KB took 149 s in a release build). serde_yaml_ng's own
//! recursion limit (128) applies only when the events become values, after the whole document
//! has been scanned: too late.
//!
//! So the text is scanned first, in one pass, the way libyaml's scanner splits it into tokens:
//! which characters start a token, where comments, quoted, plain and block scalars, tags and
//! anchors end, and the indentation of block collections. The scan counts the collections open
//! at each point (block collections, sequences written at their parent mapping's indentation,
//! flow collections, and the single-pair mappings of `[a: b]`) and stops at the first one past
//! [`MAX_DEPTH`]. A file it accepts never has more than [`MAX_DEPTH`] flow collections open,
//! so the parser's work stays linear (at most that many slots per token). Where libyaml would
//! stop with a syntax error the scan goes on: then it may refuse, for its depth, a file that is
//! invalid anyway, but it never lets a deep one through. Aliases are not followed: a file that
//! nests deeper through them is refused by the parser's own limit, in linear time.

/// Collections that may be open at once in a chain file (one needs 3).
pub const MAX_DEPTH: usize = 64;

/// Where the nesting first goes past [`MAX_DEPTH`]: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Checks that `text` never nests deeper than [`MAX_DEPTH`]. Linear in the text's length,
/// and it stops at the first collection too many.
pub fn check(text: &str) -> Result<(), TooDeep> {
    Scanner::new(text, MAX_DEPTH).run().map(|_| ())
}

/// A position as libyaml counts it: byte offset, line, and column in characters.
#[derive(Clone, Copy, Debug)]
struct Mark {
    index: usize,
    line: usize,
    column: usize,
}

/// An open block collection: the column of its indentation.
struct Level {
    column: usize,
    mapping: bool,
    /// A block sequence written at this mapping's own indentation (`key:` then `- a` below
    /// it, not indented) is open inside it.
    indentless: bool,
}

/// An open flow collection.
struct Flow {
    mapping: bool,
    /// In a flow sequence: a single-pair mapping (`[a: b]`) is open.
    pair: bool,
}

struct Scanner<'a> {
    text: &'a [u8],
    at: Mark,
    limit: usize,
    levels: Vec<Level>,
    flows: Vec<Flow>,
    /// Collections open now: levels, indentless sequences, flows and pairs.
    depth: usize,
    /// The most that were open at once.
    deepest: usize,
    /// libyaml's `simple_key_allowed`.
    key_allowed: bool,
    /// Where a possible simple key starts, at flow level 0 (the only level where a key opens a
    /// block mapping, at the key's column).
    key: Option<Mark>,
}

const fn is_alpha(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Characters of tag URIs (`wide`: also `,` `[` `]`, as in verbatim tags).
fn is_uri(b: u8, wide: bool) -> bool {
    is_alpha(b) || b";/?:@&=+$.%!~*'()".contains(&b) || (wide && b",[]".contains(&b))
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str, limit: usize) -> Self {
        Scanner {
            text: text.as_bytes(),
            at: Mark {
                index: 0,
                line: 0,
                column: 0,
            },
            limit,
            levels: Vec::new(),
            flows: Vec::new(),
            depth: 0,
            deepest: 0,
            key_allowed: true,
            key: None,
        }
    }

    fn byte(&self, k: usize) -> u8 {
        self.text.get(self.at.index + k).copied().unwrap_or(0)
    }

    /// The end of the text (libyaml also stops at a NUL character).
    fn is_z(&self, k: usize) -> bool {
        self.byte(k) == 0
    }

    fn is_break(&self, k: usize) -> bool {
        match self.byte(k) {
            b'\r' | b'\n' => true,
            0xC2 => self.byte(k + 1) == 0x85,
            0xE2 => self.byte(k + 1) == 0x80 && matches!(self.byte(k + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    fn is_blank(&self, k: usize) -> bool {
        matches!(self.byte(k), b' ' | b'\t')
    }

    fn is_breakz(&self, k: usize) -> bool {
        self.is_break(k) || self.is_z(k)
    }

    fn is_blankz(&self, k: usize) -> bool {
        self.is_blank(k) || self.is_breakz(k)
    }

    /// `---` or `...` at the start of a line.
    fn is_document_marker(&self) -> bool {
        let c = self.byte(0);
        self.at.column == 0
            && (c == b'-' || c == b'.')
            && self.byte(1) == c
            && self.byte(2) == c
            && self.is_blankz(3)
    }

    /// Moves past one character.
    fn skip(&mut self) {
        let width = match self.byte(0) {
            0 => return,
            b if b < 0x80 => 1,
            b if b < 0xE0 => 2,
            b if b < 0xF0 => 3,
            _ => 4,
        };
        self.at.index += width;
        self.at.column += 1;
    }

    /// Moves past the bytes for which `ordinary` holds, at once (it must hold for every byte
    /// of a multi-byte character but the first); stops before anything that could be a line
    /// break or the end.
    fn skip_run(&mut self, ordinary: impl Fn(u8) -> bool) {
        let rest = &self.text[self.at.index..];
        let n = rest
            .iter()
            .position(|&b| matches!(b, 0 | b'\r' | b'\n' | 0xC2 | 0xE2) || !ordinary(b))
            .unwrap_or(rest.len());
        self.at.column += rest[..n].iter().filter(|&&b| b & 0xC0 != 0x80).count();
        self.at.index += n;
    }

    /// Moves to the end of the line (its break, or the end of the text).
    fn skip_to_break(&mut self) {
        while !self.is_breakz(0) {
            self.skip_run(|_| true);
            if !self.is_breakz(0) {
                self.skip();
            }
        }
    }

    /// Moves past one line break.
    fn skip_line(&mut self) {
        let width = match self.byte(0) {
            b'\r' if self.byte(1) == b'\n' => 2,
            b'\r' | b'\n' => 1,
            0xC2 => 2,
            _ => 3,
        };
        self.at.index += width;
        self.at.column = 0;
        self.at.line += 1;
    }

    /// The indentation of the innermost block collection (-1: none).
    fn indent(&self) -> isize {
        self.levels.last().map_or(-1, |l| l.column as isize)
    }

    /// One more collection is open, starting at `at`.
    fn deeper(&mut self, at: Mark) -> Result<(), TooDeep> {
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        if self.depth > self.limit {
            return Err(TooDeep {
                line: at.line + 1,
                column: at.column + 1,
            });
        }
        Ok(())
    }

    /// A block collection starts at `column` unless one is already open there.
    fn roll(&mut self, column: usize, mapping: bool, at: Mark) -> Result<(), TooDeep> {
        if self.flows.is_empty() && self.indent() < column as isize {
            self.levels.push(Level {
                column,
                mapping,
                indentless: false,
            });
            self.deeper(at)?;
        }
        Ok(())
    }

    /// Block collections indented deeper than `column` end.
    fn unroll(&mut self, column: isize) {
        if !self.flows.is_empty() {
            return;
        }
        while self.indent() > column {
            let level = self.levels.pop().expect("indent > -1");
            self.depth -= 1 + usize::from(level.indentless);
        }
    }

    fn save_key(&mut self) {
        if self.flows.is_empty() && self.key_allowed {
            self.key = Some(self.at);
        }
    }

    fn remove_key(&mut self) {
        if self.flows.is_empty() {
            self.key = None;
        }
    }

    /// In a flow sequence, a key or a value opens a single-pair mapping.
    fn open_pair(&mut self, at: Mark) -> Result<(), TooDeep> {
        match self.flows.last_mut() {
            Some(flow) if !flow.mapping && !flow.pair => {
                flow.pair = true;
                self.deeper(at)
            }
            _ => Ok(()),
        }
    }

    fn close_pair(&mut self) {
        if let Some(flow) = self.flows.last_mut() {
            if flow.pair {
                flow.pair = false;
                self.depth -= 1;
            }
        }
    }

    /// Scans the whole text; returns the deepest nesting seen.
    fn run(mut self) -> Result<usize, TooDeep> {
        loop {
            self.skip_to_token();
            let column = self.at.column;
            self.unroll(column as isize);
            if self.is_z(0) {
                return Ok(self.deepest);
            }
            let c = self.byte(0);
            let start = self.at;
            let block_entry = c == b'-' && self.is_blankz(1);
            if self.flows.is_empty() && !block_entry {
                // A sequence at its mapping's indentation ends at the next key there.
                if let Some(level) = self.levels.last_mut() {
                    if level.indentless && level.column == column {
                        level.indentless = false;
                        self.depth -= 1;
                    }
                }
            }
            if column == 0 && c == b'%' {
                // A directive: one line.
                self.unroll(-1);
                self.remove_key();
                self.key_allowed = false;
                self.skip_to_break();
                if self.is_break(0) {
                    self.skip_line();
                }
                continue;
            }
            if self.is_document_marker() {
                self.unroll(-1);
                self.remove_key();
                self.key_allowed = false;
                for _ in 0..3 {
                    self.skip();
                }
                continue;
            }
            match c {
                b'[' | b'{' => {
                    self.save_key();
                    self.flows.push(Flow {
                        mapping: c == b'{',
                        pair: false,
                    });
                    self.deeper(start)?;
                    self.key_allowed = true;
                    self.skip();
                }
                b']' | b'}' => {
                    self.remove_key();
                    if let Some(flow) = self.flows.pop() {
                        self.depth -= 1 + usize::from(flow.pair);
                    }
                    self.key_allowed = false;
                    self.skip();
                }
                b',' => {
                    self.remove_key();
                    self.close_pair();
                    self.key_allowed = true;
                    self.skip();
                }
                b'-' if block_entry => {
                    if self.flows.is_empty() {
                        if self.indent() < column as isize {
                            self.roll(column, false, start)?;
                        } else if let Some(level) = self.levels.last_mut() {
                            if level.mapping && !level.indentless {
                                level.indentless = true;
                                self.deeper(start)?;
                            }
                        }
                    }
                    self.remove_key();
                    self.key_allowed = true;
                    self.skip();
                }
                b'?' if !self.flows.is_empty() || self.is_blankz(1) => {
                    if self.flows.is_empty() {
                        self.roll(column, true, start)?;
                    } else {
                        self.open_pair(start)?;
                    }
                    self.remove_key();
                    self.key_allowed = self.flows.is_empty();
                    self.skip();
                }
                b':' if !self.flows.is_empty() || self.is_blankz(1) => {
                    self.value(start)?;
                    self.skip();
                }
                b'*' | b'&' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.skip();
                    while is_alpha(self.byte(0)) {
                        self.skip();
                    }
                }
                b'!' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.tag();
                }
                b'|' | b'>' if self.flows.is_empty() => {
                    self.remove_key();
                    self.key_allowed = true;
                    self.block_scalar();
                }
                b'\'' | b'"' => {
                    self.save_key();
                    self.key_allowed = false;
                    self.quoted(c);
                }
                _ if self.starts_plain(c) => {
                    self.save_key();
                    self.key_allowed = false;
                    self.plain();
                }
                // No token starts with this character: libyaml stops here with an error.
                _ => {
                    self.key_allowed = false;
                    self.skip();
                }
            }
        }
    }

    /// Skips spaces, comments and line breaks (and tabs where they cannot be indentation).
    fn skip_to_token(&mut self) {
        loop {
            if self.at.column == 0 && self.text[self.at.index..].starts_with(b"\xEF\xBB\xBF") {
                self.skip();
            }
            while self.byte(0) == b' '
                || ((!self.flows.is_empty() || !self.key_allowed) && self.byte(0) == b'\t')
            {
                self.skip();
            }
            if self.byte(0) == b'#' {
                self.skip_to_break();
            }
            if !self.is_break(0) {
                return;
            }
            self.skip_line();
            if self.flows.is_empty() {
                self.key_allowed = true;
            }
        }
    }

    fn starts_plain(&self, c: u8) -> bool {
        !(self.is_blankz(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c))
            || (c == b'-' && !self.is_blank(1))
            || (self.flows.is_empty() && (c == b'?' || c == b':') && !self.is_blankz(1))
    }

    /// `:`: in block context, the mapping it belongs to starts at its key (or here).
    fn value(&mut self, at: Mark) -> Result<(), TooDeep> {
        if !self.flows.is_empty() {
            self.key_allowed = false;
            return self.open_pair(at);
        }
        let now = self.at;
        let key = self
            .key
            .take()
            .filter(|k| k.line == now.line && k.index + 1024 >= now.index);
        match key {
            Some(key) => {
                self.roll(key.column, true, key)?;
                self.key_allowed = false;
            }
            None => {
                self.roll(now.column, true, at)?;
                self.key_allowed = true;
            }
        }
        Ok(())
    }

    /// `!tag`, `!!tag`, `!handle!suffix` or `!<verbatim>`.
    fn tag(&mut self) {
        self.skip();
        if self.byte(0) == b'<' {
            self.skip();
            while is_uri(self.byte(0), true) {
                self.skip();
            }
            if self.byte(0) == b'>' {
                self.skip();
            }
        } else {
            while is_uri(self.byte(0), false) {
                self.skip();
            }
        }
    }

    /// `|` or `>`: its header, then every line indented at least as much as its first one
    /// (and more than the collection it is in).
    fn block_scalar(&mut self) {
        self.skip();
        let mut increment = 0;
        if matches!(self.byte(0), b'+' | b'-') {
            self.skip();
            if matches!(self.byte(0), b'1'..=b'9') {
                increment = (self.byte(0) - b'0') as isize;
                self.skip();
            }
        } else if matches!(self.byte(0), b'1'..=b'9') {
            increment = (self.byte(0) - b'0') as isize;
            self.skip();
            if matches!(self.byte(0), b'+' | b'-') {
                self.skip();
            }
        }
        while self.is_blank(0) {
            self.skip();
        }
        if self.byte(0) == b'#' {
            self.skip_to_break();
        }
        if !self.is_breakz(0) {
            return;
        }
        if self.is_break(0) {
            self.skip_line();
        }
        let mut indent = 0;
        if increment > 0 {
            indent = if self.indent() >= 0 {
                self.indent() + increment
            } else {
                increment
            };
        }
        if !self.block_scalar_breaks(&mut indent) {
            return;
        }
        while self.at.column as isize == indent && !self.is_z(0) {
            self.skip_to_break();
            if self.is_z(0) {
                return;
            }
            self.skip_line();
            if !self.block_scalar_breaks(&mut indent) {
                return;
            }
        }
    }

    /// Empty lines and the indentation of the next one; settles the indentation of a block
    /// scalar at its first line. False where libyaml stops (a tab as indentation).
    fn block_scalar_breaks(&mut self, indent: &mut isize) -> bool {
        let mut widest = 0;
        loop {
            while (*indent == 0 || (self.at.column as isize) < *indent) && self.byte(0) == b' ' {
                self.skip();
            }
            widest = widest.max(self.at.column as isize);
            if (*indent == 0 || (self.at.column as isize) < *indent) && self.byte(0) == b'\t' {
                return false;
            }
            if !self.is_break(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = widest.max(self.indent() + 1).max(1);
        }
        true
    }

    /// `'…'` (with `''` inside) or `"…"` (with backslash escapes), over any number of lines.
    fn quoted(&mut self, quote: u8) {
        self.skip();
        loop {
            if self.is_document_marker() || self.is_z(0) {
                return;
            }
            while !self.is_blankz(0) {
                self.skip_run(|b| !matches!(b, b' ' | b'\t' | b'\'' | b'"' | b'\\'));
                if self.is_blankz(0) {
                    break;
                }
                let b = self.byte(0);
                if quote == b'\'' && b == b'\'' && self.byte(1) == b'\'' {
                    self.skip();
                    self.skip();
                } else if b == quote {
                    break;
                } else if quote == b'"' && b == b'\\' && self.is_break(1) {
                    self.skip();
                    self.skip_line();
                    break;
                } else if quote == b'"' && b == b'\\' {
                    self.skip();
                    self.skip();
                } else {
                    self.skip();
                }
            }
            if self.byte(0) == quote {
                self.skip();
                return;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                }
            }
        }
    }

    /// A plain scalar: up to `: `, ` #`, a flow indicator in flow context, or a line indented
    /// no more than the collection it is in.
    fn plain(&mut self) {
        let indent = self.indent() + 1;
        let mut leading_blanks = false;
        loop {
            if self.is_document_marker() || self.byte(0) == b'#' {
                break;
            }
            while !self.is_blankz(0) {
                self.skip_run(|b| {
                    !matches!(b, b' ' | b'\t' | b':' | b',' | b'[' | b']' | b'{' | b'}')
                });
                if self.is_blankz(0) {
                    break;
                }
                let b = self.byte(0);
                let in_flow = !self.flows.is_empty();
                if in_flow && b == b':' && b",?[]{}".contains(&self.byte(1)) {
                    return;
                }
                if (b == b':' && self.is_blankz(1)) || (in_flow && b",[]{}".contains(&b)) {
                    break;
                }
                self.skip();
            }
            if !(self.is_blank(0) || self.is_break(0)) {
                break;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    if leading_blanks && (self.at.column as isize) < indent && self.byte(0) == b'\t'
                    {
                        return;
                    }
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if self.flows.is_empty() && (self.at.column as isize) < indent {
                break;
            }
        }
        if leading_blanks {
            self.key_allowed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde::Deserialize;
    use serde_yaml_ng::Value;

    use super::*;

    /// The deepest nesting the scan sees, with no limit.
    fn depth(text: &str) -> usize {
        Scanner::new(text, usize::MAX).run().unwrap()
    }

    /// The deepest nesting of the parsed values (every document).
    fn parsed_depth(text: &str) -> usize {
        fn of(v: &Value) -> usize {
            match v {
                Value::Sequence(s) => 1 + s.iter().map(of).max().unwrap_or(0),
                Value::Mapping(m) => 1 + m.iter().map(|(k, v)| of(k).max(of(v))).max().unwrap_or(0),
                Value::Tagged(t) => of(&t.value),
                _ => 0,
            }
        }
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|d| of(&Value::deserialize(d).expect(text)))
            .max()
            .unwrap_or(0)
    }

    fn refused_fast(label: &str, text: &str) -> TooDeep {
        let start = Instant::now();
        let err = check(text).expect_err(label);
        let took = start.elapsed();
        println!("{label}: {} bytes refused in {took:?}", text.len());
        assert!(took < Duration::from_secs(1), "{label}: {took:?}");
        err
    }

    #[test]
    fn deep_flow_and_block_nesting_are_refused_at_once() {
        let flow = "[".repeat(400_000);
        assert_eq!(
            refused_fast("400 KB of [", &flow),
            TooDeep {
                line: 1,
                column: 65
            }
        );
        // The case that is quadratic in the parser: after a key.
        refused_fast("key: then 400 KB of [", &format!("key: {flow}"));
        refused_fast("400 KB of {a: ", &"{a: ".repeat(100_000));
        refused_fast("400 KB of [a: ", &"[a: ".repeat(100_000));
        assert_eq!(
            refused_fast("400 KB of - ", &"- ".repeat(200_000)),
            TooDeep {
                line: 1,
                column: 129
            }
        );
        let mut indented = String::new();
        for i in 0..890 {
            indented.push_str(&" ".repeat(i));
            indented.push_str("a:\n");
        }
        assert_eq!(
            refused_fast("400 KB of indented keys", &indented),
            TooDeep {
                line: 65,
                column: 65
            }
        );
        let mut indentless = String::new();
        for i in 0..600 {
            indentless.push_str(&" ".repeat(2 * i));
            indentless.push_str("- a:\n");
        }
        assert_eq!(
            refused_fast("indentless sequences", &indentless),
            TooDeep {
                line: 33,
                column: 65
            }
        );
    }

    #[test]
    fn the_limit_itself_is_accepted() {
        let at = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert_eq!(check(&at(MAX_DEPTH)), Ok(()));
        assert!(check(&at(MAX_DEPTH + 1)).is_err());
        let block = |n: usize| {
            (0..n)
                .map(|i| " ".repeat(2 * i) + "- \n")
                .collect::<String>()
        };
        assert_eq!(parsed_depth(&block(MAX_DEPTH)), MAX_DEPTH);
        assert_eq!(check(&block(MAX_DEPTH)), Ok(()));
        assert!(check(&block(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn brackets_that_are_not_structure_do_not_count() {
        let deep = "[".repeat(100);
        let texts = [
            format!("a: '{deep}'\nb: \"{deep}\\\" {deep}\"\n"),
            format!("# {deep}\na: 1 # {deep}\n"),
            format!("a: x{deep}\nb: [x, # {deep}\n  y]\n"),
            format!("a: |\n  {deep}\n  {deep}\nb: >-\n   {deep}\n\n   {deep}\n"),
            format!("a: !<tag:x{deep}> b\n"),
            format!("a: 'it''s {deep}\n  still {deep}'\n"),
            format!("- \"multi\n  line {deep}\"\n- it's {deep}\n"),
        ];
        for text in &texts {
            assert_eq!(check(text), Ok(()), "{text}");
            assert_eq!(depth(text), parsed_depth(text), "{text}");
        }
    }

    /// A small deterministic generator of YAML in every style the scan follows.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn scalar(&mut self, flow: bool) -> String {
            match self.next(if flow { 4 } else { 7 }) {
                0 => "plain".into(),
                1 => "'q[u{o''te'".into(),
                2 => "\"d[q{\\\" x\"".into(),
                3 => "42".into(),
                4 => "a[b{c".into(),
                5 => "it's".into(),
                _ => "x # [[[ comment".into(),
            }
        }

        fn flow(&mut self, depth: usize) -> String {
            if depth == 0 || self.next(4) == 0 {
                return self.scalar(true);
            }
            let n = 1 + self.next(3);
            let items: Vec<String> = (0..n)
                .map(|i| match self.next(3) {
                    0 => format!("k{i}: {}", self.flow(depth - 1)),
                    _ => self.flow(depth - 1),
                })
                .collect();
            if self.next(2) == 0 {
                format!("[{}]", items.join(", "))
            } else {
                let pairs: Vec<String> = (0..n)
                    .map(|i| format!("k{i}: {}", self.flow(depth - 1)))
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            }
        }

        /// A block node at `indent`, written after a key or a `- ` (so it starts on a new line
        /// when it is a block collection).
        fn block(&mut self, depth: usize, indent: usize) -> String {
            let pad = " ".repeat(indent);
            if depth == 0 {
                return format!(" {}\n", self.scalar(false));
            }
            match self.next(10) {
                0 => format!(" {}\n", self.flow(depth)),
                1 => format!(" |\n{pad}  text [[ {{{{ 'x\n\n{pad}   more\n"),
                6 => format!(" >2-\n{pad}  text [[ \"x\n{pad}    more\n"),
                7 => format!(
                    " [\n{pad}  {}, # [[ comment\n{pad}  {}\n{pad}]\n",
                    self.flow(depth - 1),
                    self.flow(depth - 1)
                ),
                8 => format!(
                    "\n{pad}? [a, {}]\n{pad}:{}",
                    self.flow(depth - 1),
                    self.block(depth - 1, indent + 2)
                ),
                9 => format!(" !!str &anchor{depth} {}\n", self.scalar(false)),
                2 => {
                    let mut out = "\n".to_string();
                    for i in 0..1 + self.next(3) {
                        out.push_str(&format!("{pad}k{i}:{}", self.block(depth - 1, indent + 2)));
                    }
                    out
                }
                3 => {
                    let mut out = "\n".to_string();
                    for _ in 0..1 + self.next(3) {
                        out.push_str(&format!("{pad}-{}", self.block(depth - 1, indent + 2)));
                    }
                    out
                }
                _ => format!(" {}\n", self.scalar(false)),
            }
        }
    }

    #[test]
    fn the_scan_counts_what_the_parser_builds() {
        let mut gen = Gen(0x9e37_79b9_7f4a_7c15);
        let (mut checked, mut deepest) = (0, 0);
        for round in 0..400 {
            let mut text = String::new();
            if gen.next(4) == 0 {
                text.push_str(&format!("--- {}\n---\n", gen.flow(4)));
            }
            for i in 0..1 + gen.next(3) {
                text.push_str(&format!("key{i}:{}", gen.block(1 + round % 7, 2)));
                // Indentless sequences under a key.
                if gen.next(3) == 0 {
                    text.push_str(&format!("list{i}:\n- a\n-{}", gen.block(2, 2)));
                }
            }
            let Ok(values) = serde_yaml_ng::Deserializer::from_str(&text)
                .map(Value::deserialize)
                .collect::<Result<Vec<_>, _>>()
            else {
                continue;
            };
            assert!(!values.is_empty());
            let parsed = parsed_depth(&text);
            assert_eq!(depth(&text), parsed, "{text}");
            deepest = deepest.max(parsed);
            checked += 1;
        }
        assert!(checked > 300, "only {checked} generated files parsed");
        assert!(
            deepest >= 8,
            "the generated files nest at most {deepest} deep"
        );
    }
}
