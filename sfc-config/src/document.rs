//! Chain files: multi-document YAML in, typed objects out, and the reverse for `get`.
//! Every error names the file, the document's kind and name, and the field.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::{
    model::{Kind, Object, Spec, API_VERSION},
    validate::nesting,
};

/// A problem with the user's input, located as precisely as the input allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    pub file: String,
    /// Empty when the document's kind could not be read.
    pub kind: String,
    pub name: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if !self.kind.is_empty() {
            write!(f, "{} {}: ", self.kind, shown(&self.name))?;
        } else if !self.name.is_empty() {
            write!(f, "{}: ", self.name)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Several errors, reported together so that one run shows everything to fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// An object read from a file, remembering the file for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sourced {
    pub file: String,
    pub object: Object,
}

/// Characters of a user's value that messages show; the rest is cut.
const SHOWN_CHARS: usize = 64;

/// A user-supplied value as messages show it: quoted and escaped (as `{:?}` does), and past
/// 64 characters cut, with its size, so that no value can flood a message:
/// `"abcd…" (52428800 bytes)`.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!(
            "{:?} ({} bytes)",
            format!("{}…", &value[..end]),
            value.len()
        ),
    }
}

/// A message written by the YAML parser or serde, which may quote the user's values (between
/// `"` or backticks): each quoted part longer than [`shown`] allows is cut the same way.
fn tamed(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open];
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        // The closing quote; `"` may be escaped inside (`\"`).
        let mut close = None;
        let mut escaped = false;
        for (i, b) in rest.bytes().enumerate() {
            if escaped {
                escaped = false;
            } else if b == b'\\' && quote == b'"' {
                escaped = true;
            } else if b == quote {
                close = Some(i);
                break;
            }
        }
        let inner = &rest[..close.unwrap_or(rest.len())];
        match inner.char_indices().nth(SHOWN_CHARS) {
            Some((end, _)) => {
                out.push_str(&inner[..end]);
                out.push('…');
                out.push(quote as char);
                out.push_str(&format!(" ({} bytes)", inner.len()));
            }
            None => {
                out.push_str(inner);
                if close.is_some() {
                    out.push(quote as char);
                }
            }
        }
        rest = close.map_or("", |c| &rest[c + 1..]);
    }
    out.push_str(rest);
    // A value may hold the quote itself (`a`b`): then the part after it reads as unquoted and
    // escapes the cut above. Past what cut values and the library's own words take, the middle
    // goes, keeping how the message starts and ends (what was wrong, and what is expected).
    let chars = out.chars().count();
    if chars > TAMED_CHARS {
        let at = |n: usize| out.char_indices().nth(n).map_or(out.len(), |(i, _)| i);
        let (head, tail) = (at(TAMED_CHARS / 2), at(chars - TAMED_CHARS / 3));
        out = format!(
            "{}… ({} bytes cut) …{}",
            &out[..head],
            tail - head,
            &out[tail..]
        );
    }
    out
}

/// The longest a library's message is kept (see [`tamed`]): a few cut values and the list of
/// what was expected fit.
const TAMED_CHARS: usize = 8 * SHOWN_CHARS;

/// The YAML parser's words for two problems of the input, in the user's terms: a number too
/// large for any field (which it reports as a type it cannot hold, "integer `N` as u128,
/// expected any YAML value"), and aliases that expand too far ("repetition limit exceeded").
fn plainer(message: &str) -> String {
    const OPEN: &str = "invalid type: integer `";
    let mut out = message.to_string();
    if let Some(start) = out.find(OPEN) {
        let digits = start + OPEN.len();
        for width in ["u128", "i128"] {
            let close = format!("` as {width}, expected any YAML value");
            if let Some(end) = out[digits..].find(&close) {
                let number = out[digits..digits + end].to_string();
                out.replace_range(
                    start..digits + end + close.len(),
                    &format!("{number} is too large a number; no field takes more than 64 bits"),
                );
                break;
            }
        }
    }
    out.replace(
        "repetition limit exceeded",
        "aliases expand too far (repetition limit exceeded); write the values out",
    )
}

/// A field path that may hold a user's key: cut like [`shown`] (unquoted: it names a place).
fn field_path(path: &str) -> String {
    match path.char_indices().nth(SHOWN_CHARS) {
        None => path.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &path[..end], path.len()),
    }
}

