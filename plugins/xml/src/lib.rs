//! `xml`: an XML codec (SerDe) on `quick-xml`, with limits so hostile documents are refused
//! rather than exhausting the sandbox.
//!
//! ```yaml
//! plugins:
//!   orders:
//!     path: xml.wasm
//!     config:
//!       record: /orders/order    # decode: each element at this path is one event
//!                                # (default: the whole document is one event)
//!       body: json               # json (default) | xml: the element as JSON, or its XML text
//!       headers:                 # decode: headers from the record, by a small path syntax:
//!         id: "@id"              #   an attribute of the record,
//!         city: address/city     #   a descendant's text, or `address/@kind` its attribute
//!       namespaces: keep         # keep (default: `ns:name` as written) | strip (local names)
//!       max_depth: 64            # deeper documents are refused
//!       allow_dtd: false         # a DOCTYPE is refused unless true
//!       root: orders             # encode: the document's root element
//!       element: order           # encode: each event's element (JSON bodies)
//! ```
//!
//! JSON mapping: an element becomes an object with its attributes as `"@name"` keys, its child
//! elements by name (repeated ones as an array, in order) and its text as `"#text"`; an element
//! with neither attributes nor children becomes its text as a string. Encoding inverts this.
//!
//! Safety: entities are the five XML ones and character references only. A DOCTYPE is refused
//! unless `allow_dtd: true`, and even then the entities it declares are never expanded (a
//! reference to one is an error), so entity bombs ("billion laughs") cannot grow anything.
//! Nesting deeper than `max_depth` is refused before it is built. Malformed XML (mismatched
//! or unclosed tags, bad attributes) fails the payload, the error giving the byte offset; the
//! host dead-letters it.
//!
//! Encode: one document per batch, `<?xml version="1.0" encoding="UTF-8"?>` and `root`
//! around one `element` per event. A JSON-object body is mapped as above; a body that is
//! already an XML element (from `body: xml`) is checked and copied as it is.

use std::{borrow::Cow, collections::BTreeMap, sync::OnceLock};

use quick_xml::{
    Reader,
    escape::escape,
    events::{BytesStart, Event as Xml},
};
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_guest::{Error, Event};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Body {
    #[default]
    Json,
    Xml,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespaces {
    #[default]
    Keep,
    Strip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub body: Body,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default = "default_depth")]
    pub max_depth: usize,
    #[serde(default)]
    pub allow_dtd: bool,
    #[serde(default = "default_root")]
    pub root: String,
    #[serde(default = "default_element")]
    pub element: String,
}

fn default_depth() -> usize {
    64
}
fn default_root() -> String {
    "records".into()
}
fn default_element() -> String {
    "record".into()
}

/// A header's source inside a record: element names, then maybe an attribute.
#[derive(Debug)]
struct HeaderPath {
    name: String,
    elements: Vec<String>,
    attribute: Option<String>,
}

/// The configured codec.
#[derive(Debug)]
pub struct XmlCodec {
    /// Element names from the root to a record; `None`: the root is the record.
    record: Option<Vec<String>>,
    body: Body,
    headers: Vec<HeaderPath>,
    strip: bool,
    max_depth: usize,
    allow_dtd: bool,
    root: String,
    element: String,
}

fn err(message: impl Into<String>) -> Error {
    Error::new(format!("xml: {}", message.into()))
}

/// Whether `s` can be an element or attribute name.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

impl XmlCodec {
    pub fn new(cfg: Config) -> Result<Self, Error> {
        let record = match &cfg.record {
            None => None,
            Some(p) => {
                let parts: Vec<String> = p.trim_start_matches('/').split('/').map(str::to_owned).collect();
                if !p.starts_with('/') || parts.iter().any(|s| !is_name(s)) {
                    return Err(err(format!(
                        "record: {p:?} is not an absolute path of element names (`/orders/order`)"
                    )));
                }
                Some(parts)
            }
        };
        let mut headers = Vec::new();
        for (name, path) in &cfg.headers {
            let mut elements: Vec<String> = path.split('/').map(str::to_owned).collect();
            let attribute = match elements.last() {
                Some(last) if last.starts_with('@') => Some(elements.pop().unwrap_or_default()[1..].to_owned()),
                _ => None,
            };
            if elements.iter().any(|e| !is_name(e)) || attribute.as_deref().is_some_and(|a| !is_name(a)) {
                return Err(err(format!(
                    "headers.{name}: {path:?} is not `child/grandchild`, `@attr` or `child/@attr`"
                )));
            }
            headers.push(HeaderPath { name: name.clone(), elements, attribute });
        }
        if cfg.max_depth == 0 {
            return Err(err("max_depth must be at least 1"));
        }
        for (field, v) in [("root", &cfg.root), ("element", &cfg.element)] {
            if !is_name(v) {
                return Err(err(format!("{field}: {v:?} is not an XML name")));
            }
        }
        Ok(XmlCodec {
            record,
            body: cfg.body,
            headers,
            strip: cfg.namespaces == Namespaces::Strip,
            max_depth: cfg.max_depth,
            allow_dtd: cfg.allow_dtd,
            root: cfg.root,
            element: cfg.element,
        })
    }

