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
    let krate = &args.krate;
    let module = &args.module.0;
    // Hygienic, so a field called `f` or `visit` stays the field.
    let f = Ident::new("f", Span::mixed_site());
    let visit = Ident::new("visit", Span::mixed_site());
    // The one place the fields become `&dyn Display`: a field type without
    // Display is reported once, at the field's type.
    let parts_arms = resources.iter().map(|r| {
        let variant = &r.variant;
        let bindings = r.fields.iter().map(|(field, _)| field);
        let text = r.template.text();
        let parts = r.template.segments.iter().map(|segment| match segment {
            Segment::Literal(text) => quote! { #krate::__private::Part::Literal(#text) },
            Segment::Field(field) => {
                let (ident, ty) = r
                    .fields
                    .iter()
                    .find(|(f, _)| f == field)
                    .expect("the model checked every placeholder");
                quote_spanned! {ty.span()=> #krate::__private::Part::Field(#field, #ident) }
            }
        });
        quote! {
            Self::#variant { #(#bindings),* } => #visit(#text, &[#(#parts),*])
        }
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

            /// [`Self::resource`], checked: an error if a placeholder formats as
            /// empty text or the result is no valid resource (control characters, too long).
            pub fn try_resource(&self) -> #krate::Result<::std::string::String> {
                self.with_parts(|template, parts| {
                    #krate::__private::build_resource(Self::MODULE, template, parts)
                })
            }

            #[doc(hidden)]
            fn with_parts<R>(
                &self,
                #visit: impl ::core::ops::FnOnce(&'static str, &[#krate::__private::Part<'_>]) -> R,
            ) -> R {
                match self { #(#parts_arms,)* }
            }

            /// The declared template of this resource, e.g. `user-{id}`.
            pub fn template(&self) -> &'static str {
                self.with_parts(|template, _| template)
            }
        }

        /// Writes the resource without its module, e.g. `user-42`.
        impl ::core::fmt::Display for #name {
            fn fmt(&self, #f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                self.with_parts(|_, parts| #krate::__private::write_parts(#f, parts))
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
    // The checked resource string, or an early return of its error.
    let checked = quote! {
        match #resource.try_resource() {
            ::core::result::Result::Ok(checked) => checked,
            ::core::result::Result::Err(error) => return ::core::result::Result::Err(error),
        }
    };
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
                self.engine.key(&#checked, ::core::option::Option::None)
            }

            /// Runs `f` holding `resource`, for code that picks the resource at run time.
            pub async fn lock<LockFn, LockFut, LockOut>(&self, #resource: #name, #f: LockFn) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock(&#checked, #f).await
            }

            /// [`Self::lock`] with per-call options.
            pub async fn lock_with<LockFn, LockFut, LockOut>(
                &self, #resource: #name, #options: #krate::LockOptions, #f: LockFn,
            ) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock_with(&#checked, #options, #f).await
            }

            /// Runs `f` holding `resource`, one data-source level up.
            pub async fn lock_isolate<LockFn, LockFut, LockOut>(&self, #resource: #name, #f: LockFn) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock_isolate(&#checked, #f).await
            }

            /// [`Self::lock_isolate`] with per-call options (lock options and level).
            pub async fn lock_isolate_with<LockFn, LockFut, LockOut>(
                &self, #resource: #name, #options: #krate::IsolateOptions, #f: LockFn,
            ) -> #krate::Result<LockOut>
            where #bounds
            {
                self.engine.lock_isolate_with(&#checked, #options, #f).await
            }

            #(#methods)*
        }
    }
}
