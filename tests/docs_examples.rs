//! The filter configurations shown in the docs compile: every ```json block that holds
//! an `issuer` in README.md and docs/configuration.md goes through the filter's own
//! compiler, so an example cannot drift from what the filter accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use gatehouse::config::compile;

/// The ```json blocks of a Markdown file under the repository root.
fn json_blocks(path: &str) -> Vec<String> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "{path}: a ```json block is never closed");
    blocks
}

#[test]
fn every_filter_configuration_in_the_docs_compiles() {
    let secret = "7f3b9c2e4a1d8f6b0c5e9a2d4f7b1c3e8a6d0f2b5c9e1a4d7f3b6c0e8a2d5f9b";
    let mut compiled = 0;
    for path in ["README.md", "docs/configuration.md"] {
        let configs: Vec<String> = json_blocks(path)
            .into_iter()
            .filter(|b| b.contains("\"issuer\""))
            .collect();
        assert!(!configs.is_empty(), "{path}: no filter configuration found");
        for config in configs {
            if let Err(e) = compile(config.as_bytes(), |name| {
                (name == "SECRET_KEY").then(|| secret.to_owned())
            }) {
                panic!("{path}: a documented configuration is refused: {e}\n{config}");
            }
            compiled += 1;
        }
    }
    assert!(compiled >= 2, "{compiled} configurations compiled");
}