    fn name(&self, e: &BytesStart<'_>) -> Result<String, Error> {
        let raw = if self.strip { e.local_name().into_inner().to_vec() } else { e.name().as_ref().to_vec() };
        String::from_utf8(raw).map_err(|_| err("an element name is not UTF-8"))
    }

    /// The element's attributes as `"@name"` keys (namespace declarations dropped when
    /// stripping).
    fn attributes(&self, e: &BytesStart<'_>, into: &mut Map<String, Value>) -> Result<(), Error> {
        for a in e.attributes() {
            let a = a.map_err(|x| err(format!("bad attribute: {x}")))?;
            let key = a.key;
            if self.strip && (key.as_ref() == b"xmlns" || key.as_ref().starts_with(b"xmlns:")) {
                continue;
            }
            let name = if self.strip { key.local_name().into_inner() } else { key.as_ref() };
            let name = std::str::from_utf8(name).map_err(|_| err("an attribute name is not UTF-8"))?;
            let value = a.unescape_value().map_err(|x| err(format!("attribute {name}: {x}")))?;
            into.insert(format!("@{name}"), Value::String(value.into_owned()));
        }
        Ok(())
    }

    pub fn decode(&self, payload: &[u8]) -> Result<Vec<Event>, Error> {
        let mut reader = Reader::from_reader(payload);
        reader.config_mut().trim_text(true);
        let mut path: Vec<String> = Vec::new();
        // Open elements of the record being built: (name, object, text).
        let mut building: Vec<(String, Map<String, Value>, String)> = Vec::new();
        let mut record_start = 0usize;
        let mut out = Vec::new();
        loop {
            let before = reader.buffer_position() as usize;
            let event = reader.read_event().map_err(|e| err(format!("at byte {}: {e}", reader.error_position())))?;
            match event {
                Xml::DocType(_) if !self.allow_dtd => {
                    return Err(err("a DOCTYPE is refused (allow_dtd: false): a DTD can declare entity bombs"));
                }
                Xml::Start(e) => {
                    let starts_record = self.enter(&e, &mut path, &mut building)?;
                    if starts_record {
                        record_start = before;
                    }
                }
                Xml::Empty(e) => {
                    let starts_record = self.enter(&e, &mut path, &mut building)?;
                    if starts_record {
                        record_start = before;
                    }
                    if !building.is_empty() {
                        self.close(&mut building, &mut out, payload, record_start, reader.buffer_position() as usize)?;
                    }
                    path.pop();
                }
                Xml::End(_) => {
                    if !building.is_empty() {
                        self.close(&mut building, &mut out, payload, record_start, reader.buffer_position() as usize)?;
                    }
                    path.pop();
                }
                // Only whitespace (trimmed away) may stand outside the root element.
                Xml::Text(t) if path.is_empty() && !t.iter().all(u8::is_ascii_whitespace) => {
                    return Err(err(format!("at byte {before}: text outside the root element")));
                }
                Xml::CData(_) if path.is_empty() => {
                    return Err(err(format!("at byte {before}: CDATA outside the root element")));
                }
                Xml::Text(t) => {
                    if let Some((_, _, text)) = building.last_mut() {
                        let s = t.unescape().map_err(|e| {
                            err(format!(
                                "at byte {before}: {e} (only the five XML entities and character references are expanded)"
                            ))
                        })?;
                        text.push_str(&s);
                    }
                }
                Xml::CData(c) => {
                    if let Some((_, _, text)) = building.last_mut() {
                        let raw = c.into_inner();
                        text.push_str(std::str::from_utf8(&raw).map_err(|_| err("CDATA is not UTF-8"))?);
                    }
                }
                Xml::Eof => break,
                _ => {}
            }
        }
        if !path.is_empty() {
            return Err(err(format!("the document ends inside <{}>", path.join("><"))));
        }
        Ok(out)
    }

