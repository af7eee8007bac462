//! `sluice plugin build [DIR]`: runs a plugin project's own toolchain and checks what it made.
//!
//! The language is told by the project's files (`Cargo.toml`, `pyproject.toml`,
//! `package.json`, as `sluice plugin new` writes them). The toolchain is installed into the
//! project the first time (a `.venv` from `requirements.txt`, `node_modules` from
//! `package.json`), so the pinned versions are the ones used. The component is copied to
//! `dist/<name>.wasm` and loaded the way the agent loads it, so a build that the agent would
//! refuse fails here.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sluice_wasm::{oci::inspect::inspect, template::Lang};

/// Builds the project in `dir`; prints what was built and returns the component's path.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    // Absolute: the toolchains run in `dir`, where a relative path would not resolve.
    let dir = &std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lang = detect(dir)?;
    let started = std::time::Instant::now();
    let out = match lang {
        Lang::Rust => rust(dir)?,
        Lang::Python => python(dir)?,
        Lang::Js => js(dir)?,
    };
    let bytes = std::fs::read(&out).map_err(|e| format!("cannot read {}: {e}", out.display()))?;
    let info =
        inspect(&bytes).map_err(|e| format!("{} is not a usable plugin: {e}", out.display()))?;
    eprintln!(
        "built {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("  world   {}", info.target());
    eprintln!(
        "  size    {} bytes ({:.1} MiB)",
        info.size,
        info.size as f64 / (1 << 20) as f64
    );
    eprintln!("  digest  {}", info.digest);
    eprintln!("  imports {}", info.imports.join(", "));
    Ok(out)
}

/// The project's language, from the files that describe it.
fn detect(dir: &Path) -> Result<Lang, String> {
    let has = |f: &str| dir.join(f).is_file();
    if has("Cargo.toml") {
        Ok(Lang::Rust)
    } else if has("pyproject.toml") && has("app.py") {
        Ok(Lang::Python)
    } else if has("package.json") {
        Ok(Lang::Js)
    } else {
        Err(format!(
            "{}: not a plugin project (no Cargo.toml, pyproject.toml with app.py, or \
             package.json); `sluice plugin new` makes one",
            dir.display()
        ))
    }
}

/// Runs `cmd`, failing with what it was and how it ended.
fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("{what}: {shown}");
    // The component's path is this command's only output on stdout.
    cmd.stdout(std::io::stderr());
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s}): {shown}")),
        Err(e) => Err(format!("{what}: cannot run {shown}: {e}")),
    }
}

fn dist(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let d = dir.join("dist");
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d.join(format!("{name}.wasm")))
}

/// `cargo build --release --target wasm32-wasip2`; the component is the cdylib artifact.
fn rust(dir: &Path) -> Result<PathBuf, String> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir).args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!(
        "cargo build --release --target wasm32-wasip2 (in {})",
        dir.display()
    );
    let output = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build failed ({}); `rustup target add wasm32-wasip2` if the target is missing",
            output.status
        ));
    }
    // The last `.wasm` cargo reports is the project's own component.
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            let files = m["filenames"].as_array().cloned().unwrap_or_default();
            let name = m["target"]["name"].as_str().unwrap_or_default().to_owned();
            files.into_iter().filter_map(move |f| {
                let f = f.as_str()?.to_owned();
                f.ends_with(".wasm")
                    .then(|| (name.clone(), PathBuf::from(f)))
            })
        })
        .last()
        .ok_or("cargo built no .wasm component (is `crate-type` missing \"cdylib\"?)")?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let name = toml_value(&manifest, "package", "name").unwrap_or(built.0);
    let out = dist(dir, &name)?;
    std::fs::copy(&built.1, &out).map_err(|e| format!("cannot copy to {}: {e}", out.display()))?;
    Ok(out)
}

