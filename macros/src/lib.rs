//! `#[ringrpc::service]`: a trait of async methods becomes a typed ringrpc
//! service, with its method constants, a server registration and a client.
//!
//! Input (every method: `&self`, a [`Ctx`], a `Request<Req>`, returning
//! `Result<Resp, E>` where `Req`/`Resp` are rkyv types and `E: Display`):
//!
//! ```ignore
//! #[ringrpc::service]
//! pub trait Kv {
//!     async fn get(&self, ctx: Ctx, req: Request<Key>) -> Result<Value, String>;
//! }
//! ```
//!
//! Output, beside the trait itself:
//! - `pub mod kv { pub const GET: Method<Key, Value> = Method::new("Kv.get"); }`
//!   (the module is the trait's name in snake case; method ids are derived
//!   from `"Trait.method"` at compile time, and two methods whose ids collide
//!   are a compile error);
//! - `KvService<S>`, built with `KvService::new(impl)`, which implements
//!   `ringrpc::Service` (register it with `ServerBuilder::add_service`): each
//!   method runs as an async handler with its [`Ctx`];
//! - `KvClient`, built with `KvClient::new(client)`, with one method per
//!   trait method (`get(&req)`, `get_with(&req, &CallOptions)` and
//!   `get_borrowed(&borrowing_req)`) returning
//!   the zero-copy `Reply<Resp>`.
//!
//! [`Ctx`]: https://docs.rs/ringrpc/latest/ringrpc/struct.Ctx.html

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::{
    parse_macro_input, FnArg, GenericArgument, Ident, ItemTrait, PathArguments, ReturnType,
    TraitItem, Type,
};

