//! Proptest strategies shared by the property suites of the product crates: hostile
//! configuration files built from a node's own configuration.
//!
//! [`config_documents`] takes a node's default configuration (its `Serialize` output, as
//! JSON) and yields TOML documents that are that configuration with a few keys, at any
//! depth, replaced by arbitrary TOML values (huge, negative and non-finite numbers,
//! malformed durations and URLs, wrong types, arrays, inline tables), removed, or joined by
//! unknown keys; plus a share of arbitrary text and of truncated documents. A node's
//! property is then: loading and validating any of them returns a value or a clear error,
//! never a panic.

use proptest::prelude::*;
use serde_json::Value;

/// A TOML document as a tree of tables whose leaves are TOML literal text.
#[derive(Debug, Clone)]
enum Node {
    Table(Vec<(String, Node)>),
    /// An array of tables (`[[name]]`), e.g. an ingest node's `[[cameras]]`.
    Tables(Vec<Node>),
    Literal(String),
}

/// One change to a configuration: at key path number `pick` (modulo the number of paths),
/// replace the value with `literal`, or remove the key (`None`), or add `unknown` next to it.
#[derive(Debug, Clone)]
struct Change {
    pick: usize,
    literal: Option<String>,
    unknown: bool,
}

/// TOML literal text for a JSON value (`None` for `null`: TOML has none, the key is left out).
fn literal(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{f:.1}")
            } else {
                format!("{f:e}")
            }
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().filter_map(literal).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(m) => {
            let inner: Vec<String> = m
                .iter()
                .filter_map(|(k, v)| literal(v).map(|l| format!("{k} = {l}")))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
    })
}

fn tree(v: &Value) -> Node {
    match v {
        Value::Object(m) => Node::Table(m.iter().map(|(k, v)| (k.clone(), tree(v))).collect()),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            Node::Tables(items.iter().map(tree).collect())
        }
        other => Node::Literal(literal(other).unwrap_or_default()),
    }
}

/// Every key path of `node` (tables included), depth first: the index of an entry in a
/// table, or of a table in an array of tables, at each level.
fn paths(node: &Node, at: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    match node {
        Node::Table(entries) => {
            for (i, (_, child)) in entries.iter().enumerate() {
                at.push(i);
                out.push(at.clone());
                if let Node::Tables(items) = child {
                    for (j, item) in items.iter().enumerate() {
                        at.push(j);
                        paths(item, at, out);
                        at.pop();
                    }
                } else {
                    paths(child, at, out);
                }
                at.pop();
            }
        }
        Node::Tables(_) | Node::Literal(_) => {}
    }
}

/// The table holding the key that `path` ends with.
fn parent<'a>(root: &'a mut Node, path: &[usize]) -> Option<&'a mut Vec<(String, Node)>> {
    let mut node = root;
    let mut steps = path[..path.len() - 1].iter();
    while let Some(&i) = steps.next() {
        let Node::Table(entries) = node else {
            return None;
        };
        node = &mut entries.get_mut(i)?.1;
        if let Node::Tables(items) = node {
            node = items.get_mut(*steps.next()?)?;
        }
    }
    match node {
        Node::Table(entries) => Some(entries),
        _ => None,
    }
}

fn apply(root: &mut Node, change: &Change) {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return;
    }
    let path = &all[change.pick % all.len()];
    let Some(entries) = parent(root, path) else {
        return;
    };
    let last = path[path.len() - 1];
    match &change.literal {
        Some(l) => entries[last].1 = Node::Literal(l.clone()),
        None => {
            entries.remove(last);
        }
    }
    if change.unknown {
        entries.push(("no_such_key".into(), Node::Literal("1".into())));
    }
}

