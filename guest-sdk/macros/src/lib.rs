//! Attribute macros of the Sluice guest SDK: they turn a plain Rust function (or a `Codec`
//! impl) into a component export by generating the `wit-bindgen` bindings for one world of
//! the SDK's WIT package and the glue between those bindings and the SDK's types.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{
    Ident, ItemFn, ItemImpl, Path, Token,
    parse::{Parse, ParseStream},
    parse_macro_input,
    punctuated::Punctuated,
};

/// `batch` and/or `init = path`.
#[derive(Default)]
struct Args {
    batch: bool,
    init: Option<Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args::default();
        let items = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        for item in items {
            match item {
                Arg::Batch => args.batch = true,
                Arg::Init(p) => args.init = Some(p),
            }
        }
        Ok(args)
    }
}

enum Arg {
    Batch,
    Init(Path),
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name: Ident = input.parse()?;
        match name.to_string().as_str() {
            "batch" => Ok(Arg::Batch),
            "init" => {
                input.parse::<Token![=]>()?;
                Ok(Arg::Init(input.parse()?))
            }
            other => Err(syn::Error::new(
                name.span(),
                format!("unknown option `{other}` (expected `batch` or `init = path`)"),
            )),
        }
    }
}

/// The WIT package shipped with the SDK: `wit/` of this crate (a link to the repository's
/// `wit/` in a checkout, its files in the published crate).
fn wit_path() -> String {
    format!("{}/wit", env!("CARGO_MANIFEST_DIR"))
}

