//! Resource templates: `user-{id}` is the literal `user-` then the field `id`.

use std::fmt::Write;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text copied into the resource as is.
    Literal(String),
    /// A field, formatted with `Display`.
    Field(String),
}

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses and checks a template; the error says what to change.
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.is_empty() {
            return Err("the resource is empty; give it a name such as \"user-{id}\"".to_owned());
        }
        let unbalanced = |at: usize, brace: char| {
            format!(
                "unbalanced `{brace}` at byte {at} of {text:?}; write placeholders as `{{field}}`"
            )
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut at = 0;
        while let Some(c) = text[at..].chars().next() {
            match c {
                '{' => {
                    let rest = &text[at + 1..];
                    let end = rest.find(['{', '}']).ok_or_else(|| unbalanced(at, '{'))?;
                    if rest[end..].starts_with('{') {
                        return Err(unbalanced(at, '{'));
                    }
                    let name = &rest[..end];
                    if name.is_empty() {
                        return Err(format!(
                            "empty placeholder `{{}}` at byte {at} of {text:?}; name the field it stands for, e.g. `{{id}}`"
                        ));
                    }
                    if !is_identifier(name) {
                        return Err(format!(
                            "placeholder `{{{name}}}` is not a field name; use the name of one of the variant's fields"
                        ));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    } else if matches!(segments.last(), Some(Segment::Field(_))) {
                        return Err(format!(
                            "placeholder `{{{name}}}` follows another placeholder directly; put a separator \
                             between them (e.g. `{{a}}-{{b}}`) so that different values cannot give the same resource"
                        ));
                    }
                    segments.push(Segment::Field(name.to_owned()));
                    at += end + 2;
                    continue;
                }
                '}' => return Err(unbalanced(at, '}')),
                c if c.is_whitespace() || c.is_control() => {
                    return Err(format!(
                        "{c:?} at byte {at} of {text:?}: resources may not contain whitespace or control characters; \
                         use `-`, `_` or `.`"
                    ));
                }
                c => literal.push(c),
            }
            at += c.len_utf8();
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// The field names, in order of appearance.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Field(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// The template with every placeholder written `{}`: two templates of one
    /// shape produce the same resources.
    pub fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => shape.push_str(text),
                Segment::Field(_) => shape.push_str("{}"),
            }
        }
        shape
    }

    /// The template as written, e.g. `user-{id}`.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => text.push_str(literal),
                Segment::Field(name) => {
                    let _ = write!(text, "{{{name}}}");
                }
            }
        }
        text
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// `AuthProvider` -> `auth-provider`, `HTTPServer` -> `http-server`.
pub fn kebab_case(name: &str) -> String {
    split_words(name).join("-")
}

/// `AuthProvider` -> `auth_provider`.
pub fn snake_case(name: &str) -> String {
    split_words(name).join("_")
}

fn split_words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let starts_word = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_numeric()
                    || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if starts_word && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_fields() {
        let t = Template::parse("class-{year}-{room}").unwrap();
        assert_eq!(
            t.segments,
            [
                Segment::Literal("class-".into()),
                Segment::Field("year".into()),
                Segment::Literal("-".into()),
                Segment::Field("room".into()),
            ]
        );
        assert_eq!(t.shape(), "class-{}-{}");
        assert_eq!(t.text(), "class-{year}-{room}");
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "", "a{", "a}", "{}", "a{b{c}}", "{a}{b}", "a b", "a\tb", "{1x}", "{{a}}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cases() {
        assert_eq!(kebab_case("Name"), "name");
        assert_eq!(kebab_case("AuthProvider"), "auth-provider");
        assert_eq!(kebab_case("HTTPServer"), "http-server");
        assert_eq!(kebab_case("User2Fa"), "user2-fa");
        assert_eq!(snake_case("AuthProvider"), "auth_provider");
    }
}