/// Renders a table tree as a TOML document: scalars first, then `[a.b]` sections and
/// `[[a.b]]` arrays of tables.
fn render(node: &Node, prefix: &str, out: &mut String) {
    let Node::Table(entries) = node else { return };
    for (k, v) in entries {
        if let Node::Literal(l) = v
            && !l.is_empty()
        {
            out.push_str(&format!("{k} = {l}\n"));
        }
    }
    for (k, v) in entries {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Node::Table(_) => {
                out.push_str(&format!("[{name}]\n"));
                render(v, &name, out);
            }
            Node::Tables(items) => {
                for item in items {
                    out.push_str(&format!("[[{name}]]\n"));
                    render(item, &name, out);
                }
            }
            Node::Literal(_) => {}
        }
    }
}

/// An arbitrary TOML value as literal text: the values configurations get wrong.
pub fn toml_literal() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN)
        ]
        .prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        prop_oneof![
            Just("nan"),
            Just("inf"),
            Just("-inf"),
            Just("-0.0"),
            Just("1e308")
        ]
        .prop_map(str::to_string),
        any::<bool>().prop_map(|b| b.to_string()),
        ".{0,24}".prop_map(|s| Value::String(s).to_string()),
        "-?[0-9]{1,22}(ns|us|ms|s|m|h|d|w|y|)".prop_map(|s| Value::String(s).to_string()),
        prop_oneof![
            Just(""),
            Just("0s"),
            Just("18446744073709551615s"),
            Just("redis://u:p@h:1/0"),
            Just("rtsp://u:p@h/x"),
            Just("cuda:99999999999999999999"),
            Just("127.0.0.1:99999"),
            Just("[::1]:0"),
            Just("../../etc/passwd"),
        ]
        .prop_map(|s| Value::String(s.into()).to_string()),
    ];
    scalar.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// Hostile configuration files derived from `defaults` (a node's default configuration as
/// JSON): see the module documentation.
pub fn config_documents(defaults: Value) -> impl Strategy<Value = String> {
    let change = (
        any::<usize>(),
        prop::option::weighted(0.85, toml_literal()),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(pick, literal, unknown)| Change {
            pick,
            literal,
            unknown,
        });
    let base = tree(&defaults);
    let edited = (prop::collection::vec(change, 1..4), any::<usize>(), 0u8..10).prop_map(
        move |(changes, cut, mode)| {
            let mut doc = base.clone();
            for c in &changes {
                apply(&mut doc, c);
            }
            let mut text = String::new();
            render(&doc, "", &mut text);
            if mode == 0 {
                truncate_anywhere(&mut text, cut);
            }
            text
        },
    );
    prop_oneof![
        8 => edited,
        1 => ".{0,200}",
        1 => "([a-z_]{1,10} = .{0,12}\n|\\[[a-z_.]{0,12}\\]\n){0,8}",
    ]
}

/// Cuts `text` at `cut` modulo its length + 1, moved back to a character boundary: a file
/// that ends anywhere, as a crash or a partial copy leaves it.
pub fn truncate_anywhere(text: &mut String, cut: usize) {
    let mut at = cut % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn unchanged_defaults_render_as_toml_that_parses_back() {
        let defaults = serde_json::json!({
            "id": "n1", "n": 3, "f": 1.5, "on": true, "list": [1, 2], "none": null,
            "sec": { "url": "redis://h:1/0", "deep": { "d": "20ms" } },
            "cams": [{ "id": "a", "o": { "x": 1 } }, { "id": "b" }],
        });
        let mut text = String::new();
        render(&tree(&defaults), "", &mut text);
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(back["sec"]["deep"]["d"].as_str(), Some("20ms"));
        assert_eq!(back["n"].as_integer(), Some(3));
        assert!(back.get("none").is_none());
        assert_eq!(back["cams"][0]["o"]["x"].as_integer(), Some(1));
        assert_eq!(back["cams"][1]["id"].as_str(), Some("b"));
        // And the strategy yields documents.
        let mut runner = TestRunner::deterministic();
        let strategy = config_documents(defaults);
        for _ in 0..20 {
            let doc = strategy.new_tree(&mut runner).unwrap().current();
            assert!(doc.len() < 10_000);
        }
    }
}
