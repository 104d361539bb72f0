//! `assets/js/messages.js` is transcribed by hand from the proto files: this
//! test compiles them (protox, as aloft-protocol's build does) and checks
//! every message and enum the dashboard declares against them, so a field
//! renumbered or retyped in `admin.proto` fails here, not in a browser.

use std::collections::BTreeMap;
use std::path::Path;

use prost_types::field_descriptor_proto::{Label, Type};

/// A field as messages.js declares it: number, type word, repeated.
#[derive(Debug)]
struct JsField {
    number: i32,
    ty: String,
    repeated: bool,
}

fn source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/js/messages.js");
    std::fs::read_to_string(path).unwrap()
}

/// `message('Name', { field: [N, type, rep], ... })` blocks.
fn js_messages(src: &str) -> BTreeMap<String, BTreeMap<String, JsField>> {
    let mut out = BTreeMap::new();
    for block in src.split("= message('").skip(1) {
        let (name, rest) = block.split_once('\'').unwrap();
        let body = &rest[..rest.find("});").unwrap()];
        let mut fields = BTreeMap::new();
        for (at, _) in body.match_indices(": [") {
            let before = &body[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let field = &before[start..];
            let spec = &body[at + 3..];
            let spec = &spec[..spec.find(']').unwrap()];
            let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
            fields.insert(
                field.to_owned(),
                JsField {
                    number: parts[0].parse().unwrap(),
                    ty: parts[1].trim_matches('\'').to_owned(),
                    repeated: parts.get(2) == Some(&"rep"),
                },
            );
        }
        out.insert(name.to_owned(), fields);
    }
    out
}

/// `Name = enumeration('PREFIX_', ['a', 'b', ...])` declarations.
fn js_enums(src: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for decl in src.split("export const ").skip(1) {
        let Some((name, rest)) = decl.split_once(" = enumeration('") else {
            continue;
        };
        let (prefix, rest) = rest.split_once('\'').unwrap();
        let list = &rest[rest.find('[').unwrap() + 1..rest.find(']').unwrap()];
        let names = list
            .split(',')
            .map(|n| n.trim().trim_matches('\'').to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        out.insert(name.to_owned(), (prefix.to_owned(), names));
    }
    out
}

#[test]
fn messages_js_matches_the_proto_files() {
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = protox::compile(["aloft/v1/admin.proto"], [&proto]).unwrap();
    let mut messages = BTreeMap::new();
    let mut enums = BTreeMap::new();
    for file in &files.file {
        for m in &file.message_type {
            messages.insert(m.name().to_owned(), m.clone());
        }
        for e in &file.enum_type {
            enums.insert(e.name().to_owned(), e.clone());
        }
    }

    let src = source();
    let js = js_messages(&src);
    assert!(
        js.len() > 20,
        "parsed only {} messages from messages.js",
        js.len()
    );
    for (name, fields) in &js {
        let m = messages
            .get(name)
            .unwrap_or_else(|| panic!("messages.js declares {name}, which no proto file defines"));
        for (field, f) in fields {
            let p = m
                .field
                .iter()
                .find(|p| p.name() == field)
                .unwrap_or_else(|| panic!("{name}.{field} is not in the proto"));
            assert_eq!(p.number(), f.number, "{name}.{field}: field number");
            assert_eq!(
                p.label() == Label::Repeated,
                f.repeated,
                "{name}.{field}: repeated"
            );
            let ok = match f.ty.as_str() {
                "string" => p.r#type() == Type::String,
                "bytes" => p.r#type() == Type::Bytes,
                "uint32" => p.r#type() == Type::Uint32,
                "uint64" => p.r#type() == Type::Uint64,
                "bool" => p.r#type() == Type::Bool,
                "enum" => p.r#type() == Type::Enum,
                other => {
                    p.r#type() == Type::Message && p.type_name().ends_with(&format!(".{other}"))
                }
            };
            assert!(
                ok,
                "{name}.{field}: messages.js says {}, the proto {:?} {}",
                f.ty,
                p.r#type(),
                p.type_name()
            );
        }
    }

    let js_enums = js_enums(&src);
    assert!(js_enums.len() >= 6, "parsed only {} enums", js_enums.len());
    for (name, (prefix, names)) in &js_enums {
        let e = enums.get(name).unwrap_or_else(|| {
            panic!("messages.js declares enum {name}, which no proto file defines")
        });
        for (i, n) in names.iter().enumerate() {
            let wanted = format!("{prefix}{}", n.to_uppercase());
            let value = e
                .value
                .iter()
                .find(|v| v.name() == wanted)
                .unwrap_or_else(|| panic!("{name}: no value {wanted}"));
            assert_eq!(value.number(), i as i32, "{wanted}");
        }
    }
}