/// A path to an item of the user's crate, seen from inside the generated module.
fn from_inside(p: &Path) -> Tokens {
    let first = p.segments.first().map(|s| s.ident.to_string());
    if p.leading_colon.is_some() || matches!(first.as_deref(), Some("crate" | "self" | "super")) {
        quote!(#p)
    } else {
        quote!(super::#p)
    }
}

/// Bindings for `world` plus the host-import glue every plugin shares.
fn bindings(world: &str) -> Tokens {
    let wit = wit_path();
    quote! {
        ::sluice_guest::__private::wit_bindgen::generate!({
            path: #wit,
            world: #world,
            runtime_path: "::sluice_guest::__private::wit_bindgen::rt",
        });

        fn __sluice_log(level: ::sluice_guest::Level, message: &str) {
            use sluice::plugin::host::Level as L;
            let l = match level {
                ::sluice_guest::Level::Trace => L::Trace,
                ::sluice_guest::Level::Debug => L::Debug,
                ::sluice_guest::Level::Info => L::Info,
                ::sluice_guest::Level::Warn => L::Warn,
                ::sluice_guest::Level::Error => L::Error,
            };
            sluice::plugin::host::log(l, message);
        }

        fn __sluice_counter(name: &str, delta: i64) {
            sluice::plugin::host::counter_add(name, delta);
        }

        fn __sluice_info() -> PluginInfo {
            ::sluice_guest::__private::set_host(::sluice_guest::__private::Host {
                log: __sluice_log,
                counter_add: __sluice_counter,
            });
            PluginInfo {
                name: env!("CARGO_PKG_NAME").into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }
        }
    }
}

/// `#[interceptor]` on `fn(Event) -> Result<Verdict, Error>`, or `#[interceptor(batch)]` on
/// `fn(Vec<Event>) -> Result<Vec<Verdict>, Error>`; optional `init = path`.
#[proc_macro_attribute]
pub fn interceptor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as Args);
    let func = parse_macro_input!(item as ItemFn);
    let name = &func.sig.ident;
    let bindings = bindings("sluice:plugin/packed-interceptor");
    let init = args.init.as_ref().map(|p| {
        let p = from_inside(p);
        quote! {
            #p(::sluice_guest::__private::parse_config(&config)?)
                .map_err(::sluice_guest::__private::err_string)?;
        }
    });
    let run = if args.batch {
        quote!(::sluice_guest::packed::run_batch(batch, super::#name))
    } else {
        quote!(::sluice_guest::packed::run_per_event(batch, super::#name))
    };
    quote! {
        #func

        #[doc(hidden)]
        mod __sluice_plugin {
            #bindings

            struct Plugin;

            impl Guest for Plugin {
                fn init(config: String) -> Result<PluginInfo, String> {
                    let info = __sluice_info();
                    #init
                    Ok(info)
                }

                fn intercept_packed(batch: Vec<u8>) -> Result<Vec<u8>, String> {
                    #run.map_err(::sluice_guest::__private::err_string)
                }
            }

            export!(Plugin);
        }
    }
    .into()
}

/// `#[serde]` on an `impl sluice_guest::Codec for T` block.
#[proc_macro_attribute]
pub fn serde(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[serde] takes no options; implement Codec::init for config",
        )
        .to_compile_error()
        .into();
    }
    let block = parse_macro_input!(item as ItemImpl);
    let ty = &block.self_ty;
    let bindings = bindings("sluice:plugin/serde");
    quote! {
        #block

        #[doc(hidden)]
        mod __sluice_plugin {
            #bindings

            type Codec = super::#ty;

            struct Plugin;

            impl Guest for Plugin {
                fn init(config: String) -> Result<PluginInfo, String> {
                    let info = __sluice_info();
                    let value = ::sluice_guest::__private::parse_config(&config)?;
                    <Codec as ::sluice_guest::Codec>::init(value).map_err(::sluice_guest::__private::err_string)?;
                    Ok(info)
                }

                fn decode(payload: Vec<u8>, content_type: String) -> Result<Vec<Event>, String> {
                    let events = <Codec as ::sluice_guest::Codec>::decode(&payload, &content_type)
                        .map_err(::sluice_guest::__private::err_string)?;
                    Ok(events
                        .into_iter()
                        .map(|e| {
                            let (headers, body) = e.into_parts();
                            Event { headers, body }
                        })
                        .collect())
                }

                fn encode(events: Vec<Event>) -> Result<Vec<u8>, String> {
                    let events: Vec<::sluice_guest::Event> = events
                        .into_iter()
                        .map(|e| ::sluice_guest::__private::event(e.headers, e.body))
                        .collect();
                    <Codec as ::sluice_guest::Codec>::encode(&events).map_err(::sluice_guest::__private::err_string)
                }
            }

            export!(Plugin);
        }
    }
    .into()
}

/// `#[selector]` on `fn(&[Event]) -> Result<Vec<Route>, Error>`; optional `init = path`
/// naming `fn(Vec<String>, Config) -> Result<(), Error>` (the channel names, then config).
#[proc_macro_attribute]
pub fn selector(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as Args);
    let func = parse_macro_input!(item as ItemFn);
    let name = &func.sig.ident;
    let bindings = bindings("sluice:plugin/selector");
    let init = args.init.as_ref().map(|p| {
        let p = from_inside(p);
        quote! {
            #p(channels, ::sluice_guest::__private::parse_config(&config)?)
                .map_err(::sluice_guest::__private::err_string)?;
        }
    });
    quote! {
        #func

        #[doc(hidden)]
        mod __sluice_plugin {
            #bindings

            struct Plugin;

            impl Guest for Plugin {
                #[allow(unused_variables)]
                fn init(channels: Vec<String>, config: String) -> Result<PluginInfo, String> {
                    let info = __sluice_info();
                    #init
                    Ok(info)
                }

                fn select(events: Vec<Event>) -> Vec<Route> {
                    let events: Vec<::sluice_guest::Event> = events
                        .into_iter()
                        .map(|e| ::sluice_guest::__private::event(e.headers, e.body))
                        .collect();
                    match super::#name(&events) {
                        Ok(routes) => routes
                            .into_iter()
                            .map(|r| Route { required: r.required, optional: r.optional })
                            .collect(),
                        // The selector world has no error channel: a trap makes the host
                        // isolate the failing event and dead-letter it with this message.
                        Err(e) => panic!("selector failed: {e}"),
                    }
                }
            }

            export!(Plugin);
        }
    }
    .into()
}