fn doc_error(file: &str, index: usize, field: &str, message: String) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        kind: String::new(),
        name: format!("document {}", index + 1),
        field: field.to_string(),
        message,
    }
}

pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses every document of a chain file. Empty documents are skipped. Text nested deeper
/// than [`nesting::MAX_DEPTH`] is refused before it reaches the parser (see [`nesting`]).
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Sourced>, ConfigErrors> {
    if let Err(at) = nesting::check(text) {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            kind: String::new(),
            name: String::new(),
            field: String::new(),
            message: format!(
                "invalid YAML: nested deeper than {} levels at line {}, column {}; a chain file needs 3 (a document, its spec, a list in it): nothing was parsed",
                nesting::MAX_DEPTH,
                at.line,
                at.column
            ),
        }]));
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(doc_error(
                    file,
                    index,
                    "",
                    format!("invalid YAML: {}", tamed(&plainer(&e.to_string()))),
                ));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        match parse_document(file, index, value) {
            Ok(object) => objects.push(Sourced {
                file: file.to_string(),
                object,
            }),
            Err(e) => errors.push(e),
        }
    }
    if objects.is_empty() && errors.is_empty() {
        errors.push(ConfigError {
            file: file.to_string(),
            kind: String::new(),
            name: String::new(),
            field: String::new(),
            message: "no documents found; a chain file holds PortPair, PortPairGroup, \
                      FlowClassifier and PortChain documents separated by ---"
                .into(),
        });
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn parse_document(file: &str, index: usize, value: Value) -> Result<Object, ConfigError> {
    let Value::Mapping(mut top) = value else {
        return Err(doc_error(
            file,
            index,
            "",
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let kind_text = match top.remove("kind") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(doc_error(file, index, "kind", "must be a string".into())),
        None => {
            return Err(doc_error(
                file,
                index,
                "kind",
                "missing; use PortPair, PortPairGroup, FlowClassifier or PortChain".into(),
            ))
        }
    };
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind_text)
        .ok_or_else(|| {
            doc_error(
                file,
                index,
                "kind",
                format!(
                    "unknown kind {}; use PortPair, PortPairGroup, FlowClassifier or PortChain",
                    shown(&kind_text)
                ),
            )
        })?;
    let name = read_name(&mut top).map_err(|(field, message)| {
        doc_error(
            file,
            index,
            field,
            format!("{message} (in a {kind} document)"),
        )
    })?;
    let err = |field: &str, message: String| ConfigError {
        file: file.to_string(),
        kind: kind.to_string(),
        name: name.clone(),
        field: field.to_string(),
        message,
    };
    match top.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return Err(err(
                "apiVersion",
                format!("unsupported {}; use {API_VERSION}", short(&other)),
            ))
        }
        None => return Err(err("apiVersion", format!("missing; use {API_VERSION}"))),
    }
    let spec = top
        .remove("spec")
        .ok_or_else(|| err("spec", "missing".into()))?;
    if let Some((key, _)) = top.into_iter().next() {
        return Err(err(
            &short(&key),
            "unknown field; a document has only apiVersion, kind, metadata and spec".into(),
        ));
    }
    let spec = match kind {
        Kind::PortPair => typed(spec).map(Spec::PortPair),
        Kind::PortPairGroup => typed(spec).map(Spec::PortPairGroup),
        Kind::FlowClassifier => typed(spec).map(Spec::FlowClassifier),
        Kind::PortChain => typed(spec).map(Spec::PortChain),
    }
    .map_err(|(field, message)| err(&field, message))?;
    Ok(Object { name, spec })
}

fn read_name(top: &mut Mapping) -> Result<String, (&'static str, String)> {
    let Some(Value::Mapping(mut meta)) = top.remove("metadata") else {
        return Err(("metadata.name", "missing".into()));
    };
    let name = match meta.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(("metadata.name", "must be a string".into())),
        None => return Err(("metadata.name", "missing".into())),
    };
    if let Some((key, _)) = meta.into_iter().next() {
        return Err((
            "metadata",
            format!("unknown field {}; metadata has only name", short(&key)),
        ));
    }
    if !valid_name(&name) {
        return Err((
            "metadata.name",
            format!(
                "{} is not a valid name; use 1 to 63 characters of A-Z a-z 0-9 _ . -",
                shown(&name)
            ),
        ));
    }
    Ok(name)
}

