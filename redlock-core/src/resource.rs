//! Resource names and the Redis keys they become.
//!
//! A key is `redlock_{app}:{instance}:{resource}`, as in VonaJS, with the
//! braces around the app name kept: they are a Redis Cluster hash tag, so
//! that every key of one app, lock keys and fencing counters alike, lives in
//! one hash slot, and any of a node's operations can travel in one script
//! call. `app` and `instance` may not contain `:` or braces, so the resource
//! is everything after the third colon, the tag is exactly the app name,
//! and no two (app, instance, resource) triples share a key.

use fred::bytes::Bytes;
use fred::types::Key;

use crate::error::{Error, Result};

/// The longest resource name accepted, in bytes.
pub const MAX_RESOURCE_LEN: usize = 512;

/// The longest app or instance name accepted, in bytes.
const MAX_SEGMENT_LEN: usize = 128;

/// Checks one resource name: non-empty, at most [`MAX_RESOURCE_LEN`] bytes, no control characters.
pub fn check_resource(resource: &str) -> Result<()> {
    let reason = if resource.is_empty() {
        "it is empty; name the thing being locked, e.g. \"user-42\"".to_owned()
    } else if resource.len() > MAX_RESOURCE_LEN {
        format!(
            "it is {} bytes long, over the limit of {MAX_RESOURCE_LEN}; lock a shorter name, e.g. an id or a hash",
            resource.len()
        )
    } else if let Some(c) = resource.chars().find(|c| c.is_control()) {
        format!("it contains the control character {c:?}; use printable characters only")
    } else {
        return Ok(());
    };
    Err(Error::InvalidResource {
        resource: shorten(resource),
        reason,
    })
}

/// One piece of a resource built from a template (used by `#[meta_redlock]`).
#[doc(hidden)]
pub enum Part<'a> {
    /// Text from the template.
    Literal(&'static str),
    /// A placeholder's name and its value.
    Field(&'static str, &'a dyn std::fmt::Display),
}

/// Writes a template's parts (used by `#[meta_redlock]`'s `Display`).
#[doc(hidden)]
pub fn write_parts(f: &mut std::fmt::Formatter<'_>, parts: &[Part<'_>]) -> std::fmt::Result {
    for part in parts {
        match part {
            Part::Literal(text) => f.write_str(text)?,
            Part::Field(_, value) => value.fmt(f)?,
        }
    }
    Ok(())
}

/// Builds `{module}.{resource}` from a template's parts, checking that no
/// placeholder formats as empty text and that the result is a valid resource.
#[doc(hidden)]
pub fn build_resource(module: &str, template: &str, parts: &[Part<'_>]) -> Result<String> {
    use std::fmt::Write;
    let mut resource = String::with_capacity(module.len() + 1 + template.len() + 16);
    resource.push_str(module);
    resource.push('.');
    for part in parts {
        match part {
            Part::Literal(text) => resource.push_str(text),
            Part::Field(name, value) => {
                let before = resource.len();
                let _ = write!(resource, "{value}");
                if resource.len() == before {
                    return Err(Error::InvalidResource {
                        resource: shorten(&resource),
                        reason: format!(
                            "placeholder `{{{name}}}` of template `{template}` is empty; pass a non-empty value"
                        ),
                    });
                }
            }
        }
    }
    check_resource(&resource)?;
    Ok(resource)
}

/// Checks an `app` or `instance` key segment.
pub(crate) fn check_segment(option: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        "it is empty".to_owned()
    } else if value.len() > MAX_SEGMENT_LEN {
        format!("it is over {MAX_SEGMENT_LEN} bytes long")
    } else if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(*c, ':' | '{' | '}'))
    {
        format!("it contains {c:?}; use letters, digits, '-', '_' or '.'")
    } else {
        return Ok(());
    };
    Err(Error::InvalidOptions { option, reason })
}

const LOCK_PREFIX: &str = "redlock_";
const FENCE_PREFIX: &str = "redlock-fence_";

/// `redlock_{app}:{instance}:`, the part of the key shared by all resources
/// of an instance; the braces are written out (see the module doc).
pub(crate) fn key_prefix(app: &str, instance: &str) -> String {
    format!("{LOCK_PREFIX}{{{app}}}:{instance}:")
}

/// The keys of the rejoin gate of `app` (see `scripts`): `rejoin`, which
/// says whether a node has waited out the rejoin delay since it lost its
/// keys, and `warming`, which expires when it has. Their instance segment
/// is empty, which no lock key's can be.
pub(crate) fn rejoin_keys(app: &str) -> [String; 2] {
    let prefix = key_prefix(app, "");
    [format!("{prefix}rejoin"), format!("{prefix}rejoin-warming")]
}

/// The prefix of the fencing counters that go with the lock prefix
/// `redlock_{app}:{instance}:`, as two parts: `redlock-fence_` and
/// `{app}:{instance}:`. A counter is `redlock-fence_{app}:{instance}:{resource}`:
/// its own prefix keeps it apart from every lock key, whatever the resource.
fn fence_prefix(prefix: &str) -> [&str; 2] {
    [
        FENCE_PREFIX,
        prefix.strip_prefix(LOCK_PREFIX).unwrap_or(prefix),
    ]
}