/// A value `key = "value"` of a TOML table in `pyproject.toml` (the little this needs).
fn toml_value(text: &str, table: &str, key: &str) -> Option<String> {
    let mut in_table = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_table = line == format!("[{table}]");
        } else if in_table
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            let v = v.trim();
            // A quoted string ends at its closing quote (a `# comment` may follow).
            let value = match v.chars().next() {
                Some(q @ ('"' | '\'')) => v[1..].split(q).next().unwrap_or_default(),
                _ => v.split('#').next().unwrap_or_default().trim(),
            };
            return Some(value.to_owned());
        }
    }
    None
}

/// componentize-py from the project's `.venv` (made from `requirements.txt` when missing).
fn python(dir: &Path) -> Result<PathBuf, String> {
    let pyproject = std::fs::read_to_string(dir.join("pyproject.toml"))
        .map_err(|e| format!("cannot read pyproject.toml: {e}"))?;
    let world = toml_value(&pyproject, "tool.sluice", "world")
        .ok_or("pyproject.toml: no `world` under [tool.sluice]")?;
    let name = toml_value(&pyproject, "project", "name")
        .ok_or("pyproject.toml: no `name` under [project]")?;
    let venv = dir.join(".venv");
    let tool = venv.join("bin/componentize-py");
    // Installed from this `requirements.txt`: a copy is kept in the venv to tell a change.
    let requirements = std::fs::read(dir.join("requirements.txt"))
        .map_err(|e| format!("cannot read requirements.txt: {e}"))?;
    let stamp = venv.join(".sluice-requirements");
    if !tool.exists() || std::fs::read(&stamp).ok().as_ref() != Some(&requirements) {
        let mut mk = Command::new("python3");
        mk.current_dir(dir).args(["-m", "venv", ".venv"]);
        run(mk, "making the project's venv")?;
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.current_dir(dir).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "requirements.txt",
        ]);
        run(pip, "installing the pinned toolchain")?;
        std::fs::write(&stamp, &requirements)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    let out = dist(dir, &name)?;
    let mut cmd = Command::new(&tool);
    // --stub-wasi: the component then imports nothing the agent's sandbox refuses; the SDK
    // sends print() to the agent's log instead of WASI stdout.
    cmd.current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "-d",
            "wit",
            "-w",
            &world,
            "componentize",
            "--stub-wasi",
            "app",
            "-o",
        ])
        .arg(&out);
    run(cmd, "componentize-py")?;
    Ok(out)
}

/// `npm run build` (after `npm install` when `node_modules` is missing).
fn js(dir: &Path) -> Result<PathBuf, String> {
    let package: serde_json::Value = std::fs::read_to_string(dir.join("package.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("package.json: {e}"))?;
    let name = package["name"]
        .as_str()
        .ok_or("package.json: no `name`")?
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    // `node_modules/.package-lock.json` is written last by npm: without it an install did not
    // finish (or never ran).
    if !dir.join("node_modules/.package-lock.json").is_file() {
        let mut install = Command::new("npm");
        install
            .current_dir(dir)
            .args(["install", "--no-audit", "--no-fund"]);
        run(install, "installing the pinned toolchain")?;
    }
    let mut cmd = Command::new("npm");
    cmd.current_dir(dir).args(["run", "--silent", "build"]);
    run(cmd, "npm run build")?;
    let out = dir.join("dist").join(format!("{name}.wasm"));
    if !out.exists() {
        return Err(format!(
            "`npm run build` did not write {} (the name comes from package.json)",
            out.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyproject_values_are_read_from_their_table() {
        let text = "[project]\nname = \"my-filter\"  # the plugin\n\n[tool.sluice]\nworld = 'serde'\nn = 3 # three\n";
        assert_eq!(
            toml_value(text, "project", "name").as_deref(),
            Some("my-filter")
        );
        assert_eq!(
            toml_value(text, "tool.sluice", "world").as_deref(),
            Some("serde")
        );
        assert_eq!(toml_value(text, "project", "world"), None);
        assert_eq!(toml_value(text, "tool.sluice", "n").as_deref(), Some("3"));
    }

    #[test]
    fn a_directory_without_a_project_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = build(dir.path()).unwrap_err();
        assert!(e.contains("sluice plugin new"), "{e}");
    }
}
