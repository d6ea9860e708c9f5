//! The house's layers only point down: a module may use `crate::` modules of lower
//! layers only (and its own). A new arrow up — or a cycle, which needs one — fails here
//! with the file and the import. Test modules (after `#[cfg(test)]`) and comments are
//! not read: tests may reach anywhere.

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module's layer, from the top (the face) to the leaves; see the
/// README's *Architecture* section.
const LAYERS: &[(&str, u8)] = &[
    ("cli", 70),
    ("demo", 60),
    ("bench", 60),
    ("replay", 60),
    ("simulate", 60),
    ("eval", 55),
    ("agent", 50),
    ("pipeline", 50),
    ("config", 45),
    ("ingest", 42),
    ("runtime", 40),
    ("stage", 30),
    ("policy", 20),
    ("analytics", 20),
    ("event", 10),
    ("telemetry", 10),
    ("time", 0),
    ("hash", 0),
    ("config_error", 0),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::<module>` names a line uses.
fn crate_modules(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &line[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let top = rel
            .split('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let Some(own) = layer(&top) else {
            unknown.insert(format!("{rel}: module {top} has no layer in LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines() {
            let code = line.trim_start();
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for used in crate_modules(code) {
                if used == top {
                    continue;
                }
                match layer(used) {
                    Some(l) if l < own => {}
                    Some(_) => {
                        wrong.insert(format!("{rel} ({top}) uses crate::{used}: {code}"));
                    }
                    None => {
                        unknown.insert(format!("{rel} uses crate::{used}, which has no layer"));
                    }
                }
            }
        }
    }
    assert!(unknown.is_empty(), "{unknown:#?}");
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways (move the item down a layer):\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checker_sees_a_use_and_a_path() {
    assert_eq!(
        crate_modules("use crate::cli::StageKind; let x = crate::time::parse(s);"),
        vec!["cli", "time"]
    );
}
