//! Code generation: the enum's resource strings, and the per-module struct
//! with one typed method per resource.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemEnum};

use crate::args::Args;
use crate::model::{method_names, Resource};
use crate::template::Segment;

pub fn expand(args: &Args, item: &ItemEnum, resources: &[Resource]) -> TokenStream {
    let enum_impls = enum_impls(args, item, resources);
    let meta_struct = meta_struct(args, item, resources);
    quote! {
        #item
        #enum_impls
        #meta_struct
    }
}

/// `MODULE`, `resource()`, `template()` and `Display` on the enum.
fn enum_impls(args: &Args, item: &ItemEnum, resources: &[Resource]) -> TokenStream {
    let name = &item.ident;
    let module = &args.module.0;
    // Hygienic, so a field called `f` stays the field.
    let f = Ident::new("f", Span::mixed_site());
    let display_arms = resources.iter().map(|r| {
        let variant = &r.variant;
        let bindings = r.fields.iter().map(|(field, _)| field);
        let writes = r.template.segments.iter().map(|segment| match segment {
            Segment::Literal(text) => quote! { #f.write_str(#text)?; },
            Segment::Field(field) => {
                let (ident, ty) = r
                    .fields
                    .iter()
                    .find(|(f, _)| f == field)
                    .expect("the model checked every placeholder");
                // A field type without Display is reported at the field's type.
                quote_spanned! {ty.span()=> ::core::fmt::Display::fmt(#ident, #f)?; }
            }
        });
        quote! {
            Self::#variant { #(#bindings),* } => { #(#writes)* ::core::result::Result::Ok(()) }
        }
    });
    let template_arms = resources.iter().map(|r| {
        let variant = &r.variant;
        let text = r.template.text();
        quote! { Self::#variant { .. } => #text }
    });
    let module_doc = format!("The module these lock resources belong to: `{module}`.");
    quote! {
        impl #name {
            #[doc = #module_doc]
            pub const MODULE: &'static str = #module;

            /// The engine resource: `{module}.{resource}`, e.g. `demo-student.user-42`.
            pub fn resource(&self) -> ::std::string::String {
                ::std::format!("{}.{}", Self::MODULE, self)
            }

            /// The declared template of this resource, e.g. `user-{id}`.
            pub fn template(&self) -> &'static str {
                match self { #(#template_arms,)* }
            }
        }

        /// Writes the resource without its module, e.g. `user-42`.
        impl ::core::fmt::Display for #name {
            fn fmt(&self, #f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self { #(#display_arms)* }
            }
        }
    }
}

/// The per-module struct and its methods.
fn meta_struct(args: &Args, item: &ItemEnum, resources: &[Resource]) -> TokenStream {
    let vis = &item.vis;
    let name = &item.ident;
    let meta = &args.meta;
    let krate = &args.krate;
    let module = &args.module.0;
    // Hygienic names: a field called `f` or `options` cannot clash with them.
    let f = Ident::new("f", Span::mixed_site());
    let options = Ident::new("options", Span::mixed_site());
    let resource = Ident::new("resource", Span::mixed_site());
    let bounds = quote! {
        LockFn: ::core::ops::FnOnce(#krate::LockContext) -> LockFut,
        LockFut: ::core::future::Future<Output = LockOut>,
    };
    let methods = resources.iter().map(|r| {
        let variant = &r.variant;
        let params = r.fields.iter().map(|(ident, ty)| quote! { #ident: #ty });
        let params = quote! { #(#params,)* };
        let names = r.fields.iter().map(|(ident, _)| ident);
        let value = quote! { #name::#variant { #(#names),* } };
        let [lock, lock_with, isolate, isolate_with] = method_names(&r.snake).map(|m| format_ident!("{m}"));
        let template = r.template.text();
        let doc = format!(
            "Runs `f` holding the lock on resource `{template}` of module `{module}` \
             (key `redlock_{{app}}:{{instance}}:{module}.{template}`), extended while `f` runs, \
             released when it ends."
        );
        let doc_with = format!("[`Self::{lock}`] with per-call lock options.");
        let doc_isolate = format!(
            "Like [`Self::{lock}`], with `f` run one data-source level up (resource `{template}` of module `{module}`)."
        );
        let doc_isolate_with = format!("[`Self::{isolate}`] with per-call isolate options (lock options and level).");
        quote! {
            #[doc = #doc]
            pub async fn #lock<LockFn, LockFut, LockOut>(&self, #params #f: LockFn) -> #krate::Result<LockOut>
            where #bounds
            {
                self.lock(#value, #f).await
            }

            #[doc = #doc_with]
            pub async fn #lock_with<LockFn, LockFut, LockOut>(
                &self, #params #options: #krate::LockOptions, #f: LockFn,
            ) -> #krate::Result<LockOut>
            where #bounds
            {
                self.lock_with(#value, #options, #f).await
            }

            #[doc = #doc_isolate]
            pub async fn #isolate<LockFn, LockFut, LockOut>(&self, #params #f: LockFn) -> #krate::Result<LockOut>
            where #bounds
            {
                self.lock_isolate(#value, #f).await
            }

            #[doc = #doc_isolate_with]
            pub async fn #isolate_with<LockFn, LockFut, LockOut>(
                &self, #params #options: #krate::IsolateOptions, #f: LockFn,
            ) -> #krate::Result<LockOut>
            where #bounds
            {
                self.lock_isolate_with(#value, #options, #f).await
            }
        }
    });
    let listing = resources
        .iter()
        .map(|r| format!("- `{}`: [`Self::lock_{}`]", r.template.text(), r.snake))
        .collect::<Vec<_>>()
        .join("\n");
    let struct_doc = format!(
        "The lock resources of module `{module}`, declared by [`{name}`]:\n\n{listing}\n\n\
         Build it with [`{meta}::new`] from the application's engine; it is cheap to clone."
    );
    quote! {
        #[doc = #struct_doc]
        #[derive(Clone, Debug)]
        #vis struct #meta {
            engine: #krate::Redlock,
        }

        impl #meta {
            /// The module's lock resources on `engine` (clones an `Arc`).
            pub fn new(engine: &#krate::Redlock) -> Self {
                Self { engine: engine.clone() }
            }

            /// The engine these locks run on.
            pub fn engine(&self) -> &#krate::Redlock {
                &self.engine
            }

            /// The full Redis key of `resource` under the default instance:
            /// `redlock_{app}:~:{module}.{resource}`.
            pub fn key(&self, #resource: &#name) -> #krate::Result<::std::string::String> {
                self.engine.key(&#resource.resource(), ::core::option::Option::None)
            }

            /// Runs `f` holding `resource`, for code that picks the resource at run time.
            pub async fn lock<LockFn, LockFut, LockOut>(&self, #resource: #name, #f: LockFn) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock(&#resource.resource(), #f).await
            }

            /// [`Self::lock`] with per-call options.
            pub async fn lock_with<LockFn, LockFut, LockOut>(
                &self, #resource: #name, #options: #krate::LockOptions, #f: LockFn,
            ) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock_with(&#resource.resource(), #options, #f).await
            }

            /// Runs `f` holding `resource`, one data-source level up.
            pub async fn lock_isolate<LockFn, LockFut, LockOut>(&self, #resource: #name, #f: LockFn) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock_isolate(&#resource.resource(), #f).await
            }

            /// [`Self::lock_isolate`] with per-call options (lock options and level).
            pub async fn lock_isolate_with<LockFn, LockFut, LockOut>(
                &self, #resource: #name, #options: #krate::IsolateOptions, #f: LockFn,
            ) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock_isolate_with(&#resource.resource(), #options, #f).await
            }

            #(#methods)*
        }
    }
}
