//! The checked model of a resource enum: one [`Resource`] per variant.
//! Every problem found becomes a spanned error; all are reported at once.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Fields, Ident, ItemEnum, LitStr, Type};

use crate::template::{kebab_case, snake_case, Segment, Template};

/// One lock resource: a variant of the enum.
pub struct Resource {
    pub variant: Ident,
    /// Named fields, in declaration order.
    pub fields: Vec<(Ident, Type)>,
    pub template: Template,
    /// The snake-case name used in method names (`lock_{snake}`).
    pub snake: String,
}

/// Reads the variants of `item`, removing their `#[resource]` attributes.
pub fn resources(item: &mut ItemEnum) -> syn::Result<Vec<Resource>> {
    let mut errors = Errors::default();
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            item.generics.span(),
            "a resource enum cannot be generic: every placeholder needs a concrete type",
        ));
    }
    if item.variants.is_empty() {
        errors.push(syn::Error::new(
            item.ident.span(),
            "no lock resources: add a variant per resource, e.g. `Name` or `#[resource(\"user-{id}\")] User { id: u64 }`",
        ));
    }

    let mut resources = Vec::new();
    for variant in &mut item.variants {
        let template = take_template(&mut variant.attrs, &mut errors);
        if let Some((eq, _)) = &variant.discriminant {
            errors.push(syn::Error::new(
                eq.span(),
                "lock resources take no discriminant; remove `= ...`",
            ));
        }
        let fields: Vec<(Ident, Type)> = match &variant.fields {
            Fields::Unit => Vec::new(),
            Fields::Named(named) => named
                .named
                .iter()
                .filter_map(|f| f.ident.clone().map(|ident| (ident, f.ty.clone())))
                .collect(),
            Fields::Unnamed(unnamed) => {
                errors.push(syn::Error::new(
                    unnamed.span(),
                    "tuple variants are not supported: name the fields, e.g. `User { id: u64 }`, \
                     and use them in #[resource(\"user-{id}\")]",
                ));
                continue;
            }
        };
        let template = match template {
            Some((text, span)) => match Template::parse(&text) {
                Ok(template) => {
                    check_fields(&template, &fields, span, &mut errors);
                    template
                }
                Err(message) => {
                    errors.push(syn::Error::new(span, message));
                    continue;
                }
            },
            None if fields.is_empty() => Template {
                segments: vec![Segment::Literal(kebab_case(&variant.ident.to_string()))],
            },
            None => {
                let example = fields
                    .iter()
                    .map(|(name, _)| format!("{{{name}}}"))
                    .collect::<Vec<_>>()
                    .join("-");
                errors.push(syn::Error::new(
                    variant.ident.span(),
                    format!(
                        "a variant with fields needs a template naming them, e.g. #[resource(\"{}-{example}\")]",
                        kebab_case(&variant.ident.to_string())
                    ),
                ));
                continue;
            }
        };
        resources.push(Resource {
            snake: snake_case(&variant.ident.to_string()),
            variant: variant.ident.clone(),
            fields,
            template,
        });
    }
    check_unique_shapes(&resources, &mut errors);
    check_unique_methods(&resources, &mut errors);
    errors.finish(resources)
}

/// Removes `#[resource("...")]` from `attrs` and returns its text and span.
fn take_template(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Option<(String, Span)> {
    let mut found: Option<(String, Span)> = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        if !attr.path().is_ident("resource") {
            kept.push(attr);
            continue;
        }
        match attr.parse_args::<LitStr>() {
            Ok(text) if found.is_some() => errors.push(syn::Error::new(
                text.span(),
                "a variant takes one #[resource(...)]; remove the others",
            )),
            Ok(text) => found = Some((text.value(), text.span())),
            Err(_) => errors.push(syn::Error::new(
                attr.span(),
                "expected a string: #[resource(\"user-{id}\")]",
            )),
        }
    }
    *attrs = kept;
    found
}

/// Every placeholder names a field, and every field is used exactly once.
fn check_fields(template: &Template, fields: &[(Ident, Type)], span: Span, errors: &mut Errors) {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for name in template.fields() {
        *uses.entry(name).or_default() += 1;
        if !fields.iter().any(|(field, _)| field == name) {
            let known = fields
                .iter()
                .map(|(f, _)| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let known = if known.is_empty() {
                "the variant has no fields".to_owned()
            } else {
                format!("its fields are {known}")
            };
            errors.push(syn::Error::new(
                span,
                format!("placeholder `{{{name}}}` names no field of this variant; {known}"),
            ));
        }
    }
    for (field, _) in fields {
        match uses.get(field.to_string().as_str()) {
            None => errors.push(syn::Error::new(
                field.span(),
                format!(
                    "field `{field}` is not used in the resource template; add `{{{field}}}` to it, \
                     or remove the field (two values differing only in it would share a lock)"
                ),
            )),
            Some(n) if *n > 1 => errors.push(syn::Error::new(
                span,
                format!("placeholder `{{{field}}}` is used {n} times; use each field once"),
            )),
            Some(_) => {}
        }
    }
}

/// No two variants produce the same resource (or, for templates, the same shape).
fn check_unique_shapes(resources: &[Resource], errors: &mut Errors) {
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    for resource in resources {
        let shape = resource.template.shape();
        match seen.get(&shape) {
            Some(first) => errors.push(syn::Error::new(
                resource.variant.span(),
                format!(
                    "`{}` produces the same resources as `{first}` (`{}`); give it a distinct name or template",
                    resource.variant,
                    resource.template.text()
                ),
            )),
            None => {
                seen.insert(shape, &resource.variant);
            }
        }
    }
}

/// The generated method names (`lock_x`, `lock_x_with`, `lock_isolate_x`, ...)
/// collide neither with each other nor with the generic `lock*` methods.
fn check_unique_methods(resources: &[Resource], errors: &mut Errors) {
    let mut taken: HashMap<String, String> =
        ["lock", "lock_with", "lock_isolate", "lock_isolate_with"]
            .into_iter()
            .map(|m| (m.to_owned(), "the generic method".to_owned()))
            .collect();
    for resource in resources {
        for method in method_names(&resource.snake) {
            if let Some(owner) = taken.get(&method) {
                errors.push(syn::Error::new(
                    resource.variant.span(),
                    format!(
                        "`{}` would generate `{method}`, which is already {owner}; rename the variant",
                        resource.variant
                    ),
                ));
                break;
            }
            taken.insert(method, format!("generated for `{}`", resource.variant));
        }
    }
}

/// The four methods generated for a resource whose snake-case name is `snake`.
pub fn method_names(snake: &str) -> [String; 4] {
    [
        format!("lock_{snake}"),
        format!("lock_{snake}_with"),
        format!("lock_isolate_{snake}"),
        format!("lock_isolate_{snake}_with"),
    ]
}

/// Errors gathered across the whole enum, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}