/// A key or value of the user's, as messages show it: strings quoted, other values as YAML
/// (quoted too when they are long), cut by [`shown`].
fn short(value: &Value) -> String {
    match value {
        Value::String(s) => shown(s),
        other => {
            let text = serde_yaml_ng::to_string(other).unwrap_or_default();
            let text = text.trim();
            if text.chars().nth(SHOWN_CHARS).is_some() {
                shown(text)
            } else {
                text.to_string()
            }
        }
    }
}

fn typed<T: for<'de> Deserialize<'de>>(spec: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "spec".to_string()
        } else {
            format!("spec.{}", field_path(&path))
        };
        (field, tamed(&e.into_inner().to_string()))
    })
}

/// The document form of an object, as `get -o yaml|json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document<'a> {
    pub api_version: &'static str,
    pub kind: Kind,
    pub metadata: Metadata<'a>,
    pub spec: SpecRef<'a>,
}

#[derive(Serialize)]
pub struct Metadata<'a> {
    pub name: &'a str,
}

/// Serialises just the inner spec of a [`Spec`].
pub struct SpecRef<'a>(pub &'a Spec);

impl Serialize for SpecRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Spec::PortPair(x) => x.serialize(s),
            Spec::PortPairGroup(x) => x.serialize(s),
            Spec::FlowClassifier(x) => x.serialize(s),
            Spec::PortChain(x) => x.serialize(s),
        }
    }
}

pub fn document(object: &Object) -> Document<'_> {
    Document {
        api_version: API_VERSION,
        kind: object.spec.kind(),
        metadata: Metadata { name: &object.name },
        spec: SpecRef(&object.spec),
    }
}

/// Multi-document YAML for a list of objects (deterministic: the caller passes them sorted).
pub fn to_yaml(objects: &[Object]) -> String {
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(&document(object)).unwrap_or_default());
    }
    out
}

