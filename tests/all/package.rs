//! The package metadata crates.io shows: where the source is.

#[test]
fn the_package_names_its_repository() {
    let repository = env!("CARGO_PKG_REPOSITORY");
    assert!(
        repository.starts_with("https://"),
        "Cargo.toml has no repository: {repository:?}"
    );
    assert!(!env!("CARGO_PKG_DESCRIPTION").is_empty());
    assert!(!env!("CARGO_PKG_LICENSE").is_empty());
}
