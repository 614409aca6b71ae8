//! Stable ids of the domain's objects: a short prefix that says what it names (`sb-`,
//! `ws-`, `snap-`, `img-`) and 16 lowercase hex digits of randomness. The prefix keeps ids
//! and names apart, so "an id or a name" always means one object.

/// Whether `text` is `prefix` followed by exactly 16 lowercase hex digits.
pub(crate) fn is_prefixed_hex(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 16
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Defines an id newtype: `generate`, `parse`, `as_str`, `Display` and the `PREFIX`.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{:016x}", Self::PREFIX, rand::random::<u64>()))
            }

            /// Parses an id; `None` when the text is not shaped like one.
            pub fn parse(text: &str) -> Option<Self> {
                $crate::id::is_prefixed_hex(text, Self::PREFIX).then(|| Self(text.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub(crate) use prefixed_id;