    /// Opens element `e`: onto the path (refusing past `max_depth`) and, inside or at a
    /// record, onto the elements being built. True when it starts a record.
    fn enter(
        &self,
        e: &BytesStart<'_>,
        path: &mut Vec<String>,
        building: &mut Vec<(String, Map<String, Value>, String)>,
    ) -> Result<bool, Error> {
        let name = self.name(e)?;
        path.push(name.clone());
        if path.len() > self.max_depth {
            return Err(err(format!("nested deeper than max_depth ({})", self.max_depth)));
        }
        let starts = building.is_empty() && self.is_record(path);
        if starts || !building.is_empty() {
            let mut obj = Map::new();
            self.attributes(e, &mut obj)?;
            building.push((name, obj, String::new()));
        }
        Ok(starts)
    }

    fn is_record(&self, path: &[String]) -> bool {
        match &self.record {
            None => path.len() == 1,
            Some(p) => p.as_slice() == path,
        }
    }

    /// Ends the innermost element being built: into its parent, or, for the record itself,
    /// into an event.
    fn close(
        &self,
        building: &mut Vec<(String, Map<String, Value>, String)>,
        out: &mut Vec<Event>,
        payload: &[u8],
        start: usize,
        end: usize,
    ) -> Result<(), Error> {
        let Some((name, mut obj, text)) = building.pop() else { return Ok(()) };
        let value = if obj.is_empty() {
            Value::String(text)
        } else {
            if !text.is_empty() {
                obj.insert("#text".into(), Value::String(text));
            }
            Value::Object(obj)
        };
        match building.last_mut() {
            Some((_, parent, _)) => {
                match parent.get_mut(&name) {
                    Some(Value::Array(items)) => items.push(value),
                    Some(existing) => {
                        let first = existing.take();
                        *existing = Value::Array(vec![first, value]);
                    }
                    None => {
                        parent.insert(name, value);
                    }
                }
                Ok(())
            }
            None => {
                let body = match self.body {
                    Body::Json => serde_json::to_vec(&value)?,
                    Body::Xml => payload[start..end].trim_ascii_start().to_vec(),
                };
                let mut event = Event::new(body);
                for h in &self.headers {
                    if let Some(v) = header_value(&value, h) {
                        event.set_header(&h.name, v);
                    }
                }
                out.push(event);
                Ok(())
            }
        }
    }

    pub fn encode(&self, events: &[Event]) -> Result<Vec<u8>, Error> {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!("<{}>", self.root));
        for (i, e) in events.iter().enumerate() {
            let body = e.body();
            if body.trim_ascii_start().starts_with(b"<") {
                // Already an element: check it is one well-formed element, then copy it.
                let mut one = self.one_element_checker().decode(body).map_err(|x| err(format!("event {i}: {x}")))?;
                if one.len() != 1 {
                    return Err(err(format!("event {i}: the body holds {} elements, not one", one.len())));
                }
                // The element's own bytes: no declaration, comment or instruction around it.
                let element = one.remove(0);
                out.push_str(
                    std::str::from_utf8(element.body())
                        .map_err(|_| err(format!("event {i}: the body is not UTF-8")))?,
                );
                continue;
            }
            let value: Value = serde_json::from_slice(body)
                .map_err(|x| err(format!("event {i}: the body is neither an XML element nor JSON: {x}")))?;
            write_element(&mut out, &self.element, &value).map_err(|x| err(format!("event {i}: {x}")))?;
        }
        out.push_str(&format!("</{}>\n", self.root));
        Ok(out.into_bytes())
    }

    /// A codec that reads a whole body as one record (XML kept), under the same limits.
    fn one_element_checker(&self) -> XmlCodec {
        XmlCodec {
            record: None,
            body: Body::Xml,
            headers: Vec::new(),
            strip: false,
            max_depth: self.max_depth,
            allow_dtd: false,
            root: self.root.clone(),
            element: self.element.clone(),
        }
    }
}

/// A header's value in a decoded record.
fn header_value(record: &Value, h: &HeaderPath) -> Option<String> {
    let mut v = record;
    for e in &h.elements {
        v = v.get(e)?;
        if let Value::Array(items) = v {
            v = items.first()?;
        }
    }
    let v = match &h.attribute {
        Some(a) => v.get(format!("@{a}"))?,
        None => match v {
            Value::Object(o) => o.get("#text")?,
            other => other,
        },
    };
    v.as_str().map(str::to_owned)
}

