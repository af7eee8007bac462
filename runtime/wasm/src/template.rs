//! `sluice plugin new`: a ready-to-build plugin project in Rust, Python or JavaScript, so a
//! first plugin is one command and one `sluice plugin build` away.
//!
//! The projects are the files under `guest-sdk/templates/<lang>/`, compiled into the binary,
//! with `{{name}}`, `{{ident}}`, `{{kind}}`, `{{world}}` and `{{sdk_dependency}}` filled in.
//! Python and JavaScript projects get their SDK (one file) and the WIT package written beside
//! the plugin, so they build without a checkout and without a registry holding the SDK. A Rust
//! project depends on `sluice-guest` by version, and also by path when the new directory is
//! inside a Sluice checkout (or the binary was built from one on this machine), so a checkout's
//! own SDK is used until the crate is published.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Interceptor,
    Serde,
    Selector,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Interceptor => "interceptor",
            Kind::Serde => "serde",
            Kind::Selector => "selector",
        }
    }

    /// The WIT world a project of this kind targets: interceptors use the packed batch, and
    /// Python selectors the `route-selector` world (see `wit/selector.wit`).
    pub fn world(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Kind::Interceptor, _) => "packed-interceptor",
            (Kind::Serde, _) => "serde",
            (Kind::Selector, Lang::Python) => "route-selector",
            (Kind::Selector, _) => "selector",
        }
    }
}

/// The language of a plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The version of the guest SDKs this binary writes projects for.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One file of a template: where it goes in the project, and its text.
type File = (&'static str, &'static str);

macro_rules! template {
    ($($to:literal <= $from:literal),* $(,)?) => {
        &[$(($to, include_str!(concat!("../../../guest-sdk/templates/", $from)))),*]
    };
}

/// The WIT package, written into Python and JavaScript projects (their toolchains read it).
const WIT: &[File] = &[
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    ("wit/host.wit", include_str!("../../../wit/host.wit")),
    (
        "wit/interceptor.wit",
        include_str!("../../../wit/interceptor.wit"),
    ),
    ("wit/serde.wit", include_str!("../../../wit/serde.wit")),
    (
        "wit/selector.wit",
        include_str!("../../../wit/selector.wit"),
    ),
];

const RUST: &[File] = template![
    "Cargo.toml" <= "rust/Cargo.toml",
    "README.md" <= "rust/README.md",
    ".gitignore" <= "rust/gitignore",
    ".cargo/config.toml" <= "rust/cargo-config.toml",
];

/// The files of one kind's project, beside the language's common ones (its SDK, the WIT).
fn kind_files(lang: Lang, kind: Kind) -> &'static [File] {
    macro_rules! files {
        ($lang:literal, $kind:literal, [$($to:literal <= $from:literal),*]) => {
            &[$((
                $to,
                include_str!(concat!("../../../guest-sdk/templates/", $lang, "/", $kind, "/", $from)),
            )),*]
        };
    }
    // `gitignore` in the repository becomes `.gitignore` in a project (a dotfile in the
    // repository would apply to the repository itself).
    macro_rules! python {
        ($kind:literal) => {
            files!(
                "python",
                $kind,
                [
                    "app.py" <= "app.py",
                    "test_app.py" <= "test_app.py",
                    "pyproject.toml" <= "pyproject.toml",
                    "requirements.txt" <= "requirements.txt",
                    "README.md" <= "README.md",
                    ".gitignore" <= "gitignore"
                ]
            )
        };
    }
    macro_rules! js {
        ($kind:literal) => {
            files!(
                "js",
                $kind,
                [
                    "plugin.js" <= "plugin.js",
                    "plugin.test.js" <= "plugin.test.js",
                    "component.js" <= "component.js",
                    "package.json" <= "package.json",
                    "README.md" <= "README.md",
                    ".gitignore" <= "gitignore"
                ]
            )
        };
    }
    match (lang, kind) {
        (Lang::Rust, Kind::Interceptor) => template!["src/lib.rs" <= "rust/interceptor/src/lib.rs"],
        (Lang::Rust, Kind::Serde) => template!["src/lib.rs" <= "rust/serde/src/lib.rs"],
        (Lang::Rust, Kind::Selector) => template!["src/lib.rs" <= "rust/selector/src/lib.rs"],
        (Lang::Python, Kind::Interceptor) => python!("interceptor"),
        (Lang::Python, Kind::Serde) => python!("serde"),
        (Lang::Python, Kind::Selector) => python!("selector"),
        (Lang::Js, Kind::Interceptor) => js!("interceptor"),
        (Lang::Js, Kind::Serde) => js!("serde"),
        (Lang::Js, Kind::Selector) => js!("selector"),
    }
}

