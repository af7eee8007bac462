//! Conversions of single Flume values into their Sluice spelling: `${…}` references,
//! `%{header}`/strftime templates, millisecond counts into durations, Java booleans, Java
//! regular expressions and replacement strings, TAILDIR file-name regexes into globs, and
//! `tail -F` command lines. Each returns the reason in its `Err` when there is no faithful
//! equivalent, so the caller can report the property with it.

use std::collections::HashMap;

/// Rewrites the `${…}` references of a Flume value into Sluice's `${NAME}` /
/// `${NAME:-default}` (read from the environment when the pipeline is loaded):
///
/// - `${env:NAME}` (Flume ≥ 1.10) becomes `${NAME}`;
/// - `${NAME}` is a property of the file itself when the file defines `NAME` at its top level
///   (Flume ≥ 1.10 looks there), which is written in; else an environment variable (Flume's
///   older `EnvVarResolverProperties`), kept as it is;
/// - `$${` stays a literal `${`, in both;
/// - `${sys:…}` (Java system properties), config-filter references and other lookups have no
///   Sluice equivalent.
pub(super) fn env_refs(value: &str, globals: &HashMap<String, String>) -> Result<String, String> {
    env_refs_at(value, globals, 0)
}

fn env_refs_at(
    value: &str,
    globals: &HashMap<String, String>,
    depth: usize,
) -> Result<String, String> {
    if !value.contains("${") {
        return Ok(value.to_owned());
    }
    if depth > 8 {
        return Err(format!("`{value}`: references nest too deeply"));
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // `$${` is an escaped `${` in Commons Text and in Sluice alike.
            out.push_str(&rest[..i + 2]);
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err(format!("`{value}`: `${{` without its `}}`"));
        };
        let expr = &rest[i + 2..i + end];
        rest = &rest[i + end + 1..];
        if expr.contains("${") {
            return Err(format!(
                "`${{{expr}}}`: nested references have no Sluice equivalent"
            ));
        }
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let (env_only, name) = match name.split_once(':') {
            Some(("env", n)) => (true, n),
            Some(("sys", _)) => {
                return Err(format!(
                    "`${{{expr}}}` reads a Java system property: Sluice reads only environment variables"
                ));
            }
            Some((lookup, _)) => {
                return Err(format!(
                    "`${{{expr}}}`: the `{lookup}:` lookup has no Sluice equivalent (Sluice reads environment variables)"
                ));
            }
            None => (false, name),
        };
        if name.contains('[') {
            return Err(format!(
                "`${{{expr}}}` is a config-filter reference: Sluice reads secrets from environment variables"
            ));
        }
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "`${{{expr}}}`: `{name}` is not a name Sluice can read from the environment (letters, digits, `_`)"
            ));
        }
        match globals.get(name).filter(|_| !env_only) {
            Some(v) => out.push_str(&env_refs_at(v, globals, depth + 1)?),
            None => {
                out.push_str("${");
                out.push_str(name);
                if let Some(d) = default {
                    out.push_str(":-");
                    out.push_str(d);
                }
                out.push('}');
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A literal taken from the Flume file (a header value in a property's key, which Flume never
/// expands) as Sluice will read it back: Sluice expands `${…}` in every string of a pipeline,
/// so each `${` is escaped as `$${`.
pub(super) fn literal(s: &str) -> String {
    s.replace("${", "$${")
}

/// Whether a (converted) value still reads the environment, so it cannot be interpreted now.
pub(super) fn has_ref(value: &str) -> bool {
    value.replace("$${", "").contains("${")
}

/// Escapes that mean the same in Flume's `BucketPath` and in chrono's strftime.
const SAME_TIME_ESCAPES: &str = "aAbBcdDHIjkmMpsSyYz";

/// A Flume template (`%{header}` and the time escapes of its HDFS and Kafka sinks) in Sluice's
/// syntax, which is the same for `%{header}`, `%%` and most strftime escapes. `%t` (epoch
/// milliseconds), `%e` and `%n` (unpadded day and month) and `%[localhost]`, `%[IP]`,
/// `%[FQDN]` have no Sluice equivalent.
pub(super) fn template(flume: &str) -> Result<String, String> {
    let mut out = String::with_capacity(flume.len());
    let mut chars = flume.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('{') => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push_str("%{");
                out.push_str(&name);
                out.push('}');
            }
            Some('%') => out.push_str("%%"),
            Some(e) if SAME_TIME_ESCAPES.contains(e) => {
                out.push('%');
                out.push(e);
            }
            Some('t') => {
                return Err(
                    "`%t` (epoch milliseconds) has no Sluice escape: write `%{timestamp}` to use the `timestamp` header".into(),
                );
            }
            Some(e @ ('e' | 'n')) => {
                return Err(format!(
                    "`%{e}` (an unpadded day or month) has no Sluice escape: `%d` / `%m` pad with a zero"
                ));
            }
            Some('[') => {
                let name: String = chars.by_ref().take_while(|&c| c != ']').collect();
                return Err(format!(
                    "`%[{name}]` has no Sluice escape: a `host` interceptor can put the host name in a header for `%{{host}}`"
                ));
            }
            Some(e) => return Err(format!("`%{e}` is not a Flume escape")),
            None => return Err("a `%` ends the value".into()),
        }
    }
    Ok(out)
}