/// `value` as the element `name` (the JSON mapping, inverted).
fn write_element(out: &mut String, name: &str, value: &Value) -> Result<(), String> {
    if !is_name(name) {
        return Err(format!("{name:?} is not an XML name"));
    }
    match value {
        Value::Array(items) => {
            for item in items {
                write_element(out, name, item)?;
            }
            return Ok(());
        }
        Value::Object(obj) => {
            out.push('<');
            out.push_str(name);
            for (k, v) in obj {
                if let Some(attr) = k.strip_prefix('@') {
                    if !is_name(attr) {
                        return Err(format!("{k:?} is not an attribute name"));
                    }
                    out.push_str(&format!(" {attr}=\"{}\"", escape(scalar(v)?)));
                }
            }
            out.push('>');
            for (k, v) in obj {
                if k == "#text" {
                    out.push_str(&escape(scalar(v)?));
                } else if !k.starts_with('@') {
                    write_element(out, k, v)?;
                }
            }
        }
        Value::Null => {
            out.push_str(&format!("<{name}/>"));
            return Ok(());
        }
        scalar_value => {
            out.push_str(&format!("<{name}>"));
            out.push_str(&escape(scalar(scalar_value)?));
        }
    }
    out.push_str(&format!("</{name}>"));
    Ok(())
}

fn scalar(v: &Value) -> Result<Cow<'_, str>, String> {
    match v {
        Value::String(s) => Ok(Cow::Borrowed(s)),
        Value::Null => Ok(Cow::Borrowed("")),
        Value::Bool(_) | Value::Number(_) => Ok(Cow::Owned(v.to_string())),
        _ => Err("an attribute or text value must be a string, number, boolean or null".into()),
    }
}

static CODEC: OnceLock<XmlCodec> = OnceLock::new();

fn codec() -> Result<&'static XmlCodec, Error> {
    CODEC.get().ok_or_else(|| Error::new("xml: not initialised"))
}

/// The plugin: a thin shell over the [`XmlCodec`] built by `init`.
pub struct XmlPlugin;

#[sluice_guest::serde]
impl sluice_guest::Codec for XmlPlugin {
    fn init(config: Value) -> Result<(), Error> {
        let cfg: Config =
            serde_json::from_value(config).map_err(|e| Error::new(format!("xml: invalid config: {e}")))?;
        CODEC.set(XmlCodec::new(cfg)?).map_err(|_| Error::new("xml: init called twice"))
    }

    fn decode(payload: &[u8], _content_type: &str) -> Result<Vec<Event>, Error> {
        codec()?.decode(payload)
    }

