//! The man page is part of the interface: it must lint clean and document every subcommand.

use std::process::Command;

#[test]
fn man_page_lints_clean_and_covers_every_subcommand() {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/man/pilot.1");
    let out = Command::new("mandoc")
        .args(["-Tlint", "-Wwarning", page])
        .output()
        .expect("this test needs `mandoc`: run scripts/setup-test-deps.sh (Debian package mandoc)");
    let lint = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && lint.trim().is_empty(), "mandoc -Tlint:\n{lint}");
    let text = std::fs::read_to_string(page).unwrap();
    for sub in ["run", "check-config", "template", "version"] {
        assert!(text.contains(&format!("Cm {sub}")), "man page does not document `pilot {sub}`");
    }
}
