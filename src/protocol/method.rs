//! Method ids: a deterministic 32-bit id derived from a `"Service.method"` name.
//!
//! Client and server derive the id independently from the name, so ids never
//! need to be negotiated. The id is FNV-1a over the UTF-8 name with 0 reserved
//! (0 means "no method" on the wire). Collisions are caught at registration.

/// Derives the wire method id of `name` (FNV-1a 32, never 0).
pub const fn method_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// Checks that a method name has the `"Service.method"` shape.
pub fn is_valid_method_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let valid = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    valid(parts.next()) && valid(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(method_id("Echo.echo"), method_id("Echo.echo"));
        assert_ne!(method_id("Echo.echo"), method_id("Echo.ping"));
        // FNV-1a 32 reference value for "a".
        assert_eq!(method_id("a"), 0xe40c_292c);
    }

    #[test]
    fn names_must_be_service_dot_method() {
        assert!(is_valid_method_name("Echo.echo"));
        assert!(is_valid_method_name("kv_v2.get_many"));
        for bad in ["", "Echo", "Echo.", ".echo", "a.b.c", "Echo.ec ho"] {
            assert!(!is_valid_method_name(bad), "{bad:?}");
        }
    }
}