/// Turns a trait of async methods into a typed ringrpc service (see the crate docs).
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let msg = "#[ringrpc::service] takes no arguments";
        return syn::Error::new(Span::call_site(), msg)
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemTrait);
    match expand(&item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// One method of the service.
struct MethodSpec {
    name: Ident,
    req: Type,
    resp: Type,
}

fn expand(item: &ItemTrait) -> syn::Result<Tokens> {
    let methods = item
        .items
        .iter()
        .filter_map(|i| match i {
            TraitItem::Fn(f) => Some(method_spec(f)),
            _ => None,
        })
        .collect::<syn::Result<Vec<_>>>()?;
    if methods.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.ident,
            "a service needs at least one method",
        ));
    }
    let trait_name = &item.ident;
    let vis = &item.vis;
    let module = format_ident!("{}", snake(&trait_name.to_string()));
    let service = format_ident!("{}Service", trait_name);
    let client = format_ident!("{}Client", trait_name);
    let consts: Vec<Ident> = methods
        .iter()
        .map(|m| format_ident!("{}", m.name.to_string().to_uppercase()))
        .collect();
    let const_defs = methods.iter().zip(&consts).map(|(m, c)| {
        let (req, resp) = (&m.req, &m.resp);
        let wire = format!("{}.{}", trait_name, m.name);
        let doc = format!("`{wire}`: its wire name, id and types.");
        quote! {
            #[doc = #doc]
            pub const #c: ::ringrpc::Method<#req, #resp> = ::ringrpc::Method::new(#wire);
        }
    });
    let mut collisions = Vec::new();
    for (i, a) in consts.iter().enumerate() {
        for b in &consts[i + 1..] {
            let msg = format!("method ids of {a} and {b} collide: rename one");
            collisions.push(quote! {
                const _: () = ::core::assert!(#module::#a.id() != #module::#b.id(), #msg);
            });
        }
    }
    let registrations = methods.iter().zip(&consts).map(|(m, c)| {
        let name = &m.name;
        quote! {
            let svc = ::std::sync::Arc::clone(&self.0);
            let builder = builder.register_async_with_ctx(#module::#c, move |ctx, req| {
                let svc = ::std::sync::Arc::clone(&svc);
                async move { svc.#name(ctx, req).await }
            })?;
        }
    });
    let client_methods = methods.iter().zip(&consts).map(|(m, c)| {
        let (name, req, resp) = (&m.name, &m.req, &m.resp);
        let with = format_ident!("{}_with", name);
        let borrowed = format_ident!("{}_borrowed", name);
        let doc_borrowed = format!(
            "Calls `{trait_name}.{name}` with a request that borrows its data (any type that archives like the request: `ringrpc::ArchivesAs`)."
        );
        let doc = format!("Calls `{trait_name}.{name}` with the client's default deadline.");
        let doc_with = format!("Calls `{trait_name}.{name}` with per-call options.");
        quote! {
            #[doc = #doc]
            pub async fn #name(&self, req: &#req) -> ::core::result::Result<::ringrpc::Reply<#resp>, ::ringrpc::Error> {
                self.client.call(&#module::#c, req).await
            }

            #[doc = #doc_borrowed]
            pub async fn #borrowed<B: ::ringrpc::ArchivesAs<#req>>(
                &self,
                req: &B,
            ) -> ::core::result::Result<::ringrpc::Reply<#resp>, ::ringrpc::Error> {
                self.client.call_borrowed(&#module::#c, req).await
            }

            #[doc = #doc_with]
            pub async fn #with(
                &self,
                req: &#req,
                opts: &::ringrpc::CallOptions,
            ) -> ::core::result::Result<::ringrpc::Reply<#resp>, ::ringrpc::Error> {
                self.client.call_with(&#module::#c, req, opts).await
            }
        }
    });
    let mod_doc = format!("The methods of the `{trait_name}` service.");
    let service_doc = format!("Serves a `{trait_name}` implementation (see `ringrpc::Service`).");
    let client_doc =
        format!("A typed client of the `{trait_name}` service, over a `ringrpc::Client`.");
    Ok(quote! {
        // Handlers run on one core: their futures need not be `Send`, which
        // is what this lint warns about for public traits.
        #[allow(async_fn_in_trait)]
        #item

        #[doc = #mod_doc]
        #vis mod #module {
            #[allow(unused_imports)]
            use super::*;
            #(#const_defs)*
        }

        #(#collisions)*

        #[doc = #service_doc]
        #vis struct #service<S>(::std::sync::Arc<S>);

        impl<S> #service<S> {
            /// Wraps the implementation.
            pub fn new(service: S) -> Self {
                Self(::std::sync::Arc::new(service))
            }
        }

        impl<S> ::core::fmt::Debug for #service<S> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(::core::stringify!(#service))
            }
        }

        impl<S: #trait_name + Send + Sync + 'static> ::ringrpc::Service for #service<S> {
            fn register(self, builder: ::ringrpc::ServerBuilder) -> ::core::result::Result<::ringrpc::ServerBuilder, ::ringrpc::Error> {
                #(#registrations)*
                Ok(builder)
            }
        }

        #[doc = #client_doc]
        #[derive(Debug, Clone)]
        #vis struct #client {
            client: ::ringrpc::Client,
        }

        impl #client {
            /// A typed client over `client` (which names the endpoint).
            pub fn new(client: ::ringrpc::Client) -> Self {
                Self { client }
            }

            /// The untyped client underneath.
            pub fn inner(&self) -> &::ringrpc::Client {
                &self.client
            }

            #(#client_methods)*
        }
    })
}

/// Checks a method's shape and takes its request and response types out.
fn method_spec(f: &syn::TraitItemFn) -> syn::Result<MethodSpec> {
    let sig = &f.sig;
    let shape = "a service method is `async fn name(&self, ctx: Ctx, req: Request<Req>) -> Result<Resp, E>`";
    if sig.asyncness.is_none() || sig.inputs.len() != 3 {
        return Err(syn::Error::new_spanned(sig, shape));
    }
    if !matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none())
    {
        return Err(syn::Error::new_spanned(sig, shape));
    }
    let Some(FnArg::Typed(req)) = sig.inputs.iter().nth(2) else {
        return Err(syn::Error::new_spanned(sig, shape));
    };
    let req = generic_arg(&req.ty, "Request", 0)
        .ok_or_else(|| syn::Error::new_spanned(&req.ty, shape))?;
    let ReturnType::Type(_, out) = &sig.output else {
        return Err(syn::Error::new_spanned(sig, shape));
    };
    let resp = generic_arg(out, "Result", 0).ok_or_else(|| syn::Error::new_spanned(out, shape))?;
    Ok(MethodSpec {
        name: sig.ident.clone(),
        req,
        resp,
    })
}

/// The `index`th type argument of `ty` if its last path segment is `wrapper`.
fn generic_arg(ty: &Type, wrapper: &str, index: usize) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        })
        .nth(index)
}

/// `KeyValue` → `key_value`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
