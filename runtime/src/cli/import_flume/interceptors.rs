//! A source's interceptor chain. Flume's built-in interceptors are Sluice's built-ins, under
//! the names of the README's "Interceptors (Flume's set)": `timestamp`, `host`, `static`,
//! `remove_header`, `uuid`, `regex_filter`, `regex_extractor`, `search_replace`. Their regexes
//! are Java's and are checked against Sluice's engine; an interceptor that cannot be carried
//! over is left out of the chain (and reported), the rest of the chain keeps its order.

use super::{
    agent::Component,
    translate::{self, Conv, Cx, NO_TYPE, Verdict, custom_class},
    values,
    yaml::{self, Map, Value},
};

const WHY_IP: &str = "Flume's default (useIP = true) puts the IP address; Sluice's `host` interceptor puts the host name";

/// The interceptors of source `c`, in order.
pub(super) fn translate(c: &mut Component, cx: &mut Cx) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(list) = c.take("interceptors") {
        for name in list.value.split_whitespace() {
            let mut part = c.split(name, &format!("interceptors.{name}."), list.line);
            let what = format!("a Flume `{}` interceptor", part.type_name());
            if let Some(mut m) = translate::component(&mut part, cx, &what, interceptor) {
                m.comment("type", format!("interceptor `{name}`"));
                out.push(Value::Map(m));
            }
        }
    }
    cx.unused_prefix(
        c,
        "interceptors.",
        "its interceptor is not in the source's `interceptors` list: Flume ignores it too",
    );
    out
}

fn interceptor(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    let ty = p.type_name().to_owned();
    let lower = ty.to_ascii_lowercase();
    let builtin = lower
        .strip_prefix("org.apache.flume.interceptor.")
        .and_then(|s| s.strip_suffix("$builder"));
    match (lower.as_str(), builtin) {
        ("timestamp", _) | (_, Some("timestampinterceptor")) => timestamp(p, cx, out),
        ("host", _) | (_, Some("hostinterceptor")) => host(p, cx, out),
        ("static", _) | (_, Some("staticinterceptor")) => fixed(p, cx, out),
        ("remove_header", _) | (_, Some("removeheaderinterceptor")) => remove_header(p, cx, out),
        ("regex_filter", _) | (_, Some("regexfilteringinterceptor")) => regex_filter(p, cx, out),
        ("regex_extractor", _) | (_, Some("regexextractorinterceptor")) => {
            regex_extractor(p, cx, out)
        }
        ("search_replace", _) | (_, Some("searchandreplaceinterceptor")) => {
            search_replace(p, cx, out)
        }
        ("uuid" | "org.apache.flume.sink.solr.morphline.uuidinterceptor$builder", _) => {
            uuid(p, cx, out)
        }
        ("org.apache.flume.sink.solr.morphline.morphlineinterceptor$builder", _) => Err(
            "a morphline interceptor runs Kite Morphlines (Java): an interceptor Wasm plugin can do its work".into(),
        ),
        ("", _) => Err(NO_TYPE.into()),
        _ => Err(format!(
            "{}; an interceptor Wasm plugin can do its work",
            custom_class(&ty, "interceptor")
        )),
    }
}

fn timestamp(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "timestamp");
    cx.field(p, "headerName", out, "header", Conv::Text);
    cx.field(p, "preserveExisting", out, "preserve_existing", Conv::Flag);
    Ok(())
}

fn host(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "host");
    cx.field(p, "hostHeader", out, "header", Conv::Text);
    cx.field(p, "preserveExisting", out, "preserve_existing", Conv::Flag);
    match p.take("useIP") {
        Some(u) if values::java_bool(u.trimmed()) == Some(false) => {}
        Some(u) => cx.skip_prop(&u, WHY_IP),
        None => cx.skip(p.line(), p.full_key("useIP"), format!("(not set) {WHY_IP}")),
    }
    Ok(())
}

/// `static` (a Rust keyword, hence the name).
fn fixed(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "static");
    // Flume's defaults are the words `key` and `value`; Sluice has none.
    let key = match p.take("key") {
        Some(k) => cx.text(&k).ok_or("its `key` has no Sluice form")?,
        None => "key".to_owned(),
    };
    let value = match p.take("value") {
        Some(v) => cx.raw(&v).ok_or("its `value` has no Sluice form")?,
        None => "value".to_owned(),
    };
    out.insert("key", key);
    out.insert("value", value);
    cx.field(p, "preserveExisting", out, "preserve_existing", Conv::Flag);
    Ok(())
}

