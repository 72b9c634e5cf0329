//! Chain files: multi-document YAML in, typed objects out, and the reverse for `get`.
//! Every error names the file, the document's kind and name, and the field.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::model::{Kind, Object, Spec, API_VERSION};

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
            write!(f, "{} {:?}: ", self.kind, self.name)?;
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

/// Parses every document of a chain file. Empty documents are skipped.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Sourced>, ConfigErrors> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(doc_error(file, index, "", format!("invalid YAML: {e}")));
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
                    "unknown kind {kind_text:?}; use PortPair, PortPairGroup, FlowClassifier or PortChain"
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
            format!("{name:?} is not a valid name; use 1 to 63 characters of A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(name)
}

fn short(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn typed<T: for<'de> Deserialize<'de>>(spec: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        (field, e.into_inner().to_string())
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
}
