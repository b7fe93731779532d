//! The README's library example is this package's `main.rs`, word for
//! word, so the snippet people copy is the one CI compiles and runs
//! (scripts/readme-quickstart.sh). Its dependency list must name the
//! features the example needs.

use std::path::PathBuf;

/// The line in README.md right before the copied example's code block.
const MARKER: &str = "<!-- examples/hello/main.rs -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The fenced blocks after `marker`: each one's text without its fences.
fn block_after(readme: &str, marker: &str, nth: usize) -> String {
    let (_, after) = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no line {marker}"));
    let mut blocks = Vec::new();
    let mut lines = after.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("```") {
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push(body.join("\n") + "\n");
            if blocks.len() > nth {
                break;
            }
        }
    }
    blocks
        .into_iter()
        .nth(nth)
        .unwrap_or_else(|| panic!("README.md has no block {nth} after {marker}"))
}

#[test]
fn the_readme_snippet_is_the_example() {
    let readme = read("README.md");
    let example = read("examples/hello/main.rs");
    let shown = block_after(&readme, MARKER, 1);
    assert!(
        shown == example,
        "README.md's library example differs from examples/hello/main.rs; copy the file \
         into the README (the ```rust block after {MARKER})"
    );
}

#[test]
fn the_readme_lists_the_features_the_example_needs() {
    let readme = read("README.md");
    let deps = block_after(&readme, MARKER, 0);
    let table: toml::Table =
        toml::from_str(&deps).expect("the README's [dependencies] block is TOML");
    let deps = table["dependencies"]
        .as_table()
        .expect("a [dependencies] table");
    assert!(deps.contains_key("stompbox"), "{deps:?}");
    let features = |name: &str| -> Vec<String> {
        deps[name]["features"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} lists no features"))
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect()
    };
    // What main.rs uses: derive macros, #[tokio::main] on the
    // multi-threaded runtime, and tokio::signal::ctrl_c.
    assert!(features("serde").contains(&"derive".to_owned()));
    for needed in ["macros", "rt-multi-thread", "signal"] {
        assert!(
            features("tokio").contains(&needed.to_owned()),
            "tokio needs {needed}"
        );
    }
}
