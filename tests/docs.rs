//! The README is the user's manual: it must open with the two commands and list every
//! exported metric.

#[test]
fn readme_opens_with_the_two_commands_and_lists_every_metric() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let first_block = readme.split("```").nth(1).expect("a code block");
    assert!(first_block.contains("cargo run --release -- demo"));
    assert!(first_block.contains("cargo test"));
    for (name, _) in perfpilot::telemetry::ALL {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README does not list {name}"
        );
    }
}