fn remove_header(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "remove_header");
    let mut names: Vec<String> = Vec::new();
    if let Some(w) = p.take("withName") {
        if let Some(n) = cx.text(&w) {
            names.push(n);
        }
    }
    let separator = p.take("fromListSeparator");
    if let Some(list) = p.take("fromList") {
        let sep = match &separator {
            Some(s) => cx.raw(s),
            None => Some("\\s*,\\s*".to_owned()),
        };
        match (cx.raw(&list), sep.map(|s| regex::Regex::new(&s))) {
            (Some(text), Some(Ok(re))) => names.extend(
                re.split(&text)
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            ),
            (Some(_), Some(Err(_))) => cx.skip_prop(
                &list,
                "its `fromListSeparator` is not a regex Sluice's engine reads",
            ),
            _ => {}
        }
    } else if let Some(s) = separator {
        cx.skip_prop(&s, "only used with `fromList`");
    }
    if !names.is_empty() {
        out.insert("names", yaml::strings(&names));
    }
    if let Some(m) = p.take("matching") {
        if let Some(re) = cx.raw(&m) {
            // Flume matches whole header names; Sluice's regex finds a match anywhere.
            let whole = format!("^(?:{re})$");
            values::check_regex(&whole)?;
            out.insert("matching", whole);
        }
    }
    Ok(())
}

fn uuid(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "uuid");
    cx.field(p, "headerName", out, "header", Conv::Text);
    cx.field(p, "preserveExisting", out, "preserve_existing", Conv::Flag);
    if let Some(prefix) = p.take("prefix") {
        if !prefix.value.is_empty() {
            cx.skip_prop(&prefix, "Sluice's UUIDs have no prefix");
        }
    }
    Ok(())
}

fn regex_filter(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "regex_filter");
    let regex = match p.take("regex") {
        Some(r) => cx.raw(&r).ok_or("its `regex` has no Sluice form")?,
        None => ".*".to_owned(),
    };
    values::check_regex(&regex)?;
    out.insert("regex", regex);
    cx.field(p, "excludeEvents", out, "exclude", Conv::Flag);
    Ok(())
}

fn regex_extractor(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "regex_extractor");
    let regex = match p.take("regex") {
        Some(r) => cx.raw(&r).ok_or("its `regex` has no Sluice form")?,
        None => return Err("it has no `regex`, which it needs".into()),
    };
    values::check_regex(&regex)?;
    let groups = regex::Regex::new(&regex)
        .map(|r| r.captures_len() - 1)
        .unwrap_or(0);
    let list = p
        .take("serializers")
        .ok_or("it has no `serializers`, which it needs")?;
    let mut headers: Vec<String> = Vec::new();
    for s in list.value.split_whitespace() {
        let mut ser = p.split(s, &format!("serializers.{s}."), list.line);
        match ser.type_name() {
            ""
            | "DEFAULT"
            | "default"
            | "org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer" => {}
            "org.apache.flume.interceptor.RegexExtractorInterceptorMillisSerializer" => {
                return Err(format!(
                    "serializer `{s}` turns a date into epoch milliseconds: Sluice's regex_extractor copies groups as they are"
                ));
            }
            other => {
                return Err(format!(
                    "serializer `{s}` is a Java class (`{other}`): Sluice's regex_extractor copies groups as they are"
                ));
            }
        }
        let name = ser
            .take("name")
            .and_then(|n| cx.text(&n))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("serializer `{s}` has no `name`"))?;
        if headers.len() >= groups {
            cx.skip(
                ser.line(),
                ser.full_key("name"),
                format!(
                    "the regex has {groups} capture group(s): Flume never sets this header either"
                ),
            );
        } else {
            headers.push(name);
        }
        cx.leftovers(&mut ser, &format!("serializer `{s}`"));
    }
    if headers.len() < groups {
        return Err(format!(
            "the regex has {groups} capture groups but {} serializer(s): Sluice needs a header per group (make the others non-capturing, `(?:…)`)",
            headers.len()
        ));
    }
    out.insert("regex", regex);
    out.insert("headers", yaml::strings(&headers));
    Ok(())
}

fn search_replace(p: &mut Component, cx: &mut Cx, out: &mut Map) -> Verdict {
    out.insert("type", "search_replace");
    let search = match p.take("searchPattern") {
        Some(s) => cx.raw(&s).ok_or("its `searchPattern` has no Sluice form")?,
        None => String::new(),
    };
    if search.is_empty() {
        return Err("it has no `searchPattern`, which it needs".into());
    }
    values::check_regex(&search)?;
    let replace = match p.take("replaceString") {
        Some(r) => cx.raw(&r).ok_or("its `replaceString` has no Sluice form")?,
        None => String::new(),
    };
    out.insert("search", search);
    // `${1}` is a group to the regex engine but an environment variable to Sluice's file
    // reader, which reads `$${` as a literal `${`.
    let replace = values::java_replacement(&replace)?.replace("${", "$${");
    out.insert("replace", replace);
    if let Some(charset) = p.take("charset") {
        let name = charset.trimmed().to_ascii_uppercase();
        if name != "UTF-8" && name != "UTF8" {
            return Err(format!(
                "its charset is {}: Sluice matches bodies as UTF-8",
                charset.trimmed()
            ));
        }
    }
    Ok(())
}