/// Writes the project `dir/name`; returns its path. Refuses to overwrite anything.
pub fn create(dir: &Path, name: &str, kind: Kind, lang: Lang) -> Result<PathBuf, String> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(format!(
            "`{name}`: a plugin name is lower-case letters, digits, `-` and `_`, starting with a letter"
        ));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let abs = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
    let sdk_dependency = match find_sdk(&abs) {
        Some(p) => format!(
            "sluice-guest = {{ version = \"{SDK_VERSION}\", path = \"{}\" }}",
            p.display()
        ),
        None => format!("sluice-guest = \"{SDK_VERSION}\""),
    };
    let vars = [
        ("{{name}}", name.to_owned()),
        ("{{ident}}", name.replace('-', "_")),
        ("{{kind}}", kind.name().to_owned()),
        ("{{world}}", kind.world(lang).to_owned()),
        ("{{sdk_dependency}}", sdk_dependency),
        ("{{sdk_version}}", SDK_VERSION.to_owned()),
    ];
    let common = match lang {
        Lang::Rust => RUST,
        Lang::Python => &[(
            "sluice_guest.py",
            include_str!("../../../guest-sdk/python/sluice_guest.py"),
        )][..],
        Lang::Js => &[(
            "sluice-guest.js",
            include_str!("../../../guest-sdk/js/sluice-guest.js"),
        )][..],
    };
    let wit = if lang == Lang::Rust { &[][..] } else { WIT };
    for (file, text) in common.iter().chain(kind_files(lang, kind)).chain(wit) {
        let path = root.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        // The SDKs and the WIT are copied as they are.
        let text = if file.starts_with("wit/") || file.starts_with("sluice") {
            (*text).to_owned()
        } else {
            fill(text, &vars)
        };
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(root)
}

fn fill(text: &str, vars: &[(&str, String)]) -> String {
    vars.iter()
        .fold(text.to_owned(), |t, (k, v)| t.replace(k, v))
}

/// The guest SDK of the Sluice checkout `project` is in, else of the one this binary was
/// built from, as a path relative to `project` when possible.
fn find_sdk(project: &Path) -> Option<PathBuf> {
    let is_sdk = |d: &Path| {
        std::fs::read_to_string(d.join("guest-sdk/Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"sluice-guest\""))
    };
    if let Some((up, _)) = project
        .ancestors()
        .enumerate()
        .skip(1)
        .find(|(_, d)| is_sdk(d))
    {
        let mut rel = PathBuf::new();
        for _ in 0..up {
            rel.push("..");
        }
        return Some(rel.join("guest-sdk"));
    }
    // This crate is runtime/wasm of the checkout it was built from.
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    is_sdk(built_from).then(|| built_from.join("guest-sdk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 3] = [Kind::Interceptor, Kind::Serde, Kind::Selector];

    #[test]
    fn every_language_and_kind_is_written_with_its_placeholders_filled() {
        let dir = tempfile::tempdir().unwrap();
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for kind in KINDS {
                let name = format!("my-{lang:?}-{}", kind.name()).to_lowercase();
                let root = create(dir.path(), &name, kind, lang).unwrap();
                let mut texts = String::new();
                for entry in walk(&root) {
                    texts.push_str(&std::fs::read_to_string(entry).unwrap());
                }
                assert!(
                    !texts.contains("{{"),
                    "{lang:?} {kind:?}: a placeholder is left"
                );
                assert!(texts.contains(&name), "{lang:?} {kind:?}: the name is used");
                assert!(
                    create(dir.path(), &name, kind, lang).is_err(),
                    "no overwrite"
                );
                if lang != Lang::Rust {
                    assert!(root.join("wit/types.wit").exists());
                }
            }
        }
        assert!(create(dir.path(), "Bad Name", Kind::Serde, Lang::Rust).is_err());
    }

    #[test]
    fn a_rust_project_depends_on_the_sdk_by_version_and_on_a_found_checkout_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = create(dir.path(), "tagger", Kind::Interceptor, Lang::Rust).unwrap();
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        // This test runs from a checkout, so the path is there too.
        assert!(
            cargo.contains(&format!(
                "sluice-guest = {{ version = \"{SDK_VERSION}\", path = \""
            )),
            "{cargo}"
        );
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("#[sluice_guest::interceptor"), "{lib}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // The WIT and the SDKs are copied as they are.
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "wit" {
                    out.extend(walk(&path));
                }
            } else if !name.starts_with("sluice") {
                out.push(path);
            }
        }
        out
    }
}