/// A value used as is by Flume, for a Sluice field that is a template: `%` becomes `%%`.
pub(super) fn literal_template(s: &str) -> String {
    s.replace('%', "%%")
}

/// A Java `Boolean.parseBoolean`: `true` in any case is true, anything else false. `None`
/// when the value comes from the environment and is only known when the pipeline is loaded.
pub(super) fn java_bool(value: &str) -> Option<bool> {
    if has_ref(value) {
        return None;
    }
    Some(value.trim().eq_ignore_ascii_case("true"))
}

/// A duration of `ms` milliseconds in the largest whole unit (`30s`, `5m`, `250ms`).
pub(super) fn duration(ms: u64) -> String {
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Checks a regular expression (written for Java) against Sluice's engine (Rust's `regex`:
/// no look-around, no backreferences, no possessive quantifiers).
pub(super) fn check_regex(re: &str) -> Result<(), String> {
    match regex::Regex::new(re) {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with("error:"))
                .map_or_else(|| text.replace('\n', " "), |l| l.trim().to_owned());
            Err(format!(
                "the Java regex `{re}` does not work with Sluice's regex engine ({reason})"
            ))
        }
    }
}

/// A Java `Matcher.replaceAll` replacement in the syntax of Rust's `regex`: `$1` becomes
/// `${1}` (so a following letter is not read as part of a group name), `\x` a literal `x`, a
/// literal `$` becomes `$$`.
pub(super) fn java_replacement(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(other) => out.push(other),
                None => return Err(format!("the replacement `{s}` ends with a lone `\\`")),
            },
            '$' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut group = String::new();
                    while let Some(&d) = chars.peek() {
                        if !d.is_ascii_digit() {
                            break;
                        }
                        group.push(d);
                        chars.next();
                    }
                    out.push_str("${");
                    out.push_str(&group);
                    out.push('}');
                }
                Some('{') => {
                    chars.next();
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    out.push_str("${");
                    out.push_str(&name);
                    out.push('}');
                }
                _ => {
                    return Err(format!(
                        "the replacement `{s}` has a `$` that is not a group reference (Java refuses it; write `\\$`)"
                    ));
                }
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A TAILDIR file group (`/dir/<file-name regex>`, the regex matching whole names) as a glob
/// for Sluice's `file` source. Only regexes that say what a glob can say are converted:
/// literal characters, `.` (one character), `.*` (any run), `.+`, and character classes.
pub(super) fn taildir_glob(path: &str) -> Result<String, String> {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    if without_refs(dir).contains(['*', '?', '[', ']', '{', '}']) {
        return Err(format!(
            "the directory of `{path}` holds glob characters, which Flume took literally"
        ));
    }
    let glob = regex_to_glob(name).map_err(|why| {
        format!("the file-name regex `{name}` of `{path}` has no glob equivalent ({why})")
    })?;
    Ok(format!("{dir}{glob}"))
}