pub fn to_json(objects: &[Object]) -> String {
    let docs: Vec<_> = objects.iter().map(document).collect();
    serde_json::to_string_pretty(&docs).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_file_kind_name_and_field() {
        let text = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPair\nmetadata: {name: pp1}\nspec: {ingress: a, egress: b, colour: red}\n";
        let err = parse_file("chain.yaml", text).unwrap_err().to_string();
        assert!(
            err.starts_with("chain.yaml: PortPair \"pp1\": spec"),
            "{err}"
        );
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn unknown_kind_and_bad_name_are_errors() {
        let text = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: Router\nmetadata: {name: r}\nspec: {}\n---\napiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPair\nmetadata: {name: 'a b'}\nspec: {ingress: a, egress: b}\n";
        let err = parse_file("f.yaml", text).unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert!(err.0[0].to_string().contains("unknown kind \"Router\""));
        assert!(err.0[1].to_string().contains("metadata.name"));
    }

    #[test]
    fn wrong_type_is_an_error_with_its_path() {
        let text = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortChain\nmetadata: {name: pc}\nspec: {portPairGroups: [g], chainParameters: {symmetric: maybe}}\n";
        let err = parse_file("f.yaml", text).unwrap_err().to_string();
        assert!(err.contains("spec.chainParameters.symmetric"), "{err}");
    }

    #[test]
    fn round_trip_through_yaml() {
        let text = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {name: fc1}\nspec:\n  protocol: tcp\n  destinationPortRange: \"80\"\n  logicalSourcePort: vm-src\n";
        let objects: Vec<Object> = parse_file("f", text)
            .unwrap()
            .into_iter()
            .map(|s| s.object)
            .collect();
        let again: Vec<Object> = parse_file("g", &to_yaml(&objects))
            .unwrap()
            .into_iter()
            .map(|s| s.object)
            .collect();
        assert_eq!(objects, again);
    }

    #[test]
    fn shown_quotes_and_cuts_long_values() {
        assert_eq!(shown("eth0"), "\"eth0\"");
        assert_eq!(shown("a\"b\n"), "\"a\\\"b\\n\"");
        let at_most = "x".repeat(64);
        assert_eq!(shown(&at_most), format!("\"{at_most}\""));
        let longer = "é".repeat(65);
        assert_eq!(
            shown(&longer),
            format!("\"{}…\" (130 bytes)", "é".repeat(64))
        );
        assert_eq!(
            tamed(&format!(
                "invalid type: string \"{}\", expected `x`",
                "y".repeat(100)
            )),
            format!(
                "invalid type: string \"{}…\" (100 bytes), expected `x`",
                "y".repeat(64)
            )
        );
    }

    /// The error of a one-document file of `kind` with `spec`, as printed.
    fn error_of(kind: &str, spec: &str) -> String {
        let text = format!(
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: x}}\nspec: {spec}\n"
        );
        parse_file("f.yaml", &text).unwrap_err().to_string()
    }

    #[test]
    fn values_of_the_wrong_type_are_reported_in_the_users_terms() {
        // Found by the fuzzer (tests/fuzz_yaml.rs): these named Rust types, serde_yaml_ng's
        // `Value::Tagged` or a u128 instead of what to write.
        let fc = "FlowClassifier";
        let cases = [
            (fc, "{protocol: 1.5, logicalSourcePort: p}", "f.yaml: FlowClassifier \"x\": spec.protocol: is not a protocol; use tcp, udp, icmp, icmpv6 or a number 0..255"),
            (fc, "{protocol: tcp, destinationPortRange: [], logicalSourcePort: p}", "f.yaml: FlowClassifier \"x\": spec.destinationPortRange: is not a port range; use \"N\" or \"MIN:MAX\" with ports 1..65535"),
            (fc, "{ethertype: 4, logicalSourcePort: p}", "f.yaml: FlowClassifier \"x\": spec.ethertype: invalid type: integer `4`, expected `IPv4` or `IPv6`"),
            (fc, "{ethertype: IPX, logicalSourcePort: p}", "f.yaml: FlowClassifier \"x\": spec.ethertype: unknown variant `IPX`, expected `IPv4` or `IPv6`"),
            (fc, "[1, 2]", "f.yaml: FlowClassifier \"x\": spec: invalid type: sequence, expected a mapping of FlowClassifier fields"),
            (fc, "{unparsable: 1, logicalSourcePort: p}", "f.yaml: FlowClassifier \"x\": spec.unparsable: invalid type: integer `1`, expected `drop` or `pass`"),
            ("PortPairGroup", "{portPairs: [a], lbFields: [1]}", "f.yaml: PortPairGroup \"x\": spec.lbFields[0]: invalid type: integer `1`, expected one of `eth_src`, `eth_dst`, `ip_src`, `ip_dst`, `tcp_src`, `tcp_dst`, `udp_src`, `udp_dst`"),
            ("PortChain", "{portPairGroups: [g], chainParameters: {correlation: []}}", "f.yaml: PortChain \"x\": spec.chainParameters.correlation: invalid type: sequence, expected one of `none`, `mpls`, `nsh`"),
            ("PortChain", "{portPairGroups: [g], chainParameters: true}", "f.yaml: PortChain \"x\": spec.chainParameters: invalid type: boolean `true`, expected a mapping of symmetric and correlation"),
            ("PortPair", "{ingress: a, egress: b, weight: 99999999999999999999999}", "f.yaml: document 1: invalid YAML: spec.weight: 99999999999999999999999 is too large a number; no field takes more than 64 bits at line 4 column 39"),
            ("PortPair", "{ingress: a, egress: b, weight: -99999999999999999999999}", "f.yaml: document 1: invalid YAML: spec.weight: -99999999999999999999999 is too large a number; no field takes more than 64 bits at line 4 column 39"),
        ];
        for (kind, spec, expected) in cases {
            assert_eq!(error_of(kind, spec), expected);
        }
        // The names still read back as written.
        let text = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {name: x}\nspec: {ethertype: IPv6, protocol: 6, sourcePortRange: 80, logicalSourcePort: p}\n";
        let object = &parse_file("f.yaml", text).unwrap()[0].object;
        let Spec::FlowClassifier(fc) = &object.spec else {
            panic!("{object:?}");
        };
        assert_eq!(fc.ethertype, crate::model::Ethertype::IPv6);
    }

    #[test]
    fn a_value_holding_the_quote_is_cut_all_the_same() {
        // Found by the fuzzer: serde quotes a value between backticks, and a backtick inside it
        // left the rest of a 9 KB value in the message uncut.
        let value = format!("tcp_dst{}`{}", "-".repeat(7014), "-".repeat(1751));
        let err = error_of(
            "PortPairGroup",
            &format!("{{portPairs: [a], lbFields: [{value}]}}"),
        );
        assert!(err.len() < 1024, "{} bytes: {err}", err.len());
        assert!(
            err.starts_with(
                "f.yaml: PortPairGroup \"x\": spec.lbFields[0]: unknown variant `tcp_dst---"
            ),
            "{err}"
        );
        assert!(err.contains(" bytes cut) …"), "{err}");
        assert!(err.ends_with("expected one of `eth_src`, `eth_dst`, `ip_src`, `ip_dst`, `tcp_src`, `tcp_dst`, `udp_src`, `udp_dst`"), "{err}");
    }

    #[test]
    fn aliases_that_expand_too_far_are_refused_in_the_users_terms() {
        let mut value = "&a0 [x, x, x, x, x, x, x, x, x, x]".to_string();
        for level in 1..7 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            value = format!("[{value}, &a{level} [{refs}]]");
        }
        let err = error_of(
            "PortPair",
            &format!("{{ingress: a, egress: b, weight: {value}}}"),
        );
        assert_eq!(
            err,
            "f.yaml: document 1: invalid YAML: aliases expand too far (repetition limit exceeded); write the values out"
        );
    }

    #[test]
    fn huge_values_give_short_errors() {
        let head = "apiVersion: sfc.dataplane.dev/v1alpha1\n";
        let check = |errors: Vec<ConfigError>, size: usize| {
            assert!(!errors.is_empty());
            for e in errors {
                let line = e.to_string();
                println!("{} bytes: {}", line.len(), &line[..line.len().min(200)]);
                assert!(line.len() < 1024, "{} bytes", line.len());
                assert!(line.contains(&format!("({size} bytes)")), "{line}");
            }
        };
        let interface = "i".repeat(50 << 20);
        let text = format!("{head}kind: PortPair\nmetadata: {{name: pp}}\nspec: {{ingress: {interface}, egress: e}}\n");
        let errors = crate::plan::plan(
            &Default::default(),
            &[("f.yaml".into(), text)],
            &Default::default(),
        )
        .unwrap_err()
        .0;
        assert_eq!(errors[0].field, "spec.ingress");
        check(errors, 50 << 20);
        let name = "n".repeat(10 << 20);
        let text = format!(
            "{head}kind: PortPair\nmetadata: {{name: {name}}}\nspec: {{ingress: a, egress: b}}\n"
        );
        check(parse_file("f.yaml", &text).unwrap_err().0, 10 << 20);
        // Unknown kinds and fields, and values of the wrong type, quoted by serde.
        let big = "k".repeat(1 << 20);
        for text in [
            format!("{head}kind: {big}\nmetadata: {{name: x}}\nspec: {{}}\n"),
            // (Keys this long can only be written as complex keys.)
            format!("{head}kind: PortPair\nmetadata: {{name: x}}\nspec: {{ingress: a, egress: b}}\n? {big}\n: 1\n"),
            format!("{head}kind: PortPair\nmetadata: {{name: x}}\nspec:\n  ingress: a\n  egress: b\n  ? {big}\n  : 1\n"),
            format!("{head}kind: PortPair\nmetadata: {{name: x}}\nspec: {{ingress: a, egress: b, weight: {big}}}\n"),
        ] {
            check(parse_file("f.yaml", &text).unwrap_err().0, 1 << 20);
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_and_the_example_parses() {
        let start = std::time::Instant::now();
        let errors = parse_file("deep.yaml", &"[".repeat(400_000)).unwrap_err().0;
        println!("400 KB of [ refused in {:?}", start.elapsed());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["deep.yaml: invalid YAML: nested deeper than 64 levels at line 1, column 65; a chain file needs 3 (a document, its spec, a list in it): nothing was parsed"]
        );
        let example = include_str!("../../examples/chain.yaml");
        let objects = parse_file("chain.yaml", example).unwrap();
        assert_eq!(objects.len(), 8);
    }
}
