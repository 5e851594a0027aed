//! The attribute's arguments: `#[meta_redlock(module = "demo-student", meta = StudentRedlock)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{Ident, LitStr, Path};

/// The parsed arguments.
pub struct Args {
    /// The module name, and the span of its literal.
    pub module: (String, Span),
    /// The name of the generated struct (default `MetaRedlock`).
    pub meta: Ident,
    /// The path of the engine crate (default `::redlock_core`).
    pub krate: Path,
}

impl Args {
    pub fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut module: Option<LitStr> = None;
        let mut meta: Option<Ident> = None;
        let mut krate: Option<Path> = None;
        let parser = syn::meta::parser(|arg| {
            if arg.path.is_ident("module") {
                set_once(&mut module, arg.value()?.parse()?, &arg.path)
            } else if arg.path.is_ident("meta") {
                set_once(&mut meta, arg.value()?.parse()?, &arg.path)
            } else if arg.path.is_ident("crate") {
                let path: LitStr = arg.value()?.parse()?;
                set_once(&mut krate, path.parse()?, &arg.path)
            } else {
                Err(arg.error(
                    "unknown argument; #[meta_redlock] takes `module = \"name\"`, \
                     and optionally `meta = StructName` and `crate = \"path::to::redlock_core\"`",
                ))
            }
        });
        parser.parse2(tokens)?;
        let Some(module) = module else {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing `module = \"...\"`: name the module these lock resources belong to, \
                 e.g. #[meta_redlock(module = \"demo-student\")]",
            ));
        };
        check_module(&module)?;
        Ok(Args {
            module: (module.value(), module.span()),
            meta: meta.unwrap_or_else(|| Ident::new("MetaRedlock", Span::call_site())),
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::redlock_core)),
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Path) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new_spanned(key, "this argument is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// The module is the key segment before `.resource`: it may not contain `.`,
/// `:`, whitespace or control characters, so no two (module, resource) pairs share a key.
fn check_module(module: &LitStr) -> syn::Result<()> {
    let name = module.value();
    let problem = if name.is_empty() {
        Some("the module name is empty".to_owned())
    } else {
        name.chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | ':' | '{' | '}'))
            .map(|c| format!("the module name contains {c:?}"))
    };
    match problem {
        Some(problem) => Err(syn::Error::new(
            module.span(),
            format!("{problem}; use letters, digits and `-`, e.g. \"demo-student\""),
        )),
        None => Ok(()),
    }
}