/// `text` without its `${…}` references.
fn without_refs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i..].find('}') {
            Some(end) => rest = &rest[i + end + 1..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn regex_to_glob(re: &str) -> Result<String, String> {
    let re = re.strip_prefix('^').unwrap_or(re);
    let re = match re.strip_suffix('$') {
        Some(r) if !r.ends_with('\\') => r,
        _ => re,
    };
    let chars: Vec<char> = re.chars().collect();
    let quantified = |i: usize| matches!(chars.get(i), Some('*' | '+' | '?' | '{'));
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '.' => match chars.get(i + 1) {
                Some('*') => {
                    out.push('*');
                    i += 2;
                }
                Some('+') => {
                    out.push_str("?*");
                    i += 2;
                }
                Some('?' | '{') => return Err("an optional or counted `.`".into()),
                _ => {
                    out.push('?');
                    i += 1;
                }
            },
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("a lone `\\` at the end".into());
                };
                if quantified(i + 2) {
                    return Err(format!("a quantifier after `\\{e}`"));
                }
                match e {
                    'd' => out.push_str("[0-9]"),
                    e if e.is_ascii_punctuation() && !matches!(e, '*' | '?' | '[' | ']') => {
                        out.push(e);
                    }
                    e => return Err(format!("the escape `\\{e}`")),
                }
                i += 2;
            }
            '[' => {
                let Some(len) = chars[i..].iter().skip(1).position(|&c| c == ']') else {
                    return Err("a `[` without its `]`".into());
                };
                let class: String = chars[i + 1..i + 1 + len].iter().collect();
                if class.is_empty() || class.contains('\\') || class.contains('[') {
                    return Err(format!("the character class `[{class}]`"));
                }
                if quantified(i + len + 2) {
                    return Err(format!("a quantifier after `[{class}]`"));
                }
                out.push('[');
                match class.strip_prefix('^') {
                    Some(negated) => {
                        out.push('!');
                        out.push_str(negated);
                    }
                    None => out.push_str(&class),
                }
                out.push(']');
                i += len + 2;
            }
            '*' | '+' | '?' | '{' | '}' | '(' | ')' | '|' | '^' | '$' | ']' => {
                return Err(format!("`{c}`"));
            }
            c => {
                if quantified(i + 1) {
                    return Err(format!("a quantifier after `{c}`"));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// What an exec source's `tail` command says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tail {
    pub paths: Vec<String>,
    /// `Some(true)`: from the first line (`-n +1`); `Some(false)`: only new lines (`-n 0`);
    /// `None`: tail's default, the last 10 lines first.
    pub from_start: Option<bool>,
}

/// Reads `tail -F file…` (also `-f`, `--follow[=name|descriptor]`, `--retry`, `-q`, `-s N`,
/// `-n N`/`-n +N`/`--lines=N`). Anything more — pipes, redirections, shell expansions, byte
/// counts, a command that does not follow — is not a plain tail.
pub(super) fn tail_command(command: &str, shell: bool) -> Result<Tail, String> {
    const SHELL: &[char] = &['|', '&', ';', '<', '>', '(', ')', '$', '`', '"', '\'', '\\'];
    if command.contains(SHELL) {
        return Err("the command uses shell features (pipes, quotes, variables…)".into());
    }
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or_default();
    if program != "tail" && !program.ends_with("/tail") {
        return Err(format!("`{program}` is not `tail`"));
    }
    let mut follow = false;
    let mut from_start = None;
    let mut paths = Vec::new();
    let mut lines = |n: &str| -> Result<(), String> {
        from_start = match n.strip_prefix('+') {
            Some("0" | "1") => Some(true),
            Some(_) => return Err(format!("`-n {n}` starts in the middle of the files")),
            None if n == "0" => Some(false),
            None if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => None,
            None => return Err(format!("`-n {n}` is not a line count")),
        };
        Ok(())
    };
    while let Some(w) = words.next() {
        if let Some(n) = w.strip_prefix("--lines=") {
            lines(n)?;
            continue;
        }
        if let Some(n) = w.strip_prefix("-n") {
            let n = if n.is_empty() {
                words.next().unwrap_or_default()
            } else {
                n
            };
            lines(n)?;
            continue;
        }
        match w {
            "-F" | "-f" | "--follow" | "--follow=name" | "--follow=descriptor" => follow = true,
            "--retry" | "-q" | "--quiet" | "--silent" => {}
            "-s" => {
                words.next();
            }
            w if w.starts_with("--sleep-interval=") => {}
            w => match w.strip_prefix('-').filter(|f| !f.is_empty()) {
                // Bundled short flags such as `-Fq`.
                Some(flags) => {
                    for f in flags.chars() {
                        match f {
                            'F' | 'f' => follow = true,
                            'q' => {}
                            _ => return Err(format!("tail's `{w}` has no Sluice equivalent")),
                        }
                    }
                }
                None => {
                    if !shell && w.contains(['*', '?', '[']) {
                        return Err(format!(
                            "`{w}` is a literal file name to tail without a shell, a glob to Sluice"
                        ));
                    }
                    paths.push(w.to_owned());
                }
            },
        }
    }
    if !follow {
        return Err("the command does not follow the files (`-F`): it would end".into());
    }
    if paths.is_empty() {
        return Err("the command names no file".into());
    }
    Ok(Tail { paths, from_start })
}

/// `bind` and `port` as a Sluice listen address: an IP address or `localhost` (Sluice does not
/// resolve other host names to listen on).
pub(super) fn listen(bind: &str, port: &str) -> Result<String, String> {
    let bind = bind.trim();
    let port = port.trim();
    if !has_ref(port) && port.parse::<u16>().is_err() {
        return Err(format!("`{port}` is not a port"));
    }
    if has_ref(bind) || bind == "localhost" || bind.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(format!("{bind}:{port}"));
    }
    if bind.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{bind}]:{port}"));
    }
    Err(format!(
        "`{bind}` is a host name: Sluice listens on an IP address (0.0.0.0 for every interface)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references() {
        let g = HashMap::from([("NC_PORT".to_owned(), "44444".to_owned())]);
        assert_eq!(env_refs("${env:PORT}", &g).unwrap(), "${PORT}");
        assert_eq!(env_refs("x-${env:A:-b}-y", &g).unwrap(), "x-${A:-b}-y");
        assert_eq!(env_refs("${NC_PORT}", &g).unwrap(), "44444");
        assert_eq!(env_refs("${env:NC_PORT}", &g).unwrap(), "${NC_PORT}");
        assert_eq!(env_refs("${HOME}/x", &g).unwrap(), "${HOME}/x");
        assert_eq!(env_refs("$${HOME}", &g).unwrap(), "$${HOME}");
        assert_eq!(env_refs("no refs", &g).unwrap(), "no refs");
        assert!(
            env_refs("${sys:user.home}", &g)
                .unwrap_err()
                .contains("system property")
        );
        assert!(env_refs("${date:yyyy}", &g).unwrap_err().contains("date:"));
        assert!(
            env_refs("${f['db_password']}", &g)
                .unwrap_err()
                .contains("config-filter")
        );
        assert!(env_refs("${a.b}", &g).is_err());
        assert!(env_refs("${oops", &g).is_err());
        assert!(has_ref("${X}ms"));
        assert!(!has_ref("$${X}"));
    }

    #[test]
    fn templates() {
        assert_eq!(
            template("logs-%{app}-%Y%m%d").unwrap(),
            "logs-%{app}-%Y%m%d"
        );
        assert_eq!(template("100%%").unwrap(), "100%%");
        assert!(template("%t").unwrap_err().contains("epoch"));
        assert!(template("%e").is_err());
        assert!(template("%[localhost]").unwrap_err().contains("host"));
        assert_eq!(literal_template("http://x/a%20b"), "http://x/a%%20b");
    }

    #[test]
    fn durations_and_booleans() {
        assert_eq!(duration(30_000), "30s");
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(120_000), "2m");
        assert_eq!(duration(7_200_000), "2h");
        assert_eq!(duration(0), "0s");
        assert_eq!(java_bool("TRUE"), Some(true));
        assert_eq!(java_bool("yes"), Some(false));
        assert_eq!(java_bool("${B}"), None);
    }

    #[test]
    fn regexes_and_replacements() {
        assert!(check_regex("^(\\d+):(\\w+)").is_ok());
        assert!(check_regex("(?<=a)b").unwrap_err().contains("regex"));
        assert_eq!(
            java_replacement("The hungry $2 ate the careless $1").unwrap(),
            "The hungry ${2} ate the careless ${1}"
        );
        assert_eq!(
            java_replacement("$1a \\$5 ${name}").unwrap(),
            "${1}a $$5 ${name}"
        );
        assert!(java_replacement("cost $").is_err());
    }

    #[test]
    fn taildir_file_groups() {
        assert_eq!(
            taildir_glob("/var/log/test1/example.log").unwrap(),
            "/var/log/test1/example?log"
        );
        assert_eq!(
            taildir_glob("/var/log/test1/example\\.log").unwrap(),
            "/var/log/test1/example.log"
        );
        assert_eq!(
            taildir_glob("/var/log/test2/.*log.*").unwrap(),
            "/var/log/test2/*log*"
        );
        assert_eq!(
            taildir_glob("/d/^app-[0-9]\\.log$").unwrap(),
            "/d/app-[0-9].log"
        );
        assert_eq!(taildir_glob("/d/[^.]x").unwrap(), "/d/[!.]x");
        assert!(taildir_glob("/d/(a|b)\\.log").is_err());
        assert!(taildir_glob("/d/a+\\.log").is_err());
        assert!(taildir_glob("/d/\\d+").is_err());
        assert_eq!(
            taildir_glob("${LOG_DIR}/app\\.log").unwrap(),
            "${LOG_DIR}/app.log"
        );
    }

    #[test]
    fn tail_commands() {
        assert_eq!(
            tail_command("tail -F /var/log/secure", false).unwrap(),
            Tail {
                paths: vec!["/var/log/secure".into()],
                from_start: None
            }
        );
        assert_eq!(
            tail_command("/usr/bin/tail -n +0 -F a.log b.log", false).unwrap(),
            Tail {
                paths: vec!["a.log".into(), "b.log".into()],
                from_start: Some(true)
            }
        );
        assert_eq!(
            tail_command("tail --follow=name --retry -n0 x", false)
                .unwrap()
                .from_start,
            Some(false)
        );
        assert_eq!(
            tail_command("tail -F /logs/*.log", true).unwrap().paths,
            ["/logs/*.log"]
        );
        assert!(tail_command("tail -F /logs/*.log", false).is_err());
        assert!(
            tail_command("tail /var/log/x", false)
                .unwrap_err()
                .contains("follow")
        );
        assert!(tail_command("tail -F x | grep y", true).is_err());
        assert!(tail_command("cat /tmp/pipe", false).is_err());
        assert!(tail_command("tail -c +1 -F x", false).is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen("0.0.0.0", "5140").unwrap(), "0.0.0.0:5140");
        assert_eq!(listen("::1", "5140").unwrap(), "[::1]:5140");
        assert_eq!(listen("localhost", "${PORT}").unwrap(), "localhost:${PORT}");
        assert!(listen("myhost", "1").is_err());
        assert!(listen("0.0.0.0", "x").is_err());
    }
}