    fn encode(events: &[Event]) -> Result<Vec<u8>, Error> {
        codec()?.encode(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::parts;

    fn codec(config: &str) -> XmlCodec {
        XmlCodec::new(serde_json::from_str(config).unwrap()).unwrap()
    }

    const ORDERS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<shop:orders xmlns:shop="urn:shop">
  <shop:order id="1" kind="web">
    <customer>Ann &amp; Bob &#x263A;</customer>
    <item sku="a"/><item sku="b">two</item>
    <note><![CDATA[<raw> & text]]></note>
  </shop:order>
  <shop:order id="2"><customer>Cy</customer></shop:order>
</shop:orders>"#;

    #[test]
    fn decodes_repeated_elements_into_json_with_headers() {
        let c = codec(
            r#"{"record": "/orders/order", "namespaces": "strip", "headers": {"id": "@id", "who": "customer", "sku": "item/@sku"}}"#,
        );
        let events = c.decode(ORDERS.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        let (headers, body) = parts(&events[0]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["@id"], "1");
        assert_eq!(v["customer"], "Ann & Bob \u{263A}");
        assert_eq!(v["item"][0]["@sku"], "a");
        assert_eq!(v["item"][1]["#text"], "two");
        assert_eq!(v["note"], "<raw> & text");
        assert!(headers.contains(&("who".to_owned(), "Ann & Bob \u{263A}".to_owned())), "{headers:?}");
        assert!(headers.contains(&("sku".to_owned(), "a".to_owned())), "{headers:?}");
        assert_eq!(parts(&events[1]).1, r#"{"@id":"2","customer":"Cy"}"#);
    }

    #[test]
    fn keeps_prefixes_and_xml_text_on_request() {
        let c = codec(r#"{"record": "/shop:orders/shop:order", "body": "xml"}"#);
        let events = c.decode(ORDERS.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(parts(&events[1]).1, r#"<shop:order id="2"><customer>Cy</customer></shop:order>"#);
        // The whole document as one event by default.
        let whole = codec("{}").decode(ORDERS.as_bytes()).unwrap();
        assert_eq!(whole.len(), 1);
        let v: Value = serde_json::from_str(&parts(&whole[0]).1).unwrap();
        assert_eq!(v["@xmlns:shop"], "urn:shop");
    }

    #[test]
    fn encode_inverts_decode() {
        let c = codec(r#"{"record": "/orders/order", "namespaces": "strip", "root": "orders", "element": "order"}"#);
        let events = c.decode(ORDERS.as_bytes()).unwrap();
        let doc = c.encode(&events).unwrap();
        let again = c.decode(&doc).unwrap();
        let bodies = |e: &[Event]| e.iter().map(|e| parts(e).1).collect::<Vec<_>>();
        assert_eq!(bodies(&again), bodies(&events));
        let text = String::from_utf8(doc).unwrap();
        assert!(text.contains("Ann &amp; Bob"), "{text}");
        // XML bodies are copied; a body with two elements is refused.
        let x = codec(r#"{"root": "r"}"#);
        let doc = x.encode(&[Event::new("<a x=\"1\">t</a>")]).unwrap();
        assert!(String::from_utf8(doc).unwrap().contains("<r><a x=\"1\">t</a></r>"));
        assert!(x.encode(&[Event::new("<a/><b/>")]).is_err());
        assert!(x.encode(&[Event::new("<a/> &bogus; ]]>")]).is_err(), "stray text after the element");
        let doc = x.encode(&[Event::new("<?xml version=\"1.0\"?><a/>")]).unwrap();
        assert_eq!(String::from_utf8(doc).unwrap().matches("<?xml").count(), 1, "the body's declaration is not copied");
        assert!(x.encode(&[Event::new(r#"{"bad name": 1}"#)]).is_err());
    }

    #[test]
    fn hostile_documents_are_refused_with_a_reason() {
        let c = codec("{}");
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"#;
        let e = c.decode(laughs.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("DOCTYPE is refused"), "{e}");
        // Even with DTDs allowed, declared entities are not expanded.
        let e = codec(r#"{"allow_dtd": true}"#).decode(laughs.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("only the five XML entities"), "{e}");
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        let e = c.decode(deep.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("deeper than max_depth (64)"), "{e}");
        let e = c.decode(b"<a><b></a>").unwrap_err().to_string();
        assert!(e.contains("at byte"), "{e}");
        let e = c.decode(b"<a><b>").unwrap_err().to_string();
        assert!(e.contains("ends inside"), "{e}");
    }

    /// Order `i` as JSON, about 256 bytes (the record `benches/codecs.rs` runs in the sandbox).
    fn order_json(i: u64) -> String {
        format!(
            r##"{{"@id":"{}","customer":"customer-{i:08}","item":[{{"@sku":"sku-{:06}","@qty":"{}","#text":"{}.25"}},{{"@sku":"sku-{:06}","@qty":"1","#text":"9.5"}}],"status":"PAID","zone":"eu-west-{}","channel":"web","campaign":"winter-sale-2026"}}"##,
            10_000_000_000 + i,
            i % 100_000,
            i % 7 + 1,
            i % 500,
            (i * 7) % 100_000,
            i % 3
        )
    }

    /// The native figure beside the sandbox's (`cargo test --release -p xml -- --ignored
    /// --nocapture native_speed`).
    #[test]
    #[ignore]
    fn native_speed() {
        let c = codec(r#"{"record": "/orders/order", "root": "orders", "element": "order"}"#);
        let n = 500_000u64;
        let batches: Vec<Vec<Event>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(1024)
            .map(|b| b.iter().map(|&i| Event::new(order_json(i))).collect())
            .collect();
        let t0 = std::time::Instant::now();
        let docs: Vec<Vec<u8>> = batches.iter().map(|b| c.encode(b).unwrap()).collect();
        let enc = n as f64 / t0.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        let got: usize = docs.iter().map(|d| c.decode(d).unwrap().len()).sum();
        let dec = n as f64 / t0.elapsed().as_secs_f64();
        assert_eq!(got as u64, n);
        println!("xml native: encode {enc:.0} ev/s, decode {dec:.0} ev/s");
    }
}