/// The keys of one lock: its lock keys, then (when fencing) their counters,
/// in one list so that a single script call covers all of them. Shared, so
/// that the operation queued for each node costs no copy.
#[derive(Clone)]
pub(crate) struct LockKeys {
    all: std::sync::Arc<[Key]>,
    locks: usize,
    /// The length of the lock keys' prefix: what follows it is the resource.
    prefix_len: usize,
}

impl LockKeys {
    /// The keys of `resources` under `prefix`, with fencing counters if
    /// `fencing`. A lock key is `{prefix}{resource}`.
    pub fn new(prefix: &str, resources: &[&str], fencing: bool) -> Result<LockKeys> {
        check_resources(resources)?;
        let counters = if fencing { resources.len() } else { 0 };
        // Each key is its parts, in order; every key shares one buffer holding
        // them all, so a lock's keys take two allocations (buffer and list),
        // and cloning a key for a node's call takes none.
        let lock_parts = resources.iter().map(|r| [prefix, "", *r]);
        let [fence, rest] = fence_prefix(prefix);
        let fence_parts = resources.iter().take(counters).map(|r| [fence, rest, *r]);
        let parts = lock_parts.chain(fence_parts);
        let len = parts.clone().flatten().map(str::len).sum();
        let mut text = Vec::with_capacity(len);
        parts
            .clone()
            .flatten()
            .for_each(|part| text.extend_from_slice(part.as_bytes()));
        let text = Bytes::from_owner(text);
        let mut start = 0;
        let all = parts
            .map(|key| {
                let end = start + key.iter().map(|part| part.len()).sum::<usize>();
                let key = Key::from(text.slice(start..end));
                start = end;
                key
            })
            .collect();
        Ok(LockKeys {
            all,
            locks: resources.len(),
            prefix_len: prefix.len(),
        })
    }

    /// The resources, read back from the lock keys (for errors and display:
    /// a lock keeps no copy of its own).
    pub fn resources(&self) -> Vec<String> {
        self.locks()
            .iter()
            .map(|key| String::from_utf8_lossy(&key.as_bytes()[self.prefix_len..]).into_owned())
            .collect()
    }

    /// Lock keys and counters, for the acquire script.
    pub fn all(&self) -> &[Key] {
        &self.all
    }

    /// How many of [`all`](Self::all) are lock keys.
    pub fn lock_count(&self) -> usize {
        self.locks
    }

    /// The lock keys alone, for extend and release.
    pub fn locks(&self) -> &[Key] {
        &self.all[..self.locks]
    }

    /// The fencing counters (empty without fencing).
    pub fn counters(&self) -> &[Key] {
        &self.all[self.locks..]
    }
}

/// Checks the resources of one lock: at least one, each valid, none twice.
pub(crate) fn check_resources(resources: &[&str]) -> Result<()> {
    if resources.is_empty() {
        return Err(Error::InvalidResource {
            resource: String::new(),
            reason: "no resource given; pass at least one".to_owned(),
        });
    }
    for (i, resource) in resources.iter().enumerate() {
        check_resource(resource)?;
        if resources[..i].contains(resource) {
            return Err(Error::InvalidResource {
                resource: shorten(resource),
                reason: "it is given twice in one lock; pass each resource once".to_owned(),
            });
        }
    }
    Ok(())
}

/// A resource for display in an error: at most 64 characters.
fn shorten(resource: &str) -> String {
    const SHOWN: usize = 64;
    match resource.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &resource[..cut]),
        None => resource.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_vonajs_layout() {
        let prefix = key_prefix("shop", "~");
        let keys = LockKeys::new(&prefix, &["demo-student.user-1", "b"], true).unwrap();
        let names = |keys: &[Key]| -> Vec<String> {
            keys.iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(keys.locks()),
            ["redlock_{shop}:~:demo-student.user-1", "redlock_{shop}:~:b"]
        );
        assert_eq!(
            names(keys.counters()),
            [
                "redlock-fence_{shop}:~:demo-student.user-1",
                "redlock-fence_{shop}:~:b"
            ]
        );
        assert_eq!(keys.resources(), ["demo-student.user-1", "b"]);
        assert!(LockKeys::new(&prefix, &["a"], false)
            .unwrap()
            .counters()
            .is_empty());
    }

    #[test]
    fn bad_resources_are_rejected() {
        let long = "x".repeat(MAX_RESOURCE_LEN + 1);
        for bad in ["", "a\nb", "tab\there", "\u{7f}", long.as_str()] {
            assert!(
                matches!(check_resource(bad), Err(Error::InvalidResource { .. })),
                "{bad:?}"
            );
        }
        assert!(check_resource(&"x".repeat(MAX_RESOURCE_LEN)).is_ok());
        assert!(check_resource("ünïcode {braces}: fine").is_ok());
    }

    #[test]
    fn duplicates_and_empty_lists_are_rejected() {
        assert!(check_resources(&[]).is_err());
        assert!(check_resources(&["a", "b", "a"]).is_err());
    }

    #[test]
    fn segments_reject_colons_and_braces() {
        for bad in ["a:b", "{a}", "a}"] {
            assert!(check_segment("instance", bad).is_err(), "{bad}");
        }
        assert!(check_segment("instance", "tenant-7").is_ok());
    }

    #[test]
    fn long_names_are_shortened_for_display() {
        let err = check_resource(&"é".repeat(1000)).unwrap_err().to_string();
        assert!(err.len() < 400, "{err}");
    }
}
