//! The `#[meta_redlock]` attribute macro of redlock, re-exported as
//! `redlock_core::meta_redlock`.
//!
//! A module declares its lock resources once, on an enum:
//!
//! ```
//! use redlock_core::meta_redlock;
//!
//! #[meta_redlock(module = "demo-student")]
//! pub enum StudentLock {
//!     Name,                                 // resource "name"
//!     #[resource("user-{id}")]
//!     User { id: u64 },                     // resource "user-42"
//!     #[resource("class-{year}-{room}")]
//!     Class { year: u16, room: String },
//! }
//!
//! # async fn demo(engine: redlock_core::Redlock) -> redlock_core::Result<()> {
//! let redlock = MetaRedlock::new(&engine);
//! let n = redlock.lock_name(|_ctx| async { 1 }).await?;
//! let r = redlock.lock_user(42, |_ctx| async move { "some result" }).await?;
//! let c = redlock.lock_class(2026, "3b".into(), |_ctx| async { () }).await?;
//! let any = redlock.lock(StudentLock::User { id: 7 }, |_ctx| async { () }).await?;
//! assert_eq!(StudentLock::User { id: 42 }.to_string(), "user-42");
//! assert_eq!(StudentLock::User { id: 42 }.resource(), "demo-student.user-42");
//! # let _ = (n, r, c, any); Ok(()) }
//! ```
//!
//! The macro generates a struct (`MetaRedlock`, or the name given with
//! `meta = Name`) with, for each variant `X`: `lock_x`, `lock_x_with`,
//! `lock_isolate_x` and `lock_isolate_x_with`, taking the variant's fields as
//! typed arguments, then the function to run; and the generic `lock`,
//! `lock_with`, `lock_isolate`, `lock_isolate_with` taking an enum value.
//!
//! - A unit variant without `#[resource]` is named in kebab-case
//!   (`AuthProvider` -> `auth-provider`).
//! - `{field}` placeholders are formatted with `Display`; every field must
//!   appear exactly once, and two placeholders need a separator between them.
//! - Resources may not contain whitespace or control characters; the module
//!   may not contain `.` or `:`.
//! - Two variants may not produce the same resource or template shape.
//!   Templates that merely overlap (`user-{id}` and `user-{id}-orders`) are
//!   allowed: a `String` field containing `-orders` could then make them
//!   collide, so prefer numeric ids or distinct prefixes.
//! - Arguments whose text would break the key (empty, control characters, too
//!   long) give `Error::InvalidResource` at run time.
//!
//! Arguments: `module = "..."` (required), `meta = StructName`,
//! `crate = "path::to::redlock_core"` (when the engine crate is re-exported
//! under another path).

mod args;
mod expand;
mod model;
mod template;

use proc_macro::TokenStream;

/// Declares a module's lock resources and generates its typed lock methods.
/// See the [crate documentation](crate).
#[proc_macro_attribute]
pub fn meta_redlock(args: TokenStream, input: TokenStream) -> TokenStream {
    meta_redlock_impl(args.into(), input.into()).into()
}

fn meta_redlock_impl(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut item = match syn::parse2::<syn::Item>(input.clone()) {
        Ok(syn::Item::Enum(item)) => item,
        Ok(other) => {
            let error = syn::Error::new_spanned(
                item_keyword(&other),
                "#[meta_redlock] goes on an enum whose variants are the module's lock resources",
            );
            return with_error(input, error);
        }
        Err(error) => return with_error(input, error),
    };
    let args = match args::Args::parse(args) {
        Ok(args) => args,
        Err(error) => return with_error(input, error),
    };
    match model::resources(&mut item) {
        Ok(resources) => expand::expand(&args, &item, &resources),
        // The enum is still emitted (without `#[resource]`), so its uses do not cascade into more errors.
        Err(error) => {
            let error = error.to_compile_error();
            quote::quote! { #item #error }
        }
    }
}

/// The tokens to point at when the item is not an enum: its keyword and name.
fn item_keyword(item: &syn::Item) -> proc_macro2::TokenStream {
    use quote::ToTokens;
    match item {
        syn::Item::Struct(s) => {
            let (kw, ident) = (&s.struct_token, &s.ident);
            quote::quote!(#kw #ident)
        }
        syn::Item::Union(u) => {
            let (kw, ident) = (&u.union_token, &u.ident);
            quote::quote!(#kw #ident)
        }
        syn::Item::Fn(f) => f.sig.to_token_stream(),
        other => other.to_token_stream(),
    }
}

fn with_error(input: proc_macro2::TokenStream, error: syn::Error) -> proc_macro2::TokenStream {
    let error = error.to_compile_error();
    quote::quote! { #input #error }
}
